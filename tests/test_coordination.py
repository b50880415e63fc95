"""Coordination: a lead and comms, follow-ups, the postmortem draft, and reminders that fire once."""

import io
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
from test_cli import oncall

from bot import export
from bot.app import SlackEnv, web_client
from bot.command import Audience, Context, Outcome
from bot.config import Config, ConfigError
from bot.console import Terminal
from bot.dispatch import Invocation
from bot.manifest import manifest
from bot.render import Renderer
from bot.schedule import BOT_USER
from bot.store.sqlite import SqliteStore
from bot.worker import Worker
from commands import registry
from commands.reminders import JOBS, ReminderSettings, found_due
from slack_double import eventually

ANA, BEN = "U0ANA0001", "U0BEN0001"


def as_user(runner: Terminal, user: str, line: str):
    name, _, text = line.lstrip("/").partition(" ")
    return runner.dispatcher.run(Invocation(name, text, user, "console", request_id="t"))


# -- roles -------------------------------------------------------------------------------------


def test_lead_is_claimed_handed_over_and_shown(local, store):
    runner = local()
    card = runner.invoke("/incident open db down --sev 1")
    assert "[Claim lead: /incident lead #1]" in runner.renderer.text(card.template, card.data)
    claimed = as_user(runner, ANA, "/incident lead")
    assert claimed.audience is Audience.THREAD and claimed.card is not None
    assert store.incident(1).lead == ANA
    card_text = runner.renderer.text(claimed.card.template, claimed.card.data)
    assert f"*Lead:* @{ANA}" in card_text and "Claim lead" not in card_text
    handed = as_user(runner, ANA, f"/incident lead <@{BEN}|ben>")
    assert f"lead: @{ANA} → *@{BEN}*" in runner.renderer.text(handed.template, handed.data)
    again = as_user(runner, ANA, f"/incident #1 lead {BEN}")
    assert again.template == "incident_notice" and "already the lead" in runner.renderer.text(again.template, again.data)
    as_user(runner, ANA, "/incident comms")
    roles = [(e.kind, e.user, e.data) for e in store.events(1) if e.kind in ("lead", "comms")]
    assert roles == [("lead", ANA, {"field": "lead", "old": None, "new": ANA}),
                     ("lead", ANA, {"field": "lead", "old": ANA, "new": BEN}),
                     ("comms", ANA, {"field": "comms", "old": None, "new": ANA})]
    listed = runner.invoke("/incident list")
    assert f"lead @{BEN}" in runner.renderer.text(listed.template, listed.data)
    timeline = runner.invoke("/incident timeline #1")
    assert f"*lead*: @{ANA} → @{BEN}" in runner.renderer.text(timeline.template, timeline.data)


def test_status_as_json_has_lead_and_comms_as_slack_ids_or_null(local):
    runner = local()
    runner.invoke("/incident open db down")
    out = io.StringIO()
    assert runner.run("/incident status #1", as_json=True, out=out, err=io.StringIO()) == 0
    assert (json.loads(out.getvalue())["lead"], json.loads(out.getvalue())["comms"]) == (None, None)
    as_user(runner, ANA, f"/incident comms <@{BEN}>")
    as_user(runner, ANA, "/incident lead")
    out = io.StringIO()
    runner.run("/incident status #1", as_json=True, out=out, err=io.StringIO())
    status = json.loads(out.getvalue())
    assert (status["lead"], status["comms"]) == (ANA, BEN)
    assert f"Lead @{ANA} · comms @{BEN}" in runner.renderer.text("incident_status", runner.invoke("/incident status").data)


@pytest.mark.parametrize("text, said", [
    ("/incident lead @ana", "'@ana' is not a Slack user"),
    ("/incident lead <@U0ANA0001> <@U0BEN0001>", "lead takes one person"),
    ("/incident comms <@lower>", "is not a Slack user"),
])
def test_a_role_needs_one_real_slack_user(local, text, said):
    runner = local()
    runner.invoke("/incident open db down")
    reply = runner.invoke(text)
    assert reply.outcome is Outcome.USAGE and said in reply.data["message"]


def test_mentions_and_links_slack_escapes_in_notes_read_as_typed(local, store):
    runner = local()
    runner.invoke("/incident open db down")
    runner.invoke(f"/incident update asked <@{ANA}|ana> in <#C0OPS0001|ops>, see <https://x.example/a|x> &amp; more")
    assert store.events(1)[-1].text == "asked @ana in #ops, see https://x.example/a & more"
    escaping = {entry["command"]: entry["should_escape"]
                for entry in manifest(registry(), None)["features"]["slash_commands"]}
    assert escaping["/incident"] and not escaping["/logs"]      # a /logs --grep is taken as typed


def test_the_lead_ask_for_incidents_nobody_opened_by_hand_has_a_claim_button(local, store):
    from commands.incident import lead_ask

    runner = local()
    runner.invoke("/incident open checkout 500s")
    ask = lead_ask(store.incident(1))
    assert ask.audience is Audience.THREAD and ask.incident_id == 1
    assert "[Claim lead: /incident lead #1]" in runner.renderer.text(ask.template, ask.data)


# -- follow-ups and the export -------------------------------------------------------------------


def test_followups_are_added_done_listed_and_exported(local, store):
    runner = local()
    runner.invoke("/incident open db down")
    added = runner.invoke(f"/incident followup alert on pool size <@{BEN}|ben>")
    assert added.audience is Audience.THREAD
    assert "added follow-up 1 to #1: alert on pool size (owner @U0BEN0001)" in runner.renderer.text(
        added.template, added.data)
    runner.invoke("/incident resolve pool back to 50")
    runner.invoke("/incident followup raise the pool's max")     # after the resolve: the channel's last resolved
    done = runner.invoke("/incident followup done 2")
    assert "marked follow-up 2 of #1 done" in runner.renderer.text(done.template, done.data)
    missing = runner.invoke("/incident followup done 7")
    assert missing.outcome is Outcome.FAILED and "numbered 1 to 2" in missing.data["message"]
    assert [(f.number, f.text, f.owner, f.done) for f in store.followups(1)] == [
        (1, "alert on pool size", BEN, False), (2, "raise the pool's max", None, True)]
    status = runner.renderer.text("incident_status", runner.invoke("/incident status #1").data)
    assert "☐ 1. alert on pool size (@U0BEN0001)" in status and "☑️ 2. raise the pool's max" in status
    out = io.StringIO()
    export.write(store, None, "json", out)
    (incident,) = json.loads(out.getvalue())
    assert incident["followups"] == [{"text": "alert on pool size", "owner": BEN, "done": False},
                                     {"text": "raise the pool's max", "owner": None, "done": True}]
    assert [(e["kind"], e["text"]) for e in incident["timeline"]][:2] == [("opened", "db down"),
                                                                          ("followup", "alert on pool size")]
    assert incident["timeline"][0]["when"] == "2026-11-24T14:00:00Z" and incident["timeline"][0]["who"] == runner.user
    csv_out = io.StringIO()
    export.write(store, None, "csv", csv_out)
    header, row = csv_out.getvalue().strip().split("\r\n")
    assert header.endswith(",lead,comms,postmortem_at") and "timeline" not in header


def test_followup_text_is_needed_bounded_and_redacted(local, store):
    runner = local()
    runner.invoke("/incident open db down")
    runner.invoke("/incident followup replace the UPS")           # a word, not a user id
    assert (store.followups(1)[0].text, store.followups(1)[0].owner) == ("replace the UPS", None)
    assert runner.invoke(f"/incident followup <@{ANA}>").outcome is Outcome.USAGE
    assert runner.invoke("/incident followup " + "x" * 501).outcome is Outcome.USAGE
    runner.invoke("/incident followup rotate password=hunter2hunter2")
    assert "hunter2" not in store.followups(1)[1].text and "[redacted" in store.followups(1)[1].text


# -- the postmortem ------------------------------------------------------------------------------


def test_the_postmortem_draft_tells_what_happened_and_is_uploaded(local, store, clock):
    runner = local()
    runner.invoke("/incident open checkout returns 500 --sev 2 --service api --started 10m ago")
    as_user(runner, ANA, "/incident lead")
    clock.advance(minutes=3)
    runner.invoke("/incident ack")
    store.add_event(1, at=clock(), user=ANA, kind="deploys", text="3 deploys of api; suspects: a1b2c3d",
                    data={"suspects": ["a1b2c3d4e5f6" + "0" * 28], "deploys": []})
    store.add_event(1, at=clock(), user=ANA, kind="probe", text="/probe api: 1 down",
                    data={"results": [{"service": "api", "target": "db", "status": "down"}]})
    store.add_event(1, at=clock(), user=ANA, kind="logs", text="/logs api: PoolTimeout ×40", data={"events": [
        {"excerpt": "PoolTimeout password=s3cretpassw0rd", "count": 40, "cause": {"id": "db.pool", "title": "pool exhausted"},
         "first_seen": "2026-11-24T13:52:00Z", "last_seen": "2026-11-24T14:03:00Z"},
        {"excerpt": "KeyError: 'cart' api_key=Zq8v3Lr5Tw1Yp7Ns", "count": 2, "cause": None}]})
    clock.advance(minutes=20)
    runner.invoke("/incident update rolled back a1b2c3d")
    store.add_event(1, at=clock(), user=ANA, kind="probe", text="/probe api: 1 ok",
                    data={"results": [{"service": "api", "target": "db", "status": "ok"}]})
    runner.invoke("/incident followup alert on pool size")
    runner.invoke("/incident resolve pool size back to 50")
    reply = runner.invoke("/incident postmortem")
    assert reply.audience is Audience.THREAD and reply.outcome is Outcome.OK
    (upload,) = reply.files
    assert upload.filename == "postmortem-1.md"
    text = runner.renderer.file(upload).decode()
    for expected in ("# Postmortem: #1 checkout returns 500", "| Severity | SEV2 |", "| Service | api |",
                     f"| Lead | @{ANA} |", "From 13:50 UTC to 14:23 UTC: 33 m 00 s", "| acknowledged | 14:03 UTC | 13 m 00 s |",
                     "update: rolled back a1b2c3d", "Suspect deploys: `a1b2c3d4e5`",
                     "Probe api/db: down at 14:03 UTC, up again at 14:23 UTC", "Log errors: pool exhausted ×40 (from 13:52 UTC to 14:03 UTC)",
                     "×2", "Resolution: pool size back to 50", "- [ ] 1. alert on pool size",
                     "## What went well\n\n✍️ _To be written by people._", "## What went wrong"):
        assert expected in text, expected
    assert "/logs api" not in text      # the bot's entries are summarised, not repeated
    assert "Zq8v3Lr5Tw1Yp7Ns" not in text and "KeyError: 'cart' api_key=[redacted:" in text


def test_postmortem_done_is_recorded_once(local, store, clock):
    runner = local()
    runner.invoke("/incident open db down")
    runner.invoke("/incident resolve")
    done = runner.invoke("/incident postmortem done <https://wiki.example/pm/1|pm>")
    assert done.template == "incident_event" and store.incident(1).postmortem_at == clock()
    assert store.events(1)[-1].kind == "postmortem" and store.events(1)[-1].text == "https://wiki.example/pm/1"
    assert runner.invoke("/incident postmortem #1 done").data["why"] == "postmortem_written"
    assert runner.invoke("/incident postmortem #1 later").outcome is Outcome.USAGE


def test_oncall_bot_postmortem_prints_the_draft(tmp_path):
    assert oncall(tmp_path, "run", "/incident open db down --sev 1").returncode == 0
    printed = oncall(tmp_path, "postmortem", "1")
    assert printed.returncode == 0 and printed.stdout.startswith("# Postmortem: #1 db down\n")
    missing = oncall(tmp_path, "postmortem", "9")
    assert missing.returncode == 1 and "There is no incident #9" in missing.stderr and missing.stdout == ""
    assert oncall(tmp_path, "postmortem", "x").returncode == 2


# -- reminders: settings -----------------------------------------------------------------------


def test_reminder_settings_take_a_duration_a_table_by_severity_or_off(make_config):
    config = make_config('[reminders]\nunacknowledged = "1m"\nno_update = { sev1 = "15m", sev3 = "off" }\n'
                         'open_longer = "off"\nmention = "S0ONCALL1"\n')
    settings = ReminderSettings.of(config)
    assert [settings.after("unacknowledged", sev) for sev in (1, 4)] == [timedelta(minutes=1)] * 2
    assert [settings.after("no_update", sev) for sev in (1, 2, 3)] == [timedelta(minutes=15), None, None]
    assert settings.after("open_longer", 1) is None and settings.mention == "S0ONCALL1"
    assert settings.after("postmortem_due", 1) == timedelta(days=2)      # the default
    defaults = ReminderSettings.of(Config())
    assert defaults.after("no_update", 2) == timedelta(minutes=30) and defaults.after("no_update", 3) is None


@pytest.mark.parametrize("text, said", [
    ('unacknowledged = "30s"', "at least 1m"),
    ('no_update = { sev5 = "1m" }', "reminders.no_update.sev5: unknown key"),
    ('no_update = 30', "must be a string"),
    ('mention = "U0ANA0001"', "not a Slack user group ID"),
    ('snooze = "1h"', "reminders.snooze: unknown key"),
])
def test_bad_reminder_settings_are_one_line_errors(make_config, text, said):
    with pytest.raises(ConfigError, match=said):
        make_config(f"[reminders]\n{text}\n")


# -- reminders: due once, stopped, snoozed --------------------------------------------------------


def duties(store, clock, config=None):
    """What the reminders' job finds due now."""
    return list(found_due(Context(BOT_USER, None, store, config or Config(), "t", clock)))


def remind(runner: Terminal, duty):
    return as_user(runner, BOT_USER, duty.command)


def test_a_reminder_is_due_once_and_stops_when_its_condition_is_gone(local, store, clock):
    runner = local()
    runner.invoke("/incident open db down --sev 1")
    clock.advance(minutes=4, seconds=59)
    assert duties(store, clock) == []
    clock.advance(seconds=1)
    (duty,) = duties(store, clock)
    assert duty.key == "remind:1:unacknowledged:2026-11-24T14:05:00Z"
    assert duty.command == "/incident remind #1 unacknowledged"
    posted = remind(runner, duty)
    assert posted.audience is Audience.THREAD and posted.template == "incident_reminder"
    text = runner.renderer.text(posted.template, posted.data)
    assert "not acknowledged after 5 m 00 s" in text and "[Acknowledge: /incident ack #1]" in text
    assert "[Snooze 30 min: /incident snooze #1 unacknowledged]" in text
    assert remind(runner, duty).data["why"] == "no_reminder"      # the same duty again: a restart, a replica
    assert duties(store, clock) == []
    # no_update: due 30 min after the last update; an update moves it, the ack ends unacknowledged's
    clock.advance(minutes=20)
    runner.invoke("/incident update looking at the pool")
    clock.advance(minutes=29)
    assert duties(store, clock) == []
    clock.advance(minutes=1)
    (duty,) = duties(store, clock)
    assert duty.command == "/incident remind #1 no_update"
    runner.invoke("/incident update pool size raised")              # gone before it ran
    assert remind(runner, duty).audience is Audience.CALLER


def test_a_snoozed_reminder_comes_back_after_30_minutes_and_the_lead_is_mentioned(local, store, clock, make_config):
    config = make_config('[reminders]\nmention = "S0ONCALL1"\nno_update = "off"\n')
    runner = local(config)
    runner.invoke("/incident open db down --sev 2")
    clock.advance(minutes=15)
    (duty,) = duties(store, clock, config)
    text = runner.renderer.text("incident_reminder", remind(runner, duty).data)
    assert text.startswith("⏰ @S0ONCALL1")           # no lead: the configured group
    snoozed = runner.invoke("/incident snooze #1 unacknowledged")
    assert "snoozed until 14:45" in runner.renderer.text(snoozed.template, snoozed.data)
    as_user(runner, ANA, "/incident lead")
    clock.advance(minutes=29)
    assert duties(store, clock, config) == []
    clock.advance(minutes=1)
    (again,) = duties(store, clock, config)
    assert again.key == "remind:1:unacknowledged:2026-11-24T14:45:00Z"
    assert runner.renderer.text("incident_reminder", remind(runner, again).data).startswith(f"⏰ @{ANA}")


def test_open_longer_and_postmortem_due_have_their_obvious_buttons(local, store, clock):
    runner = local()
    runner.invoke("/incident open db down --sev 1")
    runner.invoke("/incident ack")
    runner.invoke("/incident update on it")
    clock.advance(hours=4)
    kinds = {duty.command.rsplit(" ", 1)[1]: duty for duty in duties(store, clock)}
    assert set(kinds) == {"open_longer", "no_update"}
    text = runner.renderer.text("incident_reminder", remind(runner, kinds["open_longer"]).data)
    assert "going on for 4 h" in text and "[Resolve: /incident resolve #1]" in text
    runner.invoke("/incident resolve")
    clock.advance(days=2)
    (duty,) = duties(store, clock)
    text = runner.renderer.text("incident_reminder", remind(runner, duty).data)
    assert "[Write postmortem: /incident postmortem #1]" in text
    runner.invoke("/incident snooze #1 postmortem_due")
    runner.invoke("/incident postmortem #1 done")
    clock.advance(hours=1)
    assert duties(store, clock) == []


def test_a_postmortem_reminder_is_not_posted_a_day_late(local, store, clock):
    runner = local()
    runner.invoke("/incident open db down --sev 1")
    runner.invoke("/incident resolve")
    clock.advance(days=3, seconds=1)           # the bot was down past the moment and a day more
    assert duties(store, clock) == []


def test_two_workers_and_a_restart_post_each_reminder_once(local, store, clock, slack_double):
    """Two workers (as two processes or replicas would), each with its scheduler looking at the same
    moment; then a restart after the work queue forgot the duty: one reminder in Slack."""
    local().invoke("/incident open db down --sev 1")

    def worker():
        env = SlackEnv("xoxb-worker", "", slack_double.api_url)
        return Worker(store, Config(), registry(), web_client(env), Renderer(Config().timezone, clock), clock,
                      jobs=JOBS)

    first, second = worker(), worker()
    clock.advance(minutes=5)
    assert [first.scheduler.tick(), second.scheduler.tick()] == [1, 0]
    first.start()
    second.start()
    try:
        (post,) = slack_double.wait_for("chat.postMessage", timeout=10)
        assert "not acknowledged after 5 m 00 s" in post.args["text"]
        eventually(lambda: store.work_pending() == 0 and store.outbox_pending() == 0)
    finally:
        first.stop(2)
        second.stop(2)
    store.prune_work(clock() + timedelta(days=1))                   # the queue's memory is gone
    clock.advance(seconds=30)
    restarted = worker()
    assert restarted.scheduler.tick() == 0
    time.sleep(0.2)
    assert len(slack_double.called("chat.postMessage")) == 1 and not slack_double.called("chat.postEphemeral")


def test_reminders_are_posted_where_access_rules_limit_who_runs_incident(local, store, clock, slack_double,
                                                                         make_config):
    config = make_config('[access]\n"/incident" = { users = ["U0ALICE01"] }\n')
    local().invoke("/incident open db down --sev 1")
    env = SlackEnv("xoxb-worker", "", slack_double.api_url)
    worker = Worker(store, config, registry(), web_client(env), Renderer(config.timezone, clock), clock, jobs=JOBS)
    clock.advance(minutes=5)
    assert worker.scheduler.tick() == 1
    worker.start()
    try:
        (post,) = slack_double.wait_for("chat.postMessage", timeout=10)
        assert "not acknowledged" in post.args["text"]
    finally:
        worker.stop(2)


def test_a_duty_whose_reminder_went_away_posts_nothing(local, store, clock, slack_double):
    runner = local()
    runner.invoke("/incident open db down --sev 1")
    env = SlackEnv("xoxb-worker", "", slack_double.api_url)
    worker = Worker(store, Config(), registry(), web_client(env), Renderer(Config().timezone, clock), clock,
                    jobs=JOBS)
    clock.advance(minutes=5)
    assert worker.scheduler.tick() == 1
    runner.invoke("/incident ack")                                 # acknowledged before a worker took it
    worker.start()
    try:
        eventually(lambda: store.work_pending() == 0)
        time.sleep(0.2)
    finally:
        worker.stop(2)
    assert [call.method for call in slack_double.calls if call.method != "auth.test"] == []


def test_in_slack_claim_lead_is_a_button_and_comms_takes_a_mention(slack_bot, slack_double, store):
    bot, client = slack_bot()
    client.command("/incident", "open checkout 500s --sev 2")
    slack_double.wait_for("chat.postMessage")
    eventually(lambda: store.incident(1).thread_ts)
    client.click("/incident lead #1", user="U0BOB0001", message_ts=store.incident(1).thread_ts)
    (update,) = slack_double.wait_for("chat.update")
    assert store.incident(1).lead == "U0BOB0001"
    assert "<@U0BOB0001>" in json.dumps(update.args["blocks"]) and "Claim lead" not in json.dumps(update.args["blocks"])
    client.command("/incident", "comms <@U0ANA0001|ana>")
    replies = slack_double.wait_for("chat.postMessage", 3)
    assert "comms: nobody → *<@U0ANA0001>*" in json.dumps(replies[2].args["blocks"], ensure_ascii=False)
    assert store.incident(1).comms == ANA


def test_two_worker_processes_and_a_restart_post_a_reminder_once(tmp_path, slack_double):
    """`oncall-bot work` twice at once on one database, then once more after they stopped: the
    reminder due when they start is posted once."""
    store = SqliteStore(tmp_path / "oncall.db")
    opened = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)
    store.insert_incident(title="db down", severity=1, service=None, status="open", opened_by=ANA, opened_at=opened,
                          started_at=opened, channel="C0INCIDNT", announce_channel="C0INCIDNT",
                          thread_ts="1700000000.000100")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ONCALL_"))}
    env.update(SLACK_BOT_TOKEN="xoxb-work", SLACK_API_URL=slack_double.api_url, ONCALL_NOW="2026-11-24T14:06:00Z")

    def work() -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-m", "bot", "work"], cwd=tmp_path, env=env, stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert process.stdout is not None and process.stdout.readline() == b"ready\n"
        return process

    def stop(processes: list[subprocess.Popen]) -> None:
        for process in processes:
            assert process.stdin is not None
            process.stdin.close()              # the parent is gone: the worker drains and exits
        for process in processes:
            assert process.wait(timeout=30) == 0

    both = [work(), work()]
    try:
        (post,) = slack_double.wait_for("chat.postMessage", timeout=20)
        assert post.args["thread_ts"] == "1700000000.000100" and "not acknowledged after 6 m" in post.args["text"]
        time.sleep(1)                          # both schedulers have looked by now
    finally:
        stop(both)
    restarted = work()
    time.sleep(1)
    stop([restarted])
    assert len(slack_double.called("chat.postMessage")) == 1
