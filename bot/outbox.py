"""The outbox: every message to Slack is written to the store first (`post`), then sent by one thread.

So a failed post loses nothing: it is retried with backoff (and after a restart) until Slack
takes it. Items of one incident keep their order (the announcement, whose ts becomes the thread,
goes first). Slack's 429s are retried by slack_sdk's handler after Retry-After; other transient
failures wait in the outbox; permanent ones (the bot is not in a private channel, say) are
reported privately to whoever asked.

A message is posted once, even when a post's outcome is unknown: Slack answering after the
client's timeout, the connection lost after the request went out, the sender killed mid-call.
Every message carries the item's id in its metadata, a claimed item stays marked in flight until
its outcome is recorded, and an item claimed while still so marked (`in_doubt`) is first looked
for in the channel's (or thread's) recent history: found, it is recorded as sent with that ts.
Such a post is never retried at once by slack_sdk's connection-error handler for the same reason.
"""

from __future__ import annotations

import base64
import copy
import http.client
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any
from urllib.error import URLError

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler
from slack_sdk.webhook import WebhookClient

from bot.command import Audience, Reply
from bot.config import SlackSettings
from bot.dispatch import Invocation
from bot.jsonlog import request_id
from bot.render import Renderer, SlackMessage
from bot.store import Incident, OutboxItem, Store
from bot.times import to_iso

LEASE = timedelta(seconds=30)      # longer than one send with its retries after 429s
MAX_BACKOFF_SECONDS = 60
EPHEMERAL_LIFETIME = timedelta(minutes=30)   # a response_url stops working after 30 minutes
MESSAGE_LIFETIME = timedelta(hours=24)
RESPONSE_URL_TIMEOUT = 10
PRUNE_EVERY = timedelta(hours=1)
_TRANSIENT_ERRORS = {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout",
                     "team_access_not_granted"}
_MAYBE_DONE_ERRORS = {"internal_error", "fatal_error"}   # Slack: "some aspect of the operation may have succeeded"
METADATA_EVENT = "oncall_outbox"
FORM_CALLBACK = "form:"   # a modal's callback_id: form:<command>
MAX_METADATA = 3000       # a view's private_metadata
HISTORY_PAGE = 200       # messages per conversations.history/.replies page
HISTORY_PAGES = 5        # how far back an earlier post is looked for: a channel's newest 1,000 messages
                         # (a thread's first 1,000 replies)

log = logging.getLogger(__name__)


_Row = tuple[str, dict[str, Any], dict[str, Any]]     # an outbox row to write: kind, payload, where it goes


class PermanentFailure(Exception):
    """Slack refused the item for a reason retrying cannot fix."""


class TransientFailure(Exception):
    """Slack could not be reached, or asked us to come back later; `in_doubt` when the call may
    have been done all the same (no answer came)."""

    def __init__(self, message: str, *, in_doubt: bool = False):
        super().__init__(message)
        self.in_doubt = in_doubt


class Outbox:
    def __init__(self, store: Store, client: WebClient, renderer: Renderer, clock: Callable[[], datetime],
                 retention: timedelta = SlackSettings.outbox_retention):
        self.store = store
        self.client = client
        self.renderer = renderer
        self.clock = clock
        self.retention = retention
        self._pruned_at: datetime | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def progress(self, reply: Reply, invocation: Invocation, message_id: int | None) -> int:
        """Show a command's progress: the first time as a message (in the incident thread or the
        channel), then by updating that message in place. Returns the message's outbox id."""
        if message_id is not None:
            self.post(reply, invocation, replacing=message_id)
            return message_id
        message = self.renderer.slack(reply.template, reply.data)
        message_id = self.store.enqueue(kind="message", payload={"text": message.text, "blocks": message.blocks},
                                        **self._place(reply, invocation), **self._common(invocation))
        self.wake()
        return message_id

    def post(self, reply: Reply, invocation: Invocation, *, replacing: int | None = None) -> None:
        """Write the reply's messages to the outbox, in the order they must reach Slack.

        Everything is rendered before the first row is written: inside a worker's atomic unit the
        first write takes the store's write lock, and it is held until the unit ends.
        `replacing`: the outbox id of a progress message that this reply replaces in place.
        A reply `in_place` finds its message and writes its rows in one unit of work, so two such
        replies at once post one message (its rendering waits in the unit: one short message).
        """
        if reply.in_place is None:
            self._queue(reply, invocation, replacing)
            return
        with self.store.write():
            self._queue(reply, invocation, replacing)

    def _queue(self, reply: Reply, invocation: Invocation, replacing: int | None) -> None:
        rows = self._reply_rows(reply, invocation, replacing)
        for then in reply.then:
            rows += self._reply_rows(then, invocation, None, point=False)
        for kind, payload, where in rows:
            self.store.enqueue(kind=kind, payload=payload, **where)
        self.wake()

    def _reply_rows(self, reply: Reply, invocation: Invocation, replacing: int | None, *,
                    point: bool = True) -> list[_Row]:
        """The outbox rows of one reply, rendered; `point`: tell a caller in another channel where it went."""
        common = self._common(invocation)
        if reply.audience is Audience.FORM:
            view = self.renderer.view(reply.template, reply.data)
            # The form's submission comes back with these: which command takes it, and where it was asked.
            view.update(callback_id=f"{FORM_CALLBACK}{invocation.command}",
                        private_metadata=_form_metadata(invocation.channel, invocation.quote))
            return [("form", {"trigger_id": invocation.trigger_id, "view": view}, {"channel": invocation.channel,
                                                                                  **common})]
        message = self.renderer.slack(reply.template, reply.data)
        incident = self.store.incident(reply.incident_id) if reply.incident_id else None
        rows: list[_Row] = []
        if replacing is not None:
            rows += self._rows("update_message", message, {**self._place(reply, invocation), **common}, replacing)
        elif reply.audience in (Audience.THREAD, Audience.ANNOUNCE) and incident is not None:
            kind = "announce" if reply.audience is Audience.ANNOUNCE else "message"
            where = {"channel": incident.announce_channel, "incident_id": incident.id, **common}
            earlier = self.store.outbox_keyed(reply.in_place) if reply.in_place else None
            if earlier is not None:
                rows += self._rows("update_message", message, where, earlier)
            else:
                rows += self._rows(kind, message, {**where, "key": reply.in_place} if reply.in_place else where)
            if point and invocation.channel not in (None, incident.announce_channel):  # None: the App Home
                pointer = self.renderer.slack("pointer", {"incident": incident})
                rows += self._rows("ephemeral", pointer, {"channel": invocation.channel, **common})
        elif reply.audience is Audience.CHANNEL:
            rows += self._rows("message", message, {"channel": invocation.channel, **common})
        else:
            rows += self._rows("ephemeral", message, {"channel": invocation.channel, **common})
        for upload in reply.files:
            rows.append(("upload", {"filename": upload.filename, "title": upload.title,
                                    "content_base64": base64.b64encode(self.renderer.file(upload)).decode()},
                         {**self._place(reply, invocation), **common}))
        if reply.card is not None and incident is not None:
            card = self.renderer.slack(reply.card.template, reply.card.data)
            rows += self._rows("update", card, {"channel": incident.announce_channel, "incident_id": incident.id,
                                                **common})
        return rows

    @staticmethod
    def _place(reply: Reply, invocation: Invocation) -> dict[str, Any]:
        """Where a reply's message goes when it is not private: its incident's thread, else the channel."""
        return {"incident_id": reply.incident_id} if reply.incident_id else {"channel": invocation.channel}

    def _common(self, invocation: Invocation) -> dict[str, Any]:
        return {"now": self.clock(), "request_id": invocation.request_id, "user": invocation.user,
                "response_url": invocation.response_url}

    def _rows(self, kind: str, message: SlackMessage, where: dict[str, Any], target: int | None = None) -> list[_Row]:
        """The outbox rows of one message: the message, and the file it overflows into, if any."""
        blocks = message.blocks
        if message.overflow is not None and kind == "ephemeral":
            # A private answer cannot carry a file: it goes to the asker's direct messages, and the answer says so.
            blocks = blocks[:-1] + self.renderer.slack("overflow_private", {}).blocks
        rows: list[_Row] = [(kind, {"text": message.text, "blocks": blocks, **({"target": target} if target else {})},
                             where)]
        if message.overflow is not None and kind != "update":
            upload: dict[str, Any] = {"content": message.overflow, "filename": "oncall-bot.txt",
                                      "title": message.text[:100]}
            if kind == "ephemeral":
                rows.append(("upload_dm", upload, {**where, "incident_id": None}))
            else:
                rows.append(("upload", upload, where))
        return rows

    def publish_home(self, user: str, data: dict[str, Any], request_id: str | None) -> None:
        """Queue `user`'s App Home view (views.publish), rendered from the `home` template."""
        view = self.renderer.slack("home", data)
        self.store.enqueue(kind="home", payload={"blocks": view.blocks}, now=self.clock(), request_id=request_id,
                           user=user)
        self.wake()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="slack-delivery", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, seconds: float) -> None:
        """Send what is due for at most `seconds`, then stop; what is left stays in the outbox."""
        deadline = time.monotonic() + seconds
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        self.flush(deadline - time.monotonic())

    def flush(self, seconds: float) -> None:
        """Send due items, one after the other, until none is due or `seconds` have passed."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.send_one():
            pass

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.prune()
                if self.send_one():
                    continue
                due = self.store.next_outbox_due()
                wait = 1.0 if due is None else (due - self.clock()).total_seconds()
                self._wake.wait(min(1.0, max(0.05, wait)))
                self._wake.clear()
            except Exception:
                log.exception("the delivery loop failed; retrying in a second")
                self._stop.wait(1)

    def prune(self) -> None:
        """At most once an hour, forget what was sent longer ago than the retention."""
        now = self.clock()
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY:
            return
        self._pruned_at = now
        removed = self.store.prune_outbox(now - self.retention)
        if removed:
            log.info("forgot %d message(s) sent more than %s ago", removed, self.retention)

    def send_one(self) -> bool:
        """Send the next due item, if any; true when one was taken."""
        item = self.store.claim_outbox(self.clock(), LEASE)
        if item is None:
            return False
        token = request_id.set(item.request_id)
        try:
            sent = self._send(item) or {}
            self.store.outbox_sent(item.id, self.clock(), channel=sent.get("channel"), ts=sent.get("ts"))
        except TransientFailure as error:
            self._retry_later(item, str(error), in_doubt=item.in_doubt or error.in_doubt)
        except PermanentFailure as error:
            self._give_up(item, str(error))
        finally:
            request_id.reset(token)
        return True

    # -- sending ---------------------------------------------------------------------------

    def _send(self, item: OutboxItem) -> dict | None:
        """Send one item; for a message, Slack's answer (its channel and ts)."""
        payload = item.payload
        if item.kind == "ephemeral":
            self._ephemeral(item)
            return None
        incident = self.store.incident(item.incident_id) if item.incident_id else None
        if item.kind == "announce":
            response = self._post(item, channel=item.channel, **payload)
            if item.incident_id is not None:
                self.store.update_incident(item.incident_id, thread_ts=response["ts"],
                                           announce_channel=response["channel"])
            return response
        if item.kind == "message":
            return self._post(item, **self._where(item, incident), **payload)
        if item.kind == "update_message":
            if self.store.outbox_superseded(item):
                return None
            content = {k: v for k, v in payload.items() if k != "target"}
            target = self.store.outbox_sent_message(payload["target"])
            if target is None:  # the message to update never made it: post this one instead
                return self._post(item, **self._where(item, incident), **content)
            return self._call("chat_update", channel=target[0], ts=target[1], **content)
        if item.kind == "update":
            if incident is None or incident.thread_ts is None or self.store.outbox_superseded(item):
                return None
            return self._call("chat_update", channel=incident.announce_channel, ts=incident.thread_ts, **payload)
        if item.kind == "home":
            if self.store.outbox_superseded(item):
                return None
            return self._call("views_publish", user_id=item.user, view={"type": "home", **payload})
        if item.kind == "upload":
            self._call("files_upload_v2", **self._where(item, incident), **_file(payload))
            return None
        if item.kind == "form":     # its trigger lives 3 seconds: a retry later would fail, and says so
            self._call("views_open", trigger_id=payload["trigger_id"], view=payload["view"])
            return None
        if item.kind == "upload_dm":
            direct = self._call("conversations_open", users=item.user)["channel"]["id"]
            self._call("files_upload_v2", channel=direct, **_file(payload))
            return None
        raise PermanentFailure(f"unknown outbox item kind {item.kind!r}")

    @staticmethod
    def _where(item: OutboxItem, incident: Incident | None) -> dict[str, Any]:
        if incident is None:
            return {"channel": item.channel}
        where: dict[str, Any] = {"channel": incident.announce_channel or incident.channel}
        if incident.thread_ts:
            where["thread_ts"] = incident.thread_ts
        return where

    def _ephemeral(self, item: OutboxItem) -> None:
        if item.response_url:
            body = {"response_type": "ephemeral", "replace_original": False, **item.payload}
            webhook = WebhookClient(item.response_url, timeout=RESPONSE_URL_TIMEOUT,
                                    retry_handlers=self.client.retry_handlers)
            try:
                response = webhook.send_dict(body)
            except (OSError, http.client.HTTPException) as error:
                raise TransientFailure(f"response_url: {type(error).__name__}: {error}") from None
            if response.status_code == 429 or response.status_code >= 500:
                raise TransientFailure(f"response_url answered {response.status_code}")
            if response.status_code >= 400:
                raise PermanentFailure(f"response_url answered {response.status_code}: {response.body[:200]}")
            return
        if item.channel is None:  # asked from the App Home: no channel to whisper in, so a direct message
            direct = self._call("conversations_open", users=item.user)["channel"]["id"]
            self._post(item, channel=direct, **item.payload)
            return
        self._call("chat_postEphemeral", channel=item.channel, user=item.user, **item.payload)

    def _post(self, item: OutboxItem, *, channel: str | None, thread_ts: str | None = None,
              **message: Any) -> dict:
        """chat.postMessage of `item`'s message, tagged with its id; Slack's answer (channel, ts).
        An item in doubt is looked for first, and when found not posted again."""
        where: dict[str, Any] = {"channel": channel, **({"thread_ts": thread_ts} if thread_ts else {})}
        if item.in_doubt and channel is not None:
            try:
                found = self._posted_before(item, channel, thread_ts)
            except PermanentFailure as error:   # an install without the history scopes, say
                log.warning("cannot look for an earlier post of this message (%s); posting it", error,
                            extra={"outbox_id": item.id})
                found = None
            if found is not None:
                log.info("the message was posted before its outcome was known; not posting it again",
                         extra={"outbox_id": item.id, "ts": found["ts"]})
                return found
        return self._call("chat_postMessage", client=self._poster, metadata=_tag(item), **where, **message)

    def _posted_before(self, item: OutboxItem, channel: str, thread_ts: str | None) -> dict | None:
        """Where `item`'s message is among the recent messages of `channel` (of the thread, when
        `thread_ts`), by its metadata; None when it is not there."""
        thread: dict[str, Any] = {"ts": thread_ts} if thread_ts else {}
        method = "conversations_replies" if thread_ts else "conversations_history"
        tag, cursor = _tag(item), None
        for _ in range(HISTORY_PAGES):
            page = self._call(method, channel=channel, include_all_metadata=True, limit=HISTORY_PAGE, **thread,
                              **({"cursor": cursor} if cursor else {}))
            for message in page.get("messages") or []:
                if message.get("metadata") == tag:
                    return {"channel": channel, "ts": message["ts"]}
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return None
        return None

    @cached_property
    def _poster(self) -> WebClient:
        """The client for posts: slack_sdk's retry of a lost connection would post again at once,
        unlooked, what may have been posted; the outbox retries it instead."""
        poster = copy.copy(self.client)
        poster.retry_handlers = [handler for handler in self.client.retry_handlers
                                 if not isinstance(handler, ConnectionErrorRetryHandler)]
        return poster

    def _call(self, method: str, *, client: WebClient | None = None, **arguments: object) -> dict:
        client = client or self.client
        channel = arguments.get("channel")
        try:
            try:
                return getattr(client, method)(**arguments).data
            except SlackApiError as error:
                if error.response.get("error") != "not_in_channel" or not isinstance(channel, str):
                    raise
                self.client.conversations_join(channel=channel)
                return getattr(client, method)(**arguments).data
        except SlackApiError as error:
            code = error.response.get("error") or f"HTTP {error.response.status_code}"
            status = error.response.status_code
            if status >= 500 or status == 429 or code in _TRANSIENT_ERRORS:
                raise TransientFailure(f"{method}: {code}", in_doubt=status >= 500 or code in _MAYBE_DONE_ERRORS) \
                    from None
            raise PermanentFailure(f"{method}: {code}") from None
        except (OSError, http.client.HTTPException) as error:
            raise TransientFailure(f"{method}: {type(error).__name__}: {error}", in_doubt=_maybe_sent(error)) from None

    # -- failures --------------------------------------------------------------------------

    def _retry_later(self, item: OutboxItem, error: str, *, in_doubt: bool) -> None:
        now = self.clock()
        lifetime = EPHEMERAL_LIFETIME if item.kind == "ephemeral" else MESSAGE_LIFETIME
        if now - item.created_at > lifetime:
            self._give_up(item, f"still failing after {lifetime}: {error}")
            return
        delay = min(MAX_BACKOFF_SECONDS, 2 ** item.attempts)
        log.warning("Slack delivery failed, retrying in %s s: %s", delay, error,
                    extra={"outbox_id": item.id, "kind": item.kind, "attempt": item.attempts + 1})
        self.store.outbox_retry(item.id, now + timedelta(seconds=delay), error, in_doubt=in_doubt)

    def _give_up(self, item: OutboxItem, error: str) -> None:
        log.error("Slack delivery failed for good: %s", error, extra={"outbox_id": item.id, "kind": item.kind})
        self.store.outbox_failed(item.id, self.clock(), error)
        if item.kind != "ephemeral" and item.user and (item.response_url or item.channel):
            message = self.renderer.slack("delivery_failed", {"error": error, "target": item.channel,
                                                              "a_form": item.kind == "form"})
            self.store.enqueue(kind="ephemeral", payload={"text": message.text, "blocks": message.blocks},
                               now=self.clock(), request_id=item.request_id, channel=item.channel,
                               user=item.user, response_url=item.response_url)


def _form_metadata(channel: str | None, quote: dict[str, Any] | None) -> str:
    """A form's private_metadata (at most MAX_METADATA characters): the asking channel, and the
    quoted message, its text cut shorter when its JSON would be too long."""
    while True:
        metadata = json.dumps({"channel": channel, "quote": quote}, ensure_ascii=False)
        if len(metadata) <= MAX_METADATA or not quote or not quote.get("text"):
            return metadata
        quote = {**quote, "text": quote["text"][:len(quote["text"]) // 2] + "…"}


def _tag(item: OutboxItem) -> dict[str, Any]:
    """The message metadata an item's message carries: its id, and when it was queued (an id alone
    may be handed out again by a new or pruned database)."""
    return {"event_type": METADATA_EVENT,
            "event_payload": {"outbox_id": item.id, "queued_at": to_iso(item.created_at)}}


def _maybe_sent(error: Exception) -> bool:
    """Whether a call that failed with `error` may have reached Slack all the same: not when the
    connection was refused or the name did not resolve, else (a timeout, a reset) it may."""
    reason = error.reason if isinstance(error, URLError) else error
    return not isinstance(reason, (ConnectionRefusedError, socket.gaierror))


def _file(payload: dict) -> dict:
    """Text travels as `content`; binary (a chart) as base64, since the outbox stores JSON."""
    if "content_base64" in payload:
        rest = {k: v for k, v in payload.items() if k != "content_base64"}
        return {**rest, "file": base64.b64decode(payload["content_base64"])}
    return payload
