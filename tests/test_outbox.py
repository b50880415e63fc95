"""The outbox posts a message once, whatever became of an earlier attempt: an answer after the
client's timeout, a connection dropped after the request went out, a sender killed mid-call. Driven
directly (send_one), on both stores, against the Slack double, with the bot's own Web API client."""

from __future__ import annotations

import pytest

from bot.app import SlackEnv, web_client
from bot.config import Config
from bot.outbox import LEASE, Outbox
from bot.render import Renderer
from bot.store import Store

CHANNEL = "C0INCIDNT"
CLIENT_TIMEOUT = 1      # seconds; the bot's is 10, so a late answer here comes after 1.5 s, not 15


@pytest.fixture
def sender(store, slack_double, clock):
    """sender() -> an Outbox as a bot process has it (a new one stands for a new process)."""

    def make() -> Outbox:
        client = web_client(SlackEnv("xoxb-test-token", "secret", slack_double.api_url))
        client.timeout = CLIENT_TIMEOUT
        return Outbox(store, client, Renderer(Config().timezone, clock), clock)

    return make


def incident_with_announcement(store: Store, clock) -> tuple[int, int]:
    incident_id = store.insert_incident(title="db down", severity=1, status="open", opened_by="U0ALICE01",
                                        opened_at=clock(), started_at=clock(), channel=CHANNEL)
    announce = store.enqueue(kind="announce", payload={"text": "Incident #1: db down"}, now=clock(),
                             incident_id=incident_id, channel=CHANNEL, user="U0ALICE01")
    return incident_id, announce


def tags(slack_double) -> list[int]:
    return [message["metadata"]["event_payload"]["outbox_id"] for message in slack_double.posted(CHANNEL)]


def test_every_post_carries_its_outbox_id_in_message_metadata(store, slack_double, sender, clock):
    incident_id, announce = incident_with_announcement(store, clock)
    reply = store.enqueue(kind="message", payload={"text": "rolled back"}, now=clock(), incident_id=incident_id)
    outbox = sender()
    assert outbox.send_one() and outbox.send_one()
    (first, second) = slack_double.called("chat.postMessage")
    assert first.args["metadata"] == {"event_type": "oncall_outbox",
                                      "event_payload": {"outbox_id": announce, "queued_at": "2026-11-24T14:00:00Z"}}
    assert second.args["metadata"]["event_payload"]["outbox_id"] == reply
    assert not slack_double.called("conversations.history")    # nothing was in doubt: nothing looked up


def test_an_announcement_answered_after_the_timeout_appears_once(store, slack_double, sender, clock):
    incident_id, announce = incident_with_announcement(store, clock)
    reply = store.enqueue(kind="message", payload={"text": "rolled back"}, now=clock(), incident_id=incident_id)
    slack_double.answer_late("chat.postMessage", CLIENT_TIMEOUT + 0.5)
    outbox = sender()
    assert outbox.send_one()                  # Slack posts it, but the answer comes after the client gave up
    assert store.incident(incident_id).thread_ts is None and store.outbox_pending() == 2
    clock.advance(seconds=2)                  # the retry is due
    assert outbox.send_one() and outbox.send_one()
    assert tags(slack_double) == [announce, reply]             # once each, in order
    (announcement, in_thread) = slack_double.posted(CHANNEL)
    assert store.incident(incident_id).thread_ts == announcement["ts"] == in_thread["thread_ts"]
    assert store.outbox_sent_message(announce) == (CHANNEL, announcement["ts"])
    (looked,) = slack_double.called("conversations.history")
    assert looked.args["channel"] == CHANNEL and looked.args["include_all_metadata"] in ("1", "true")


def test_a_thread_reply_whose_connection_dropped_after_sending_appears_once(store, slack_double, sender, clock):
    incident_id, _ = incident_with_announcement(store, clock)
    outbox = sender()
    assert outbox.send_one()
    reply = store.enqueue(kind="message", payload={"text": "rolled back"}, now=clock(), incident_id=incident_id)
    slack_double.hang_up("chat.postMessage")  # posted, then the connection closes without an answer
    assert outbox.send_one()
    clock.advance(seconds=2)
    assert outbox.send_one()
    replies = [message for message in slack_double.posted(CHANNEL) if message.get("thread_ts")]
    assert [message["metadata"]["event_payload"]["outbox_id"] for message in replies] == [reply]
    assert slack_double.called("conversations.replies") and store.outbox_pending() == 0


@pytest.mark.parametrize("killed", ["after Slack took the post", "before the post reached Slack"])
def test_a_sender_killed_mid_call_leads_to_exactly_one_message(store, slack_double, sender, clock, monkeypatch,
                                                               killed):
    incident_id, announce = incident_with_announcement(store, clock)
    if killed == "after Slack took the post":
        def killed_now(*args, **kwargs):
            raise SystemExit("kill -9")

        with monkeypatch.context() as patched:
            patched.setattr(store, "outbox_sent", killed_now)
            with pytest.raises(SystemExit):
                sender().send_one()
        assert len(slack_double.posted(CHANNEL)) == 1
    else:
        assert store.claim_outbox(clock(), LEASE).id == announce        # claimed, then gone
    assert sender().send_one() is False       # its lease still runs: nobody else takes it
    clock.advance(seconds=LEASE.total_seconds() + 1)
    assert sender().send_one()                # the next process takes the item over, in doubt
    assert tags(slack_double) == [announce]
    assert store.incident(incident_id).thread_ts == slack_double.posted(CHANNEL)[0]["ts"]
    assert store.outbox_pending() == 0


def test_a_failure_slack_answered_is_retried_without_looking(store, slack_double, sender, clock):
    _, announce = incident_with_announcement(store, clock)
    slack_double.fail("chat.postMessage", error="service_unavailable")   # Slack said: not done
    outbox = sender()
    assert outbox.send_one()
    clock.advance(seconds=2)
    assert outbox.send_one()
    assert tags(slack_double) == [announce] and not slack_double.called("conversations.history")


def test_without_the_history_scopes_a_message_in_doubt_is_posted_rather_than_lost(store, slack_double, sender,
                                                                                  clock, caplog):
    _, announce = incident_with_announcement(store, clock)
    store.claim_outbox(clock(), LEASE)
    clock.advance(seconds=LEASE.total_seconds() + 1)
    slack_double.fail("conversations.history", error="missing_scope")
    assert sender().send_one()
    assert tags(slack_double) == [announce] and "cannot look for an earlier post" in caplog.text
