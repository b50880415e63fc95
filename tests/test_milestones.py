"""Milestones from evidence: detected from the service's logs, mitigated from git, and the watch after a fix."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.app import SlackEnv, web_client
from bot.command import Outcome
from bot.config import ConfigError
from bot.render import Renderer
from bot.store import WatchCheck
from bot.worker import Worker
from commands import jobs, milestones, registry
from commands.watch import Watched, WatchSettings
from conftest import SIGNING_SECRET, table_rows
from git_repo import GitRepo

NOW = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)      # the clock fixture's start


def stamp(minutes_ago: float) -> str:
    return (NOW - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%d %H:%M:%S,000")


def error(minutes_ago: float, text: str = "KeyError: 'id'") -> str:
    return f"{stamp(minutes_ago)} ERROR app.views {text}\n"


def info(minutes_ago: float) -> str:
    return f"{stamp(minutes_ago)} INFO app.server GET /api/orders 200\n"


@pytest.fixture
def logs_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "logs"
    directory.mkdir()
    (tmp_path / "web-logs").mkdir()
    return directory


@pytest.fixture
def services(make_config, logs_dir: Path, tmp_path: Path):
    return make_config(f"""
        [services.api]
        logs = ["{logs_dir}/*.log"]

        [services.web]
        logs = ["{tmp_path}/web-logs/*.log"]
    """)


# -- detected, from the logs -------------------------------------------------------------------------


def test_detected_is_the_services_first_error_between_the_start_and_the_opening(local, store, services, logs_dir,
                                                                                 tmp_path):
    (logs_dir / "app.log").write_text(error(45, "OSError: noise from before") + info(30) + error(17, "KeyError: 'id'")
                                      + error(12) + error(2))
    (tmp_path / "web-logs" / "web.log").write_text(error(19, "web's own error"))
    runner = local(services)
    opened = runner.invoke("/incident open checkout is down --service api --started 20m ago")
    incident = store.incident(opened.incident_id)
    assert incident.detected_at == NOW - timedelta(minutes=17)
    (event,) = [e for e in store.events(incident.id) if e.kind == "detected"]
    assert event.at == NOW - timedelta(minutes=17) and event.user is None
    assert event.data["source"] == {"kind": "logs", "service": "api",
                                    "error": "2026-11-24 13:43:00,000 ERROR app.views KeyError: 'id'"}
    assert [e.kind for e in store.events(incident.id)] == ["detected", "opened"]     # in the order they happened
    card = runner.renderer.text(opened.template, opened.data)
    assert "*detected* 13:43 UTC" in card
    timeline = runner.renderer.text("incident_timeline", runner.invoke("/incident timeline").data)
    assert "13:43 UTC *detected*: first error in api's logs: 2026-11-24 13:43:00,000 ERROR app.views KeyError" \
        in timeline


def test_no_error_since_the_start_detects_nothing(local, store, services, logs_dir):
    (logs_dir / "app.log").write_text(error(45, "OSError: before the start") + info(5))
    runner = local(services)
    incident_id = runner.invoke("/incident open checkout is down --service api --started 20m ago").incident_id
    assert store.incident(incident_id).detected_at is None
    assert "detected" not in [e.kind for e in store.events(incident_id)]


def test_logs_and_triage_detect_once_the_start_is_known(local, store, services, logs_dir, clock):
    (logs_dir / "app.log").write_text(error(17) + error(2))
    runner = local(services)
    incident_id = runner.invoke("/incident open checkout is down --service api").incident_id
    assert store.incident(incident_id).detected_at is None          # opened as it started: nothing between
    runner.invoke("/logs")
    assert store.incident(incident_id).detected_at is None
    clock.advance(minutes=1)
    runner.invoke("/incident update --started 13:40")
    runner.invoke("/logs")
    assert store.incident(incident_id).detected_at == NOW - timedelta(minutes=17)
    runner.invoke("/incident update --detected 13:50")              # a person knows better: kept
    reply = runner.invoke("/triage")
    assert reply.outcome is Outcome.OK
    assert store.incident(incident_id).detected_at == datetime(2026, 11, 24, 13, 50, tzinfo=UTC)
    assert [e.kind for e in store.events(incident_id)].count("detected") == 1


def test_triage_detects_from_the_logs(local, store, services, logs_dir):
    (logs_dir / "app.log").write_text(error(17) + error(2))
    runner = local(services)
    incident_id = runner.invoke("/incident open checkout is down --service api").incident_id
    store.update_incident(incident_id, started_at=NOW - timedelta(minutes=20))
    assert runner.invoke("/triage").outcome is Outcome.OK
    assert store.incident(incident_id).detected_at == NOW - timedelta(minutes=17)


def test_evidence_never_overwrites_nor_breaks_the_order(local, store):
    runner = local()
    incident_id = runner.invoke("/incident open db down --started 13:30").incident_id
    assert milestones.record(store, incident_id, "detected_at", NOW + timedelta(minutes=1),
                             {"kind": "alert", "source": "generic:cron"}) is None          # after the opening
    assert milestones.record(store, incident_id, "detected_at", NOW - timedelta(minutes=40),
                             {"kind": "alert", "source": "generic:cron"}) is None          # before the start
    recorded = milestones.record(store, incident_id, "detected_at", NOW - timedelta(minutes=20),
                                 {"kind": "alert", "source": "alertmanager:prom"})
    assert recorded is not None and recorded.detected_at == NOW - timedelta(minutes=20)
    assert milestones.record(store, incident_id, "detected_at", NOW - timedelta(minutes=25),
                             {"kind": "alert", "source": "alertmanager:prom"}) is None     # already detected
    assert store.incident(incident_id).detected_at == NOW - timedelta(minutes=20)
    timeline = runner.renderer.text("incident_timeline", runner.invoke("/incident timeline").data)
    assert "13:40 UTC *detected*: alert alertmanager:prom" in timeline


# -- mitigated, from git -----------------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    return GitRepo(tmp_path / "api")


def repo_config(make_config, repo: GitRepo, deploy: str) -> object:
    return make_config(f'[services.api]\nrepo = "{repo.path}"\ndeploy = "{deploy}"\n')


def test_a_revert_of_a_suspect_after_the_start_is_the_mitigation(local, store, make_config, repo):
    repo.commit("initial import", NOW - timedelta(days=2), {"app.py": "a\n"})
    good = repo.commit("Fine change (#40)", NOW - timedelta(hours=2), {"app.py": "b\n"})
    suspect = repo.commit("Tune pool size (#42)", NOW - timedelta(minutes=40), {"pool.cfg": "size=5\n"})
    repo.git("revert", "--no-edit", good, at=NOW - timedelta(minutes=20))        # not a suspect: no mitigation
    repo.git("revert", "--no-edit", suspect, at=NOW - timedelta(minutes=10))
    revert = repo.git("rev-parse", "HEAD")
    runner = local(repo_config(make_config, repo, "commits"))
    incident_id = runner.invoke("/incident open checkout returns 500 --service api --started 30m ago").incident_id
    reply = runner.invoke("/deploys")
    assert reply.data["services"][0].mitigation.reverts == suspect
    assert "🩹 *Undone at 13:50 UTC*" in runner.renderer.text(reply.template, reply.data)
    assert store.incident(incident_id).mitigated_at == NOW - timedelta(minutes=10)
    (event,) = [e for e in store.events(incident_id) if e.kind == "mitigated"]
    assert event.user is None and event.at == NOW - timedelta(minutes=10)
    assert event.data["source"] == {"kind": "git", "service": "api", "sha": revert, "reverts": suspect,
                                    "redeploys": None}
    runner.invoke("/deploys")
    assert [e.kind for e in store.events(incident_id)].count("mitigated") == 1
    timeline = runner.renderer.text("incident_timeline", runner.invoke("/incident timeline").data)
    assert f"*mitigated*: revert {revert[:10]} of suspect {suspect[:10]} seen in git" in timeline


def test_a_reverting_pull_request_mitigates_when_it_is_merged(local, store, make_config, repo):
    repo.commit("initial import", NOW - timedelta(days=2), {"app.py": "a\n"})
    repo.pull_request(40, NOW - timedelta(hours=2), {"app.py": "b\n"})
    suspect = repo.pull_request(41, NOW - timedelta(minutes=40), {"app.py": "c\n"})
    repo.git("checkout", "-q", "-b", "revert-41")
    repo.git("revert", "--no-edit", "-m", "1", suspect, at=NOW - timedelta(minutes=15))
    repo.git("checkout", "-q", "main")
    repo.git("merge", "-q", "--no-ff", "-m", "Merge pull request #44 from acme/revert-41", "revert-41",
             at=NOW - timedelta(minutes=5))
    merged = repo.git("rev-parse", "HEAD")
    runner = local(repo_config(make_config, repo, "merges"))
    incident_id = runner.invoke("/incident open checkout returns 500 --service api --started 30m ago").incident_id
    runner.invoke("/deploys")
    incident = store.incident(incident_id)
    assert incident.mitigated_at == NOW - timedelta(minutes=5)          # when it landed, not when it was written
    (event,) = [e for e in store.events(incident_id) if e.kind == "mitigated"]
    assert event.data["source"]["sha"] == merged and event.data["source"]["reverts"] == suspect


def test_a_redeploy_of_the_last_known_good_tag_is_the_mitigation(local, store, make_config, repo):
    repo.commit("initial import", NOW - timedelta(days=2))
    repo.tag("v1.0", NOW - timedelta(hours=5))
    repo.commit("feature", NOW - timedelta(hours=1))
    repo.tag("v1.1", NOW - timedelta(minutes=45))
    repo.tag("v1.2", NOW - timedelta(minutes=5), ref="v1.0^{}")
    runner = local(repo_config(make_config, repo, "tags:v*"))
    incident_id = runner.invoke("/incident open checkout returns 500 --service api --started 20m ago").incident_id
    runner.invoke("/deploys")
    assert store.incident(incident_id).mitigated_at == NOW - timedelta(minutes=5)
    timeline = runner.renderer.text("incident_timeline", runner.invoke("/incident timeline").data)
    assert "*mitigated*: redeploy of the last known good v1.0 seen in git" in timeline


def test_no_undoing_deploy_no_mitigation_and_a_persons_stays(local, store, make_config, repo):
    repo.commit("initial import", NOW - timedelta(days=2), {"app.py": "a\n"})
    suspect = repo.commit("Tune pool size (#42)", NOW - timedelta(minutes=40), {"pool.cfg": "size=5\n"})
    repo.commit("Roll forward (#43)", NOW - timedelta(minutes=10), {"timeouts.cfg": "30s\n"})
    runner = local(repo_config(make_config, repo, "commits"))
    incident_id = runner.invoke("/incident open checkout returns 500 --service api --started 30m ago").incident_id
    runner.invoke("/deploys")
    assert store.incident(incident_id).mitigated_at is None
    runner.invoke("/incident mitigate failed over to the replica")
    repo.git("revert", "--no-edit", suspect, at=NOW - timedelta(minutes=1))
    runner.invoke("/deploys")
    assert store.incident(incident_id).mitigated_at == NOW                       # the person's, kept


# -- watching the fix --------------------------------------------------------------------------------


def watch_config(make_config, logs_dir: Path, web, probe: str = "/ok", extra: str = ""):
    return make_config(f"""
        {extra}
        [services.api]
        logs = ["{logs_dir}/*.log"]

        [services.api.probes.site]
        kind = "http"
        url = "{web.url}{probe}"
    """)


def minute_errors(minute: int, count: int) -> str:
    """`count` errors in the minute that ends `minute` minutes after NOW."""
    return "".join(error(-(minute - 1) - (second + 1) / 60) for second in range(count))


def incident_log(logs_dir: Path, after: dict[int, int]) -> None:
    """12 errors in the hour before the start (13:30), many during the incident, `after`: minute -> errors."""
    usual = "".join(error(60 - n) for n in range(12))                   # 13:00 – 13:11
    during = "".join(error(29 - n) for n in range(0, 29, 2))
    (logs_dir / "app.log").write_text(usual + during + "".join(minute_errors(m, n) for m, n in sorted(after.items())))


def at_minute(clock, minute: int) -> None:
    clock.now = NOW + timedelta(minutes=minute, seconds=5)


def test_the_fix_is_watched_until_recovered_in_one_message(local, store, clock, make_config, logs_dir, web):
    incident_log(logs_dir, {1: 5, 8: 3})
    runner = local(watch_config(make_config, logs_dir, web))
    incident_id = runner.invoke("/incident open checkout is down --service api --started 30m ago").incident_id
    runner.invoke("/incident mitigate rolled back")                           # 14:00
    replies = []
    for minute in range(1, 9):
        at_minute(clock, minute)
        replies.append(runner.invoke("/incident watch"))
        if minute == 5:
            assert store.incident(incident_id).recovered_at is None           # four good minutes only
    assert {reply.in_place for reply in replies} == {f"watch:{incident_id}:2026-11-24T14:00:00Z"}
    assert [c.errors for c in store.watch_checks(incident_id)] == [5, 0, 0, 0, 0, 0, 0, 3]
    assert {c.errors_before for c in store.watch_checks(incident_id)} == {12}
    assert replies[0].data["level"] == 1 and replies[0].data["good_minutes"] == 0
    assert replies[6].data["good_minutes"] == 6
    incident = store.incident(incident_id)
    assert incident.recovered_at == datetime(2026, 11, 24, 14, 2, tzinfo=UTC)
    assert [reply.card is not None for reply in replies] == [False] * 5 + [True, False, False]   # the card says it
    assert "*recovered* at 14:02 UTC" in runner.renderer.text(replies[5].card.template, replies[5].card.data)
    (event,) = [e for e in store.events(incident_id) if e.kind == "recovered"]
    assert event.at == incident.recovered_at and event.data["source"]["kind"] == "watch"
    recovered = runner.renderer.text(replies[5].template, replies[5].data)
    assert "errors *0/min* at 14:06 UTC" in recovered and "usual level at most 1/min (0.2/min" in recovered
    assert "probes *ok* at 14:06 UTC" in recovered and "errors at their usual level and probes ok for *5 min*" in recovered
    assert "✅ *Recovered* at 14:02 UTC: errors at their usual level and probes ok for 5 minutes" in recovered
    came_back = runner.renderer.text(replies[7].template, replies[7].data)
    assert "⚠️ *Errors came back* at 14:08 UTC" in came_back and "Reopen" not in came_back   # not resolved
    at_minute(clock, 8)
    again = runner.invoke("/incident watch")                                # the same minute: nothing new
    assert len(store.watch_checks(incident_id)) == 8 and again.in_place == replies[0].in_place
    at_minute(clock, 9)
    runner.invoke("/incident resolve")
    at_minute(clock, 10)
    resolved = runner.invoke("/incident watch")
    assert resolved.in_place == replies[0].in_place and resolved.data["until"] == NOW + timedelta(minutes=24, seconds=5)
    text = runner.renderer.text(resolved.template, resolved.data)
    assert "[Reopen: /incident reopen #1]" in text and "#1 is resolved: reopen it if it is not over" in text
    timeline = runner.renderer.text("incident_timeline", runner.invoke("/incident timeline #1").data)
    assert "14:02 UTC *recovered*: errors back to their usual level (at most 1/min) and probes ok for 5 min" \
        in timeline


def test_failing_probes_keep_it_from_recovering(local, store, clock, make_config, logs_dir, web):
    incident_log(logs_dir, {})
    runner = local(watch_config(make_config, logs_dir, web, probe="/fail", extra='[watch]\nfor = "6m"'))
    incident_id = runner.invoke("/incident open checkout is down --service api --started 30m ago").incident_id
    runner.invoke("/incident resolve")
    for minute in range(1, 8):
        at_minute(clock, minute)
        reply = runner.invoke("/incident watch")
    assert store.incident(incident_id).recovered_at is None
    assert [c.probes_failing for c in store.watch_checks(incident_id)] == [1] * 6          # 14:01 – 14:06, then over
    text = runner.renderer.text(reply.template, reply.data)
    assert "probes *not ok*: site down" in text and "(done)" in text
    assert "Not recovered while watched: errors at their usual level and probes ok never lasted 5 minutes" in text


@pytest.mark.parametrize("line, message", [
    ("/incident watch", "#1 is not mitigated nor resolved: a fix is watched for 15 min after"),
    ("/incident watch #2", "#2 has no service with logs or probes to watch"),
])
def test_what_cannot_be_watched_says_why(local, store, make_config, logs_dir, web, line, message):
    runner = local(watch_config(make_config, logs_dir, web))
    runner.invoke("/incident open checkout is down --service api")
    runner.invoke("/incident open elsewhere")
    runner.invoke("/incident resolve #2")
    reply = runner.invoke(line)
    assert reply.outcome is Outcome.FAILED and message in reply.data["message"]


def test_watch_for_is_checked(make_config):
    with pytest.raises(ConfigError, match="watch.for"):
        make_config('[watch]\nfor = "2d"\n')
    assert WatchSettings.of(make_config('[watch]\nfor = "30m"\n')).duration == timedelta(minutes=30)


def _settle(store, seconds: float = 20) -> None:
    """Until every queued duty is done and every message sent."""
    deadline = time.monotonic() + seconds
    while store.work_pending() or store.outbox_pending():
        assert time.monotonic() < deadline, "the duties and their messages were not done in time"
        time.sleep(0.05)


def test_each_minute_is_checked_once_across_workers_and_restarts_in_one_message(
        local, store, clock, make_config, logs_dir, web, slack_double):
    incident_log(logs_dir, {1: 5})
    config = watch_config(make_config, logs_dir, web)
    runner = local(config)
    incident_id = runner.invoke("/incident open checkout is down --service api --started 30m ago").incident_id
    store.update_incident(incident_id, announce_channel="C0INCIDNT", thread_ts="1700000000.000100")
    runner.invoke("/incident mitigate")
    env = SlackEnv("xoxb-test-token", SIGNING_SECRET, slack_double.api_url)

    def worker() -> Worker:
        started = Worker(store, config, registry(), web_client(env), Renderer(config.timezone, clock), clock,
                         jobs=jobs())
        started.start()
        return started

    workers = [worker(), worker()]
    try:
        for minute in range(1, 5):
            at_minute(clock, minute)
            new = [each.scheduler.tick() for each in workers]
            assert sum(new) <= 1                                  # the minute's duty is queued once
            _settle(store)
            if minute == 2:                                        # a restart: the new worker finds it done
                workers[0].stop(2)
                workers[0] = worker()
                assert workers[0].scheduler.tick() == 0
        assert [c.at.minute for c in store.watch_checks(incident_id)] == [1, 2, 3, 4]
        posted = [c for c in slack_double.called("chat.postMessage") if "Watching the fix" in c.args["text"]]
        assert len(posted) == 1 and posted[0].args["thread_ts"] == "1700000000.000100"
        updates = [c for c in slack_double.called("chat.update") if "Watching the fix" in c.args["text"]]
        assert updates and all(c.args["channel"] == posted[0].args["channel"] for c in updates)
        assert "errors *0/min* at <!date^1795529040^{date_short_pretty} {time}|14:04 UTC>" in \
            json.dumps(updates[-1].args["blocks"], ensure_ascii=False)              # a Slack date
        duties = sorted(row[1] for row in table_rows(store, "work") if row[1].startswith("duty:watch:"))
        assert duties == [f"duty:watch:{incident_id}:2026-11-24T14:0{m}:00Z" for m in range(1, 5)]
    finally:
        for each in workers:
            each.stop(2)
            each._pool.shutdown(wait=True)


def _checks(*minutes: tuple[int | None, int | None]) -> list[WatchCheck]:
    return [WatchCheck(1, NOW + timedelta(minutes=n + 1), errors=errors, errors_before=90, probes_failing=failing)
            for n, (errors, failing) in enumerate(minutes)]


def test_what_the_checks_say():
    # 90 errors in the hour before: at most 2 a minute is the usual level.
    steady = Watched.of(_checks((9, 0), (2, 0), (1, 0), (0, 0), (2, 0), (0, 0)), logs=True, probes=True)
    assert (steady.level, steady.good_minutes, steady.steady_since, steady.came_back_at) == (
        2, 5, NOW + timedelta(minutes=2), None)
    back = Watched.of(_checks((0, 0), (3, 0), (None, 0)), logs=True, probes=True)
    assert back.came_back_at == NOW + timedelta(minutes=2) and back.good_minutes == 0   # unread logs: not back
    unread = Watched.of(_checks((0, 0), (None, 0)), logs=True, probes=True)
    assert unread.came_back_at is None and unread.good_minutes == 0
    probes_only = Watched.of(_checks(*[(None, 0)] * 5), logs=False, probes=True)
    assert probes_only.steady_since == NOW + timedelta(minutes=1)
    failing = Watched.of(_checks(*[(0, 1)] * 6), logs=True, probes=True)
    assert failing.steady_since is None and failing.came_back_at is None
