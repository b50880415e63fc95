from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from bot.command import Audience, Outcome
from bot.config import Config
from bot.console import Local
from bot.dispatch import Invocation
from commands import registry


def test_open_announces_with_buttons_and_records_the_event(local, store):
    reply = local().invoke("/incident open checkout returns 500 --sev 2 --started 25m ago")
    assert reply.audience is Audience.ANNOUNCE and reply.outcome is Outcome.OK
    incident = reply.data["incident"]
    assert (incident.title, incident.severity, incident.status) == ("checkout returns 500", 2, "open")
    assert incident.started_at == datetime(2026, 11, 24, 13, 35, tzinfo=UTC)
    assert [e.kind for e in store.events(incident.id)] == ["opened"]
    text = local().renderer.text(reply.template, reply.data)
    assert "[Acknowledge: /incident ack #1]" in text and "[Resolve: /incident resolve #1]" in text


def test_the_whole_lifecycle(local, clock, store):
    runner = local()
    runner.invoke("/incident open db down")
    clock.advance(minutes=4, seconds=12)
    ack = runner.invoke("/incident ack")
    assert ack.audience is Audience.THREAD and ack.card is not None
    assert ack.data["time_to_acknowledge"] == 252
    clock.advance(minutes=10)
    update = runner.invoke("/incident update rolled back a1b2c3d\nwatching error rate")
    assert update.card is None and update.data["note"] == "rolled back a1b2c3d\nwatching error rate"
    clock.advance(minutes=52, seconds=48)
    resolved = runner.invoke("/incident resolve pool size back to 50")
    assert resolved.data["incident"].resolution == "pool size back to 50"
    assert resolved.data["ongoing_for"] is None
    assert "after 1 h 07 m.\n> pool size back to 50" in runner.renderer.text(resolved.template, resolved.data)
    assert runner.renderer.text(resolved.template, resolved.data).startswith("✅ @") and "1 h 07 m" in \
        runner.renderer.text(resolved.template, resolved.data)
    clock.advance(minutes=5)
    reopened = runner.invoke("/incident reopen")
    assert reopened.data["incident"].status == "acknowledged" and reopened.data["incident"].reopened == 1
    clock.advance(minutes=5)
    runner.invoke("/incident close again")
    timeline = runner.invoke("/incident timeline #1")
    kinds = [e.kind for e in timeline.data["events"]]
    assert kinds == ["opened", "acknowledged", "update", "resolved", "reopened", "resolved"]
    assert all(e.user == runner.user for e in timeline.data["events"])
    final = store.incident(1)
    assert final.resolved_at == datetime(2026, 11, 24, 15, 17, tzinfo=UTC)


def test_update_changes_fields_and_refreshes_the_card(local, store):
    runner = local()
    runner.invoke("/incident open api errors")
    reply = runner.invoke("/incident update --sev 1 --started 13:40")
    assert [c["field"] for c in reply.data["changes"]] == ["severity", "started_at"]
    assert reply.card is not None
    incident = store.incident(1)
    assert incident.severity == 1 and incident.started_at == datetime(2026, 11, 24, 13, 40, tzinfo=UTC)
    assert [e.kind for e in store.events(1)] == ["opened", "severity", "started_at"]


@pytest.mark.parametrize("command, message", [
    ("/incident open db down --started 15:30", "is in the future"),
    ("/incident open db down --started 2026-11-25T09:00", "is in the future"),
    ("/incident open db down --started yesterday", "is not a time"),
    ("/incident open db down --sev 7", "--sev must be 1, 2, 3 or 4"),
    ("/incident open --sev 1", "needs a title"),
    ("/incident frobnicate", "Unknown action 'frobnicate'"),
    ("/incident", "Say what to do"),
    ("/incident update", "Say what changed"),
    ("/incident list old", "list takes open or recent"),
])
def test_bad_text_gets_the_usage_line(local, command, message):
    runner = local()
    reply = runner.invoke(command)
    assert reply.outcome is Outcome.USAGE and reply.audience is Audience.CALLER
    assert message in reply.data["message"]
    assert "Usage: `/incident open <title>" in runner.renderer.text(reply.template, reply.data)


def test_a_start_after_resolution_is_refused(local, clock):
    runner = local()
    runner.invoke("/incident open db down")
    clock.advance(minutes=30)
    runner.invoke("/incident resolve")
    clock.advance(minutes=30)
    reply = runner.invoke("/incident update #1 --started 14:45")
    assert reply.outcome is Outcome.USAGE and "after the incident was resolved" in reply.data["message"]
    fixed = runner.invoke("/incident update #1 --started 13:50")
    assert fixed.outcome is Outcome.OK and fixed.data["time_to_resolve"] == 40 * 60


def test_which_incident(local, store):
    runner = local()
    assert runner.invoke("/incident ack").data["message"] == "No incident is open."
    runner.invoke("/incident open one")
    runner.invoke("/incident open two")
    ambiguous = runner.invoke("/incident ack")
    assert ambiguous.outcome is Outcome.FAILED
    assert [i.id for i in ambiguous.data["incidents"]] == [1, 2]
    assert "#1* one" in runner.renderer.text(ambiguous.template, ambiguous.data)
    assert runner.invoke("/incident ack #2").data["incident"].status == "acknowledged"
    missing = runner.invoke("/incident status #9")
    assert missing.data["message"] == "There is no incident #9." and len(missing.data["incidents"]) == 2


def test_elsewhere_no_incident_lists_the_open_ones(store, clock):
    console = Local(store, Config(), registry(), clock)
    console.invoke("/incident open db down")
    other = Local(store, Config(), registry(), clock)
    other_reply = other.dispatcher.run(_invocation("/incident ack", channel="C0OTHER01"))
    assert other_reply.data["message"].startswith("No incident is open in this channel")
    assert [i.id for i in other_reply.data["incidents"]] == [1]


def _invocation(line, channel):
    name, _, text = line.lstrip("/").partition(" ")
    return Invocation(command=name, text=text, user="U0BOB0001", channel=channel, request_id="t")


def test_double_submit_within_a_minute_opens_one_incident(local, clock, store):
    runner = local()
    first = runner.invoke("/incident open DB down")
    clock.advance(seconds=20)
    second = runner.invoke("/incident open db   down")
    assert second.template == "incident_already_open" and second.incident_id == first.incident_id
    clock.advance(seconds=50)
    third = runner.invoke("/incident open db down")
    assert third.template == "incident_card" and third.incident_id == 2


def test_concurrent_acks_ack_once(local, store):
    runner = local()
    runner.invoke("/incident open db down")
    with ThreadPoolExecutor(max_workers=10) as pool:
        replies = list(pool.map(lambda _: runner.invoke("/incident ack #1"), range(10)))
    assert sum(r.template == "incident_event" for r in replies) == 1
    assert sum(r.data.get("why") == "already_acknowledged" for r in replies) == 9
    assert [e.kind for e in store.events(1)].count("acknowledged") == 1


def test_notices_for_repeated_actions(local):
    runner = local()
    runner.invoke("/incident open db down")
    runner.invoke("/incident resolve")
    again = runner.invoke("/incident resolve #1")
    assert again.data["why"] == "already_resolved" and again.outcome is Outcome.OK
    ack = runner.invoke("/incident ack #1")
    assert ack.outcome is Outcome.FAILED and "reopen it first" in ack.data["message"]


def test_service_must_be_configured_when_services_are(local, make_config):
    runner = local(make_config('[services.api]\n[services.web]'))
    reply = runner.invoke("/incident open db down --service apu")
    assert reply.outcome is Outcome.USAGE and "configured: api, web" in reply.data["message"]
    assert runner.invoke("/incident open db down --service api").data["incident"].service == "api"


def test_list_and_status(local, clock):
    runner = local()
    runner.invoke("/incident open one")
    runner.invoke("/incident open two")
    runner.invoke("/incident resolve #1")
    listed = runner.invoke("/incident list")
    assert [item["incident"].id for item in listed.data["incidents"]] == [2]
    recent = runner.invoke("/incident list recent")
    assert [item["incident"].id for item in recent.data["incidents"]] == [2, 1]
    clock.advance(hours=1, minutes=7)
    status = runner.invoke("/incident status #2")
    assert "Ongoing for *1 h 07 m*" in runner.renderer.text(status.template, status.data)
    assert (status.data["time_to_resolve"], status.data["ongoing_for"]) == (None, 4020)  # scripts: open is not resolved


def test_announcement_goes_to_the_configured_incident_channel(local, make_config):
    reply = local(make_config('[slack]\nincident_channel = "C0123INC"')).invoke("/incident open x")
    assert reply.data["incident"].announce_channel == "C0123INC"
    assert reply.data["incident"].channel == "console"


def test_resolve_with_a_deploy_cause(local, store):
    runner = local()
    runner.invoke("/incident open bad deploy")
    reply = runner.invoke("/incident resolve reverted --cause deploy:A1B2C3D4")
    assert reply.data["incident"].cause == "deploy:a1b2c3d4"
    assert "Cause: `deploy:a1b2c3d4`" in runner.renderer.text(reply.template, reply.data)
    assert store.events(1)[-1].data == {"cause": "deploy:a1b2c3d4"}
    bad = runner.invoke("/incident update #1 --cause the-intern")
    assert bad.outcome is Outcome.USAGE and "--cause is deploy:<sha>" in bad.data["message"]
    changed = runner.invoke("/incident update #1 --cause deploy:ffffffff")
    assert changed.data["changes"] == [{"field": "cause", "old": "deploy:a1b2c3d4", "new": "deploy:ffffffff"}]
