"""Workers and the work queue: what Slack asked is done once, whatever dies when."""

import time
from dataclasses import asdict

import pytest

from bot.app import SlackEnv, web_client
from bot.command import Command, Reply
from bot.config import Config
from bot.dispatch import Invocation
from bot.render import Renderer
from bot.store import StoreUnavailable
from bot.worker import COMMAND, LEASE, MAX_ATTEMPTS, Worker
from commands import registry
from slack_double import eventually


def worker(store, clock, slack_double, commands=None) -> Worker:
    env = SlackEnv("xoxb-worker", "", slack_double.api_url)
    return Worker(store, Config(), {**registry(), **(commands or {})}, web_client(env), Renderer(Config().timezone, clock),
                  clock)


def queue(store, clock, text: str, key: str) -> bool:
    invocation = Invocation("incident", text, "U0ALICE01", "C0WORKER1", request_id=key)
    return store.queue_work(key, COMMAND, {"invocation": asdict(invocation)}, clock())


def test_work_a_dead_worker_had_claimed_is_taken_over_when_its_lease_ends(store, clock, slack_double):
    queue(store, clock, "open taken over", "command:t1")
    assert store.claim_work(clock(), LEASE) is not None      # claimed by a worker that then died
    survivor = worker(store, clock, slack_double)
    survivor.start()
    try:
        time.sleep(0.3)                                        # it polls, but the work is leased
        assert not slack_double.called("chat.postMessage")
        clock.advance(seconds=LEASE.total_seconds() + 1)
        survivor.wake()
        (post,) = slack_double.wait_for("chat.postMessage", timeout=10)
        assert "taken over" in post.args["text"]
        eventually(lambda: store.work_pending() == 0)
    finally:
        survivor.stop(2)


def test_a_command_interrupted_midway_leaves_nothing_and_is_done_again(store, clock, slack_double):
    runs = []

    def dies_after_writing(ctx, args):
        ctx.store.insert_incident(title="half", severity=3, service=None, status="open", opened_by=ctx.user,
                                  opened_at=ctx.now(), started_at=ctx.now(), channel=ctx.channel,
                                  announce_channel=ctx.channel)
        runs.append(1)
        if len(runs) == 1:
            raise SystemExit("killed")      # the process dies between the state and its messages
        return Reply("incident_card", {"incident": ctx.store.recent_incidents(1)[0]})

    command = Command("dies", "dies", "", lambda text: text, dies_after_writing)
    invocation = Invocation("dies", "", "U0ALICE01", "C0WORKER1", request_id="r-dies")
    store.queue_work("command:dies", COMMAND, {"invocation": asdict(invocation)}, clock())
    first = worker(store, clock, slack_double, {"dies": command})
    item = store.claim_work(clock(), LEASE)
    try:
        first._run(item, invocation)
    except SystemExit:
        pass
    assert store.recent_incidents(5) == [] and store.outbox_pending() == 0 and store.work_pending() == 1
    clock.advance(seconds=LEASE.total_seconds() + 1)
    again = store.claim_work(clock(), LEASE)
    first._run(again, invocation)
    assert [i.title for i in store.recent_incidents(5)] == ["half"] and store.work_pending() == 0
    assert store.outbox_pending() == 1


def test_a_command_the_store_fails_under_is_done_again_not_answered(store, clock, slack_double):
    runs = []

    def store_lost_midway(ctx, args):
        runs.append(1)
        ctx.store.insert_incident(title="after the outage", severity=3, service=None, status="open",
                                  opened_by=ctx.user, opened_at=ctx.now(), started_at=ctx.now(), channel=ctx.channel,
                                  announce_channel=ctx.channel)
        if len(runs) == 1:
            raise StoreUnavailable("the database restarted")
        return Reply("incident_card", {"incident": ctx.store.recent_incidents(1)[0]})

    command = Command("outage", "outage", "", lambda text: text, store_lost_midway)
    invocation = Invocation("outage", "", "U0ALICE01", "C0WORKER1", request_id="r-outage")
    store.queue_work("command:outage", COMMAND, {"invocation": asdict(invocation)}, clock())
    survivor = worker(store, clock, slack_double, {"outage": command})
    with pytest.raises(StoreUnavailable):     # to the worker's loop, which leaves the work for its lease
        survivor._run(store.claim_work(clock(), LEASE), invocation)
    # Not "something went wrong", nor anything else: nothing was written, and the work waits.
    assert store.recent_incidents(5) == [] and store.outbox_pending() == 0 and store.work_pending() == 1
    clock.advance(seconds=LEASE.total_seconds() + 1)
    survivor._run(store.claim_work(clock(), LEASE), invocation)
    assert [i.title for i in store.recent_incidents(5)] == ["after the outage"] and store.work_pending() == 0


def test_work_claimed_too_often_is_told_as_cut_short(store, clock, slack_double):
    queue(store, clock, "open never finishes", "command:t3")
    for _ in range(MAX_ATTEMPTS):
        assert store.claim_work(clock(), LEASE) is not None
        clock.advance(seconds=LEASE.total_seconds() + 1)
    last = worker(store, clock, slack_double)
    last.start()
    try:
        (told,) = slack_double.wait_for("chat.postEphemeral", timeout=10)
        assert "cut short" in told.args["text"] and store.recent_incidents(5) == []
        eventually(lambda: store.work_pending() == 0)
    finally:
        last.stop(2)


def test_alert_work_claimed_too_often_is_said_in_the_channel_not_dropped_in_silence(store, clock, slack_double,
                                                                                     make_config):
    from commands import inbound

    config = make_config('[slack]\nincident_channel = "C0INCIDNT"\n'
                         '[alerts.sources.cron]\nkind = "generic"\ntoken = "t"\n')
    store.queue_work("alerts:cron:x", "alerts", {"endpoint": "cron", "request_id": "r-alert", "payload": {}}, clock())
    for _ in range(MAX_ATTEMPTS):
        assert store.claim_work(clock(), LEASE) is not None
        clock.advance(seconds=LEASE.total_seconds() + 1)
    env = SlackEnv("xoxb-worker", "", slack_double.api_url)
    last = Worker(store, config, registry(), web_client(env), Renderer(config.timezone, clock), clock,
                  inbound=inbound())
    last.start()
    try:
        (told,) = slack_double.wait_for("chat.postMessage", timeout=10)
        assert told.args["channel"] == "C0INCIDNT" and "`/alerts/cron` was taken 3 times" in told.args["text"]
        assert "r-alert" in told.args["text"] and store.recent_incidents(5) == []
        eventually(lambda: store.work_pending() == 0)
    finally:
        last.stop(2)
