import io
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from bot.command import Audience, Outcome
from bot.config import Config
from bot.console import Terminal
from bot.dispatch import Invocation
from commands import registry
from git_repo import GitRepo


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
    ("/incident frobnicate", "Unknown action 'frobnicate'. One of open"),
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
    console = Terminal(store, Config(), registry(), clock)
    console.invoke("/incident open db down")
    other = Terminal(store, Config(), registry(), clock)
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


T = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)   # the clock fixture's now


@pytest.fixture
def repos(tmp_path, make_config):
    """Two services with repositories: api (a tag v1.4 on its second commit) and web."""
    api, web = GitRepo(tmp_path / "api"), GitRepo(tmp_path / "web")
    shas = {"api1": api.commit("first", T - timedelta(days=2)), "api2": api.commit("second", T - timedelta(hours=2)),
            "web1": web.commit("web's", T - timedelta(hours=3))}
    api.tag("v1.4")
    config = make_config(f'[services.api]\nrepo = "{api.path}"\n[services.web]\nrepo = "{web.path}"\n'
                         '[services.docs]\n')
    return config, shas


def test_a_deploy_cause_is_the_whole_sha_of_a_commit_in_the_services_repository(local, store, repos):
    config, shas = repos
    runner = local(config)
    runner.invoke("/incident open bad deploy --service api")
    reply = runner.invoke(f"/incident resolve reverted --cause deploy:{shas['api2'][:7].upper()}")
    assert reply.outcome is Outcome.OK and reply.data["incident"].cause == f"deploy:{shas['api2']}"
    assert store.events(1)[-1].data == {"cause": f"deploy:{shas['api2']}"}
    text = runner.renderer.text(reply.template, reply.data)
    assert f"Cause: `deploy {shas['api2'][:10]}`" in text and shas["api2"] not in text   # shown short
    assert runner.invoke(f"/incident update #1 --cause deploy:{shas['api1']}").data["changes"] == [
        {"field": "cause", "old": f"deploy:{shas['api2']}", "new": f"deploy:{shas['api1']}"}]
    assert store.incident(1).cause == f"deploy:{shas['api1']}"
    runner.invoke("/incident update #1 --cause deploy:v1.4")                 # a tag: its commit
    assert store.incident(1).cause == f"deploy:{shas['api2']}"
    for ref in ("deadbeef", shas["web1"], "v9.9"):                          # web's commit is not api's
        refused = runner.invoke(f"/incident update #1 --cause deploy:{ref}")
        assert refused.outcome is Outcome.FAILED and "no commit or tag" in refused.data["message"]
    assert store.incident(1).cause == f"deploy:{shas['api2']}" and runner.invoke(
        "/incident update #1 --cause the-intern").outcome is Outcome.USAGE


def test_a_deploy_cause_without_a_service_is_looked_up_in_every_repository(local, store, repos):
    config, shas = repos
    runner = local(config)
    runner.invoke("/incident open bad deploy")
    assert runner.invoke("/incident resolve --cause deploy:deadbeef").outcome is Outcome.FAILED
    assert store.incident(1).status == "open"                               # refused: nothing changed
    assert runner.invoke(f"/incident resolve --cause deploy:{shas['web1'][:8]}").outcome is Outcome.OK
    assert store.incident(1).cause == f"deploy:{shas['web1']}"
    runner.invoke("/incident open docs down --service docs")                # a service without a repo
    refused = runner.invoke(f"/incident resolve #2 --cause deploy:{shas['web1']}")
    assert refused.outcome is Outcome.FAILED and "docs has no repo" in refused.data["message"]


def test_a_deploy_cause_cannot_be_checked_without_any_repository(local):
    runner = local()
    runner.invoke("/incident open bad deploy")
    reply = runner.invoke("/incident resolve --cause deploy:a1b2c3d4")
    assert reply.outcome is Outcome.FAILED and "No service has a repo" in reply.data["message"]


# -- #N inside prose -----------------------------------------------------------------------------


@pytest.mark.parametrize("line, target, note", [
    ("/incident update see PR #1 for the fix", 2, "see PR #1 for the fix"),
    ("/incident update #1 see PR #2", 1, "see PR #2"),
    ("/incident #1 update see PR #2", 1, "see PR #2"),
    ("/incident update --sev 1 #1 tidy", 1, "tidy"),
    ("/incident update fixed in #1, see #2", 2, "fixed in #1, see #2"),
])
def test_only_a_leading_incident_number_names_the_incident(local, store, line, target, note):
    runner = local()
    runner.invoke("/incident open one")
    runner.invoke("/incident resolve #1")
    runner.invoke("/incident open two")
    reply = runner.invoke(line)
    assert reply.outcome is Outcome.OK and reply.incident_id == target and reply.data["note"] == note
    assert store.events(target)[-1].text == note


def test_a_resolution_that_mentions_another_incident_resolves_this_one(local, store):
    runner = local()
    for title in ("one", "two", "three", "four", "five"):
        runner.invoke(f"/incident open {title}")
    for n in (1, 2, 3, 4):
        runner.invoke(f"/incident resolve #{n}")
    reply = runner.invoke("/incident resolve fixed by reverting #5 of last week")
    assert reply.incident_id == 5 and store.incident(5).resolution == "fixed by reverting #5 of last week"
    runner.invoke("/incident open six")
    runner.invoke("/incident ack waiting on #5's fix")
    assert store.incident(6).status == "acknowledged" and store.events(6)[-1].text == "waiting on #5's fix"


@pytest.mark.parametrize("line, meant", [("/incident ack 1", "Did you mean #1?"),
                                         ("/incident resolve 12", "Did you mean #12?"),
                                         ("/incident status 3", "Did you mean #3?"),
                                         ("/incident opne db down", "Did you mean open?"),
                                         ("/incident reslove", "Did you mean resolve?"),
                                         ("/incident timelime #1", "Did you mean timeline?")])
def test_near_misses_are_asked_about_and_change_nothing(local, store, line, meant):
    runner = local()
    runner.invoke("/incident open one")
    runner.invoke("/incident open two")
    reply = runner.invoke(line)
    assert reply.outcome is Outcome.USAGE and meant in reply.data["message"]
    assert [store.incident(n).status for n in (1, 2)] == ["open", "open"] and len(store.events(1)) == 1


# -- correcting times ------------------------------------------------------------------------------


def test_acknowledged_and_resolved_times_can_be_corrected(local, clock, store):
    runner = local()
    runner.invoke("/incident open db down")                                  # 14:00
    clock.advance(minutes=5)
    runner.invoke("/incident ack")
    clock.advance(hours=3)
    runner.invoke("/incident resolve")                                       # forgotten until 17:05
    reply = runner.invoke("/incident update #1 --acked 14:02 --resolved 14:40")
    assert reply.outcome is Outcome.OK
    assert [c["field"] for c in reply.data["changes"]] == ["acknowledged_at", "resolved_at"]
    assert [e.kind for e in store.events(1)][-2:] == ["acknowledged_at", "resolved_at"]
    assert (reply.data["time_to_resolve"], reply.data["time_to_acknowledge"]) == (40 * 60, 2 * 60)
    assert reply.card is not None
    text = runner.renderer.text(reply.template, reply.data)
    assert "• acknowledged: 14:05 UTC → *14:02 UTC*" in text and "• resolved: 17:05 UTC → *14:40 UTC*" in text
    out, err = io.StringIO(), io.StringIO()
    assert runner.run("/incident status #1", as_json=True, out=out, err=err) == 0
    assert json.loads(out.getvalue())["time_to_resolve"] == 40 * 60
    mttr = runner.invoke("/mttr")
    assert mttr.data["mttr"]["median"] == 40 * 60 and mttr.data["mtta"]["median"] == 2 * 60
    timeline = runner.renderer.text("incident_timeline", runner.invoke("/incident timeline #1").data)
    assert "*resolved time*: 17:05 UTC → 14:40 UTC" in timeline


@pytest.mark.parametrize("line, message", [
    ("/incident update #1 --acked 13:55", "--acked 13:55: 2026-11-24 13:55 UTC is before the incident was opened"),
    ("/incident update #1 --resolved 14:03", "--resolved 14:03: 2026-11-24 14:03 UTC is before the incident was acknowledged"),
    ("/incident update #1 --acked 14:40", "--acked 14:40: 2026-11-24 14:40 UTC is after the incident was resolved"),
    ("/incident update #1 --started 14:45", "--started 14:45: 2026-11-24 14:45 UTC is after the incident was acknowledged"),
    ("/incident update #1 --resolved 14:30 --acked 14:31", "is before the incident was acknowledged"),
    ("/incident update #1 --resolved 15:40", "is in the future"),
    ("/incident update #1 --resolved someday", "--resolved: 'someday' is not a time"),
    ("/incident update #2 --acked 14:10", "#2 is not acknowledged yet; /incident ack #2 first"),
    ("/incident update #2 --resolved 14:10", "#2 is not resolved yet; /incident resolve #2 first"),
    ("/incident update #1 --detected 13:45", "--detected 13:45: 2026-11-24 13:45 UTC is before the incident was started"),
    ("/incident update #1 --detected 14:01", "--detected 14:01: 2026-11-24 14:01 UTC is after the incident was opened"),
    ("/incident update #1 --mitigated 13:49", "--mitigated 13:49: 2026-11-24 13:49 UTC is before the incident was started"),
    ("/incident update #1 --mitigated 14:36", "--mitigated 14:36: 2026-11-24 14:36 UTC is after the incident was resolved"),
    ("/incident update #1 --detected 13:58 --mitigated 13:57", "is before the incident was detected"),
    ("/incident update #1 --started 13:58 --detected 13:55", "is before the incident was started"),
])
def test_corrected_times_keep_their_order(local, clock, store, line, message):
    runner = local()
    runner.invoke("/incident open db down --started 13:50")                  # opened 14:00
    clock.advance(minutes=5)
    runner.invoke("/incident ack #1")
    clock.advance(minutes=30)
    runner.invoke("/incident resolve #1")                                    # 14:35
    runner.invoke("/incident open another")
    clock.advance(hours=1)                                                   # 15:35
    before = (store.incident(1), store.incident(2), len(store.events(1)))
    reply = runner.invoke(line)
    assert reply.outcome is Outcome.USAGE and message in reply.data["message"]
    assert (store.incident(1), store.incident(2), len(store.events(1))) == before


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


def test_the_list_says_how_long_an_incident_has_been_going_not_how_long_it_was_acknowledged(local, clock):
    runner = local()
    runner.invoke("/incident open db down --started 30m ago")
    clock.advance(minutes=50)
    runner.invoke("/incident ack")
    clock.advance(minutes=10)
    listed = runner.invoke("/incident list")
    text = runner.renderer.text(listed.template, listed.data)
    assert "acknowledged · ongoing for 1 h 30 m" in text and "acknowledged for" not in text


def test_timeline_filters_mine_and_people(local, store):
    runner = local()
    runner.invoke("/incident open db down")
    incident = store.incident(1)
    store.add_event(1, at=incident.opened_at, user="U0BOB0001", kind="update", text="bob looked")
    store.add_event(1, at=incident.opened_at, user=runner.user, kind="probe", text="/probe db: 1 down (db/main)")
    store.add_event(1, at=incident.opened_at, user="U0BOB0001", kind="logs", text="/logs db: nothing matched")
    store.add_event(1, at=incident.opened_at, user=None, kind="update", text="nobody's")
    store.add_event(1, at=incident.opened_at, user="oncall-bot", kind="alerts", text="alertmanager firing: X")

    def timeline(flags):
        reply = runner.invoke(f"/incident timeline {flags}")
        return [(e.user, e.kind) for e in reply.data["events"]], runner.renderer.text(reply.template, reply.data)

    mine, text = timeline("--mine")
    assert mine == [(runner.user, "opened"), (runner.user, "probe")] and "your entries" in text
    assert "/probe db: 1 down (db/main)" in text and "*probe*" not in text      # a finding is its one line
    people, text = timeline("--people")
    assert people == [(runner.user, "opened"), ("U0BOB0001", "update")] and "people's entries" in text
    both, _ = timeline("--people --mine #1")
    assert both == [(runner.user, "opened")]
    everything, _ = timeline("")
    assert len(everything) == 6
    status = runner.invoke("/incident status")
    latest = runner.renderer.text(status.template, status.data)
    assert f"@{runner.user} /probe db: 1 down (db/main)" in latest and "probe: /probe" not in latest


@pytest.mark.parametrize("line, says", [
    ("/incident timeline --mine junk", "timeline takes an incident number (#12), --mine"),
    ("/incident timeline --mine=yes", "--mine takes no value"),
    ("/incident status --people", "unknown option --people"),
])
def test_timeline_filters_misused_get_the_usage(local, line, says):
    runner = local()
    runner.invoke("/incident open db down")
    reply = runner.invoke(line)
    assert reply.outcome is Outcome.USAGE and says in reply.data["message"]


# -- milestones: detected, mitigated ---------------------------------------------------------------


def test_mitigate_records_the_moment_once_with_its_note(local, clock, store):
    runner = local()
    runner.invoke("/incident open db down --started 13:50")                  # opened 14:00
    clock.advance(minutes=12)
    reply = runner.invoke("/incident mitigate rolled back to v41")
    assert reply.outcome is Outcome.OK and reply.card is not None
    assert store.incident(1).mitigated_at == datetime(2026, 11, 24, 14, 12, tzinfo=UTC)
    (event,) = [e for e in store.events(1) if e.kind == "mitigated"]
    assert (event.user, event.text, event.data) == (runner.user, "rolled back to v41", {"source": {"kind": "person"}})
    text = runner.renderer.text(reply.template, reply.data)
    assert "mitigated #1, 22 m 00 s after it started" in text and "> rolled back to v41" in text
    assert "*Mitigated* at 14:12 UTC" in runner.renderer.text(reply.card.template, reply.card.data)
    clock.advance(minutes=3)
    again = runner.invoke("/incident mitigate")
    assert "already mitigated at 14:12 UTC" in runner.renderer.text(again.template, again.data)
    assert store.incident(1).mitigated_at == datetime(2026, 11, 24, 14, 12, tzinfo=UTC)
    runner.invoke("/incident resolve")
    refused = runner.invoke("/incident mitigate #1")
    assert refused.outcome is Outcome.FAILED and "is resolved" in refused.data["message"]


def test_each_milestone_can_be_corrected_and_each_correction_is_in_the_timeline(local, clock, store):
    runner = local()
    runner.invoke("/incident open db down --started 13:50")                  # opened 14:00
    clock.advance(minutes=20)
    runner.invoke("/incident mitigate")                                      # 14:20
    clock.advance(minutes=40)
    reply = runner.invoke("/incident update #1 --detected 13:56 --mitigated 14:10 --started 13:52")
    assert reply.outcome is Outcome.OK
    assert [c["field"] for c in reply.data["changes"]] == ["started_at", "detected_at", "mitigated_at"]
    assert [e.kind for e in store.events(1)][-3:] == ["started_at", "detected_at", "mitigated_at"]
    assert store.events(1)[-2].data == {"field": "detected_at", "old": None, "new": "2026-11-24T13:56:00Z"}
    assert (reply.data["time_to_detect"], reply.data["time_to_mitigate"]) == (4 * 60, 18 * 60)
    text = runner.renderer.text(reply.template, reply.data)
    assert "• detected: — → *13:56 UTC*" in text
    assert "• mitigated: 14:20 UTC → *14:10 UTC*" in text
    timeline = runner.renderer.text("incident_timeline", runner.invoke("/incident timeline #1").data)
    assert "*mitigated time*: 14:20 UTC → 14:10 UTC" in timeline and "*mitigated*" in timeline
