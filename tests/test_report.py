"""The weekly report: its content and chart, the schedule (with a controllable clock), exactly once."""

import csv
import io
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from bot import export
from bot.command import Audience
from bot.dispatch import Dispatcher
from bot.outbox import Outbox
from bot.render import Renderer
from bot.schedule import Scheduler, WeeklyReport, WeekNotOver, due_week
from bot.store.sqlite import SqliteStore
from commands import registry
from commands.mttr import distinct_commits
from git_repo import GitRepo

CONFIG = """
    timezone = "Europe/Berlin"
    [slack]
    summary_channel = "C0SUMMARY"
    summary_at = "mon 09:00"
"""


def seed(store, now):
    def add(days_ago, minutes, **fields):
        opened = now - timedelta(days=days_ago)
        return store.insert_incident(**{"title": f"incident {days_ago}", "severity": 2, "status": "resolved",
                                        "opened_by": "U1", "opened_at": opened, "started_at": opened,
                                        "resolved_at": opened + timedelta(minutes=minutes), "channel": "C1",
                                        "announce_channel": "C1", "thread_ts": "1700000000.000100", **fields})
    add(3, 30, service="api")                            # 2026-W47 (the week before 24 Nov)
    add(4, 90, service="api", cause="deploy:a1b2c3d4e5")  # 2026-W47, deploy-caused
    add(12, 20, service="web")                           # 2026-W46
    store.insert_incident(title="still open", severity=1, status="open", opened_by="U1",
                          opened_at=now - timedelta(hours=5), started_at=now - timedelta(hours=5))


def test_the_report_of_a_week(local, store, clock, make_config):
    seed(store, clock())
    runner = local(make_config(CONFIG))
    reply = runner.invoke("/mttr report")
    assert reply.audience is Audience.CHANNEL
    data = reply.data
    assert data["window"]["label"] == "2026-W47" and data["resolved"] == 2
    assert data["mttr"]["median"] == 60 * 60 and data["previous"]["resolved"] == 1
    assert data["by_service"] == [{"service": "api", "resolved": 2}]
    assert data["change_failure"] == {"deploy_caused": 1, "failed_deploys": 1, "share_of_incidents": 50.0,
                                      "deploys": None, "rate": None}
    assert [w["week"] for w in data["series"]][-3:] == ["2026-W45", "2026-W46", "2026-W47"]
    assert len(data["series"]) == 12 and data["series"][-1]["resolved"] == 2
    (chart,) = reply.files
    assert chart.filename == "mttr-2026-W47.png" and chart.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(chart.content) > 10_000
    renderer = runner.renderer
    renderer.workspace_url = "https://acme.slack.com/"
    slack = renderer.slack(reply.template, reply.data)
    text = json.dumps(slack.blocks, ensure_ascii=False)
    assert "<https://acme.slack.com/archives/C1/p1700000000000100|#" in text and "`a1b2c3d4e5`" in text
    assert "Mon 16 Nov 2026 – Sun 22 Nov 2026" in text


def test_due_week_follows_the_configured_slot(make_config):
    config = make_config(CONFIG)
    berlin = lambda *args: datetime(*args, tzinfo=config.timezone)  # noqa: E731
    assert due_week(berlin(2026, 11, 23, 8, 59), config) is None
    assert due_week(berlin(2026, 11, 23, 9, 0), config) == "2026-W47"
    assert due_week(berlin(2026, 11, 29, 23, 59), config) == "2026-W47"
    assert due_week(berlin(2026, 11, 30, 9, 0), config) == "2026-W48"
    assert due_week(berlin(2027, 1, 4, 9, 30), config) == "2026-W53"
    friday = make_config('[slack]\nsummary_at = "fri 17:30"')
    assert due_week(datetime(2026, 11, 27, 17, 29, tzinfo=UTC), friday) is None
    assert due_week(datetime(2026, 11, 27, 17, 30, tzinfo=UTC), friday) == "2026-W47"


def reporter(store, config, clock, double):
    from bot.app import SlackEnv, web_client

    renderer = Renderer(config.timezone, clock)
    outbox = Outbox(store, web_client(SlackEnv("xoxb-report", "", double.api_url)), renderer, clock)
    return WeeklyReport(store, config, Dispatcher(store, config, registry(), clock), outbox, clock), outbox


def test_the_scheduler_posts_once_per_week_whatever_restarts_or_replicas(store, clock, make_config, slack_double):
    config = make_config(CONFIG)
    seed(store, clock())
    clock.now = datetime(2026, 11, 23, 7, 59, tzinfo=UTC)           # 08:59 Berlin: not yet
    first, outbox = reporter(store, config, clock, slack_double)
    assert first.tick() is None
    clock.advance(minutes=1)                                         # 09:00 Berlin
    replicas = [reporter(store, config, clock, slack_double)[0] for _ in range(4)]
    with ThreadPoolExecutor(max_workers=5) as pool:
        posted = list(pool.map(lambda r: r.tick(), [first, *replicas]))
    assert posted.count("2026-W47") == 1 and posted.count(None) == 4
    outbox.flush(30)
    (message,) = slack_double.called("chat.postMessage")
    assert message.args["channel"] == "C0SUMMARY" and "Weekly incident report · 2026-W47" in message.args["text"]
    (upload,) = slack_double.called("files.completeUploadExternal")
    assert upload.args["channel_id"] == "C0SUMMARY" and upload.args["files"][0]["title"].startswith("Time to resolve")
    (png,) = slack_double.uploads.values()
    assert png.startswith(b"\x89PNG")

    clock.advance(days=2)                                            # a restart later that week
    restarted, _ = reporter(store, config, clock, slack_double)
    assert restarted.tick() is None
    clock.now = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)            # next Monday 09:00 Berlin
    assert restarted.tick() == "2026-W48"
    assert store.last_report().week == "2026-W48"


def test_the_scheduler_itself_never_posts_a_week_that_is_not_over(store, clock, make_config, slack_double):
    config = make_config(CONFIG)
    clock.now = datetime(2026, 11, 29, 22, 59, tzinfo=UTC)          # Sunday 23:59 Berlin, still 2026-W48
    scheduler, outbox = reporter(store, config, clock, slack_double)
    with pytest.raises(WeekNotOver, match="2026-W48 is not over until Mon 30 Nov 00:00 CET"):
        scheduler.post("2026-W48")
    assert store.report_claimed("2026-W48") is None and store.outbox_pending() == 0
    clock.advance(minutes=1)
    assert scheduler.post("2026-W48") == "2026-W48"


def test_a_missed_week_is_not_posted_late(store, clock, make_config, slack_double):
    config = make_config(CONFIG)
    clock.now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)             # W49; W47's report never went out
    scheduler, _ = reporter(store, config, clock, slack_double)
    assert scheduler.tick() == "2026-W48" and store.report_claimed("2026-W47") is None


def test_no_summary_channel_no_report(store, clock, make_config, slack_double):
    clock.now = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)     # Monday, past the default slot
    seed(store, clock())
    config = make_config("")
    _, outbox = reporter(store, config, clock, slack_double)
    scheduler = Scheduler(store, config, registry(), outbox, clock, queued=lambda: None)
    assert scheduler.tick() == 0
    assert store.last_report() is None and store.outbox_pending() == 0


def test_the_bot_posts_the_report_itself(slack_bot, slack_double, store, make_config, clock):
    clock.now = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
    seed(store, clock())
    slack_bot(make_config(CONFIG), use_clock=True)
    (message,) = slack_double.wait_for("chat.postMessage", where=lambda c: c.args.get("channel") == "C0SUMMARY")
    slack_double.wait_for("files.completeUploadExternal")
    assert store.report_claimed("2026-W47").channel == "C0SUMMARY"


def oncall(tmp_path, *args, **env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ONCALL_"))}
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=tmp_path, env={**clean, **env},
                          capture_output=True, text=True, timeout=120)


def test_summary_shows_or_posts_once_from_a_shell(tmp_path, slack_double):
    (tmp_path / "oncall.toml").write_text('[slack]\nsummary_channel = "C0SUMMARY"\n')
    shown = oncall(tmp_path, "summary", "--week", "2026-W47")
    assert shown.returncode == 0 and "Weekly incident report · 2026-W47" in shown.stdout
    assert slack_double.calls == []
    env = {"SLACK_BOT_TOKEN": "xoxb-cron", "SLACK_API_URL": slack_double.api_url}
    posted = oncall(tmp_path, "summary", "--week", "2026-W47", "--post", **env)
    assert posted.returncode == 0 and "Posted the report of 2026-W47 to C0SUMMARY" in posted.stdout, posted.stderr
    again = oncall(tmp_path, "summary", "--week", "2026-w47", "--post", **env)
    assert again.returncode == 0 and "already posted" in again.stderr
    assert len(slack_double.called("chat.postMessage")) == 1 and len(slack_double.uploads) == 1
    bad = oncall(tmp_path, "summary", "--week", "last", "--post", **env)
    assert bad.returncode == 2 and "not an ISO week" in bad.stderr


def test_an_unfinished_week_is_shown_but_never_posted(tmp_path, slack_double):
    (tmp_path / "oncall.toml").write_text('timezone = "Europe/Berlin"\n[slack]\nsummary_channel = "C0SUMMARY"\n')
    env = {"SLACK_BOT_TOKEN": "xoxb-cron", "SLACK_API_URL": slack_double.api_url}
    sunday_night = {"ONCALL_NOW": "2026-11-29T22:59:00Z"}                    # 23:59 Berlin, the last minute of W48
    shown = oncall(tmp_path, "summary", "--week", "2026-W48", **sunday_night)
    assert shown.returncode == 0 and "Weekly incident report · 2026-W48" in shown.stdout
    for week in ("2026-W48", "2026-W49", "2027-W10"):
        refused = oncall(tmp_path, "summary", "--week", week, "--post", **env, **sunday_night)
        assert refused.returncode != 0 and "nothing was posted" in refused.stderr and refused.stdout == ""
        assert refused.stderr.startswith(f"{week} is not over until")
    assert "2027-W10 is not over until Mon 15 Mar 00:00 CET" in refused.stderr
    assert slack_double.calls == [] and SqliteStore(tmp_path / "oncall.db").last_report() is None
    bad = oncall(tmp_path, "summary", "--week", "2026-W60", "--post", **env, **sunday_night)
    assert bad.returncode == 2 and "not a week" in bad.stderr
    monday = {"ONCALL_NOW": "2026-11-29T23:00:00Z"}                          # 00:00 Berlin: W48 is over
    posted = oncall(tmp_path, "summary", "--week", "2026-W48", "--post", **env, **monday)
    assert posted.returncode == 0 and "Posted the report of 2026-W48" in posted.stdout, posted.stderr


def test_summary_saves_the_chart_and_links_the_slowest_threads_when_posting(tmp_path, slack_double):
    (tmp_path / "oncall.toml").write_text('[slack]\nsummary_channel = "C0SUMMARY"\n')
    seed(SqliteStore(tmp_path / "oncall.db"), datetime(2026, 11, 24, 14, 0, tzinfo=UTC))
    now = {"ONCALL_NOW": "2026-11-24T14:00:00Z"}
    shown = oncall(tmp_path, "summary", "--png", "chart.png", **now)
    assert shown.returncode == 0 and "Weekly incident report · 2026-W47" in shown.stdout
    assert (tmp_path / "chart.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and "chart.png" in shown.stderr
    unwritable = oncall(tmp_path, "summary", "--png", "missing/dir/chart.png", **now)
    assert unwritable.returncode == 1 and "missing/dir/chart.png: cannot write" in unwritable.stderr
    env = {"SLACK_BOT_TOKEN": "xoxb-cron", "SLACK_API_URL": slack_double.api_url, **now}
    assert oncall(tmp_path, "summary", "--post", **env).returncode == 0
    (message,) = slack_double.called("chat.postMessage")
    assert "<https://oncall-test.slack.com/archives/C1/p1700000000000100|#" in json.dumps(message.args["blocks"])


def test_export_csv_and_json(tmp_path):
    repo = GitRepo(tmp_path / "api")
    sha = repo.commit("the deploy", datetime(2026, 11, 20, tzinfo=UTC))
    (tmp_path / "oncall.toml").write_text(f'[services.api]\nrepo = "{repo.path}"\n')
    oncall(tmp_path, "run", "/incident open db down --sev 2")
    oncall(tmp_path, "run", "/incident ack #1")
    refused = oncall(tmp_path, "run", "/incident resolve #1 --cause deploy:deadbeef")
    assert refused.returncode == 1 and "There is no commit or tag 'deadbeef' in the repo of api" in refused.stderr
    assert oncall(tmp_path, "run", f"/incident resolve #1 --cause deploy:{sha[:7]}").returncode == 0
    csv_out = oncall(tmp_path, "export")
    header, row = csv_out.stdout.strip().splitlines()
    assert header.startswith("id,title,severity,service,status,cause,opened_by,opened_at,started_at")
    assert f",deploy:{sha}," in row and "resolved" in row
    (incident,) = json.loads(oncall(tmp_path, "export", "--format", "json").stdout)
    assert incident["time_to_resolve_seconds"] >= 0 and incident["opened_at"].endswith("Z")
    assert json.loads(oncall(tmp_path, "export", "--format", "json", "--since", "2099-01-01").stdout) == []
    bad = oncall(tmp_path, "export", "--since", "someday")
    assert bad.returncode == 2 and "--since" in bad.stderr
    for word in ("yesterday", "last week"):
        bad = oncall(tmp_path, "export", "--since", word)
        assert bad.returncode == 2 and f"--since: {word!r} is not a date" in bad.stderr and "T00:00" not in bad.stderr
    assert len(json.loads(oncall(tmp_path, "export", "--format", "json", "--since", "7d").stdout)) == 1
    assert len(json.loads(oncall(tmp_path, "export", "--format", "json", "--since", "2020-01-01").stdout)) == 1


def test_the_change_failure_rate_counts_the_weeks_deploys(local, store, clock, make_config, tmp_path):
    repo = tmp_path / "api"
    repo.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "dana", "GIT_AUTHOR_EMAIL": "d@acme.io",
           "GIT_COMMITTER_NAME": "dana", "GIT_COMMITTER_EMAIL": "d@acme.io"}
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    shas = []
    for day in (10, 16, 17, 19, 21, 23):     # four of them in 2026-W47 (16-22 Nov)
        (repo / "f").write_text(str(day))
        when = f"2026-11-{day:02d}T12:00:00Z"
        subprocess.run(["git", "add", "f"], cwd=repo, check=True)
        subprocess.run(["git", "commit", "-q", "-m", f"day {day}"], cwd=repo, check=True,
                       env={**env, "GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when})
        shas.append(subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip())
    seed(store, clock())
    store.update_incident(2, cause=f"deploy:{shas[2]}")
    runner = local(make_config(f'[services.api]\nrepo = "{repo}"\ndeploy = "commits"\n'))
    reply = runner.invoke("/mttr report 2026-W47")
    assert reply.data["change_failure"] == {"deploy_caused": 1, "failed_deploys": 1, "share_of_incidents": 50.0,
                                            "deploys": 4, "rate": 25.0}
    assert "*25.0%*: 1 of 4 deploys caused an incident" in runner.renderer.text(reply.template, reply.data)


def test_one_deploy_blamed_twice_however_typed_is_one_failed_deploy(local, store, clock, make_config, tmp_path):
    repo = GitRepo(tmp_path / "api")
    shas = [repo.commit(f"day {day}", datetime(2026, 11, day, 12, tzinfo=UTC)) for day in (16, 17, 19, 21)]
    repo.tag("v2", ref=shas[1])
    runner = local(make_config(f'timezone = "Europe/Berlin"\n[services.api]\nrepo = "{repo.path}"\ndeploy = "commits"\n'))
    clock.now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)                  # in 2026-W47
    for ref in (shas[1][:7], shas[1], "v2", shas[2][:12], "deadbeef"):
        runner.invoke(f"/incident open blamed on {ref} --service api")
        runner.invoke(f"/incident resolve --cause deploy:{ref}")
    assert [store.incident(n).cause for n in range(1, 6)] == [f"deploy:{sha}" for sha in (shas[1], shas[1], shas[1], shas[2])] + [None]
    clock.now = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)
    reply = runner.invoke("/mttr report 2026-W47")
    assert reply.data["change_failure"] == {"deploy_caused": 4, "failed_deploys": 2, "share_of_incidents": 100.0,
                                            "deploys": 4, "rate": 50.0}
    assert "*50.0%*: 2 of 4 deploys caused an incident" in runner.renderer.text(reply.template, reply.data)


def test_short_shas_stored_before_they_were_looked_up_count_once():
    assert distinct_commits(["a1b2c3d", "a1b2c3d4e5f6", "a1b2c3d4e5f6", "ffff000"]) == {"a1b2c3d4e5f6", "ffff000"}


def test_access_rules_do_not_stop_the_bots_own_report(slack_bot, slack_double, store, make_config, clock):
    clock.now = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
    seed(store, clock())
    slack_bot(make_config(CONFIG + '\n[access]\n"/mttr" = { users = ["U0ALICE01"] }\n'), use_clock=True)
    (message,) = slack_double.wait_for("chat.postMessage", where=lambda c: c.args.get("channel") == "C0SUMMARY")
    assert "Weekly incident report" in message.args["text"]


def test_export_cells_are_safe_for_spreadsheets_and_parse_back(local, store):
    titles = ['=HYPERLINK("http://x","y")', "+1+1", "-2", "@SUM(A1)", 'say "hi", then\nleave', "plain title"]
    for title in titles:
        local().invoke(f"/incident open '{title}'" if "\n" not in title else f"/incident open {title}")
    out = io.StringIO(newline="")
    export.write(store, None, "csv", out)
    text = out.getvalue()
    assert text.startswith("id,title,") and text.endswith("\r\n")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    shown = [row["title"] for row in rows]
    assert shown[:4] == ["'" + title for title in titles[:4]]          # text in a spreadsheet, not formulas
    assert shown[5] == "plain title" and "say" in shown[4] and "\"hi\"" in shown[4]
    assert all(row["time_to_resolve_seconds"] == "" and row["severity"] == "3" for row in rows)
    out = io.StringIO()
    export.write(store, None, "json", out)
    exported = json.loads(out.getvalue())
    assert [item["title"] for item in exported][:4] == titles[:4] and exported[0]["reopened"] == 0
    empty = io.StringIO()
    export.write(store, datetime(2099, 1, 1, tzinfo=UTC), "json", empty)
    assert json.loads(empty.getvalue()) == []


def test_export_gives_the_milestones_as_utc_times_or_null(local, store, clock):
    runner = local()
    runner.invoke("/incident open db down --started 13:50")                 # opened 14:00
    runner.invoke("/incident open cache cold")
    clock.advance(minutes=20)
    runner.invoke("/incident #1 mitigate")
    runner.invoke("/incident update #1 --detected 13:55")
    store.update_incident(1, recovered_at=datetime(2026, 11, 24, 14, 31, tzinfo=UTC))
    out = io.StringIO()
    export.write(store, None, "json", out)
    first, second = json.loads(out.getvalue())
    assert (first["detected"], first["mitigated"], first["recovered"]) == (
        "2026-11-24T13:55:00Z", "2026-11-24T14:20:00Z", "2026-11-24T14:31:00Z")
    assert (second["detected"], second["mitigated"], second["recovered"]) == (None, None, None)
    out = io.StringIO(newline="")
    export.write(store, None, "csv", out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
    assert (rows[0]["detected"], rows[0]["mitigated"], rows[0]["recovered"]) == (
        "2026-11-24T13:55:00Z", "2026-11-24T14:20:00Z", "2026-11-24T14:31:00Z")
    assert (rows[1]["detected"], rows[1]["mitigated"], rows[1]["recovered"]) == ("", "", "")
