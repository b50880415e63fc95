"""Milestones from evidence: detected from the service's logs, mitigated from git, and the watch after a fix."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.command import Outcome
from commands import milestones
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
    assert "`13:43 UTC` *detected*: first error in api's logs: 2026-11-24 13:43:00,000 ERROR app.views KeyError" \
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
    assert "`13:40 UTC` *detected*: alert alertmanager:prom" in timeline


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
