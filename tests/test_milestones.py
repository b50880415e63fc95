"""Milestones from evidence: detected from the service's logs, mitigated from git, and the watch after a fix."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.command import Outcome
from commands import milestones

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
