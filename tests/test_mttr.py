from datetime import UTC, datetime, timedelta

import pytest

from bot.command import Outcome
from bot.store import RESOLVED


def add(store, *, opened, resolved=None, acked=None, started=None, severity=3, service=None, title="x"):
    incident_id = store.insert_incident(
        title=title, severity=severity, service=service, status=RESOLVED if resolved else "open",
        opened_by="U1", opened_at=opened, started_at=started or opened, acknowledged_at=acked,
        resolved_at=resolved, channel="C1", announce_channel="C1")
    return incident_id


T = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)  # Tuesday of 2026-W48


def test_mean_median_p90_and_mtta(local, store):
    for minutes, ack in [(10, 1), (20, 2), (30, None), (40, 4), (100, 5)]:
        add(store, opened=T - timedelta(hours=1), resolved=T - timedelta(hours=1) + timedelta(minutes=minutes),
            acked=T - timedelta(hours=1) + timedelta(minutes=ack) if ack else None)
    data = local().invoke("/mttr").data
    assert data["window"]["label"] == "2026-W48"
    assert data["resolved"] == 5 and data["opened"] == 5
    assert data["mttr"] == {"count": 5, "mean": 40 * 60, "median": 30 * 60, "p90": 76 * 60}
    assert data["mtta"] == {"count": 4, "mean": 180, "median": 180, "p90": 282}


def test_started_counts_for_resolve_and_opened_for_acknowledge(local, store):
    add(store, started=T - timedelta(hours=2), opened=T - timedelta(hours=1), acked=T - timedelta(minutes=50),
        resolved=T)
    data = local().invoke("/mttr").data
    assert data["mttr"]["mean"] == 7200 and data["mtta"]["mean"] == 600


def test_an_incident_counts_in_the_week_it_was_resolved(local, store):
    add(store, opened=datetime(2026, 11, 15, 23, 0, tzinfo=UTC), resolved=datetime(2026, 11, 17, 1, 0, tzinfo=UTC))
    this_week = local().invoke("/mttr this-week").data
    last_week = local().invoke("/mttr last-week").data
    by_name = local().invoke("/mttr 2026-W47").data
    assert this_week["resolved"] == 0 and last_week["resolved"] == 1 and by_name == last_week
    assert last_week["opened"] == 0 and last_week["previous"]["opened"] == 1


def test_weeks_are_cut_in_the_configured_time_zone(local, store, make_config):
    # Sunday 23:30 UTC is already Monday 00:30 in Berlin: the next ISO week there.
    add(store, opened=datetime(2026, 11, 22, 23, 0, tzinfo=UTC), resolved=datetime(2026, 11, 22, 23, 30, tzinfo=UTC))
    assert local().invoke("/mttr this-week").data["resolved"] == 0
    berlin = local(make_config('timezone = "Europe/Berlin"')).invoke("/mttr this-week").data
    assert berlin["resolved"] == 1 and berlin["window"]["start"] == "2026-11-22T23:00:00Z"


def test_reopened_incidents_count_once_with_their_final_resolution(local, clock, store):
    runner = local()
    runner.invoke("/incident open flaky")
    clock.advance(minutes=10)
    runner.invoke("/incident resolve")
    clock.advance(minutes=5)
    runner.invoke("/incident reopen #1")
    clock.advance(minutes=15)
    runner.invoke("/incident resolve #1")
    data = runner.invoke("/mttr").data
    assert data["resolved"] == 1 and data["mttr"]["mean"] == 30 * 60


def test_filters_per_severity_slowest_and_open(local, store, clock):
    add(store, opened=T - timedelta(hours=5), resolved=T - timedelta(hours=1), severity=1, service="api", title="big")
    add(store, opened=T - timedelta(hours=2), resolved=T - timedelta(hours=1), severity=2, service="web", title="small")
    add(store, opened=T - timedelta(hours=3), severity=1, service="api", title="still burning")
    data = local().invoke("/mttr").data
    assert [(s["severity"], s["resolved"], s["mttr"]["mean"]) for s in data["by_severity"]] == [(1, 1, 14400), (2, 1, 3600)]
    assert [i["title"] for i in data["slowest"]] == ["big", "small"]
    assert [(i["title"], i["age"]) for i in data["open"]] == [("still burning", (clock() - (T - timedelta(hours=3))).total_seconds())]
    only_api = local().invoke("/mttr --service api --sev 1").data
    assert only_api["resolved"] == 1 and only_api["filters"] == {"service": "api", "severity": 1}


def test_week_over_week_change(local, store):
    add(store, opened=T - timedelta(days=7, hours=1), resolved=T - timedelta(days=7))   # W47: 60 min
    add(store, opened=T - timedelta(minutes=90), resolved=T)                              # W48: 90 min
    data = local().invoke("/mttr").data
    assert data["previous"]["label"] == "2026-W47"
    assert data["change"]["mttr_mean"] == 50.0 and data["change"]["resolved"] == 0.0


def test_several_weeks(local, store):
    add(store, opened=T - timedelta(days=20, hours=1), resolved=T - timedelta(days=20))
    data = local().invoke("/mttr --weeks 4").data
    assert data["window"]["label"] == "2026-W45 – 2026-W48" and data["resolved"] == 1
    assert data["previous"]["label"] == "2026-W41 – 2026-W44"


@pytest.mark.parametrize("text, message", [
    ("yesterday", "is not a period"), ("2026-W60", "is not a week of 2026"), ("last-week --weeks 2", "not both"),
    ("--weeks 0", "--weeks must be a whole number"), ("--sev 5", "--sev must be"), ("this-week last-week", "One period"),
    ("9999-W52", "weeks from 1971 to 2999 only"), ("0001-W01", "weeks from 1971 to 2999 only"),
    ("report 9999-W52", "weeks from 1971 to 2999 only"),
])
def test_bad_periods(local, text, message):
    reply = local().invoke(f"/mttr {text}")
    assert reply.outcome is Outcome.USAGE and message in reply.data["message"]


def test_the_report_renders_with_and_without_data(local, store):
    runner = local()
    empty = runner.invoke("/mttr")
    assert "*0* resolved" in runner.renderer.text(empty.template, empty.data)
    add(store, opened=T - timedelta(hours=1), resolved=T, acked=T - timedelta(minutes=55), title="db <!here>")
    text = runner.renderer.text("mttr", runner.invoke("/mttr").data)
    assert "median *1 h 00 m*" in text and "#1 db <!here>" in text
    slack = runner.renderer.slack("mttr", runner.invoke("/mttr").data)
    assert "&lt;!here&gt;" in str(slack.blocks) and "<!here>" not in str(slack.blocks)


def test_time_to_detect_mitigate_and_restore(local, store):
    start = T - timedelta(hours=2)
    for detect, mitigate, resolve in [(2, 10, 30), (None, 20, 60), (6, None, 90)]:
        incident = add(store, started=start, opened=start + timedelta(minutes=8),
                       resolved=start + timedelta(minutes=resolve))
        store.update_incident(incident, detected_at=start + timedelta(minutes=detect) if detect else None,
                              mitigated_at=start + timedelta(minutes=mitigate) if mitigate else None)
    reply = local().invoke("/mttr")
    data = reply.data
    assert data["mttd"] == {"count": 2, "mean": 4 * 60, "median": 4 * 60, "p90": round(5.6 * 60)}
    assert data["mttm"] == {"count": 2, "mean": 15 * 60, "median": 15 * 60, "p90": 19 * 60}
    assert data["time_to_restore"] == data["mttr"]["median"] == 60 * 60
    text = local().renderer.text(reply.template, data)
    assert "*Time to restore* (DORA: the median time to resolve): *1 h 00 m*" in text
    assert "*Time to acknowledge* (MTTA: opened → acknowledged): none of them was acknowledged" in text
    assert "(2 of 3 with a detection)" in text and "(2 of 3 mitigated)" in text
