"""The Slack frame: builds the Bolt app from the command registry; ack first, work after.

A slash command or a button is acknowledged at once (Bolt has verified its signature and age by
then) and its work is queued on a bounded pool, so a slow command never delays another's ack.
A redelivered request (same trigger or event id) is acknowledged and dropped. Replies go through
the outbox (bot/delivery.py), written before anything is sent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_bolt.authorization import AuthorizeResult
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler

from bot import redact
from bot.access import Access
from bot.command import Audience, Command, Reply
from bot.config import Config
from bot.delivery import Delivery
from bot.dispatch import Dispatcher, Invocation
from bot.jsonlog import request_id
from bot.render import Renderer, SlackMessage
from bot.store import Store
from bot.times import utc_now

DEFAULT_API_URL = "https://slack.com/api/"
WORKERS = 32
SLACK_TIMEOUT_SECONDS = 10

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlackEnv:
    bot_token: str
    signing_secret: str
    api_url: str = DEFAULT_API_URL
    app_token: str | None = None


def new_request_id() -> str:
    return uuid.uuid4().hex[:12]


class SlackBot:
    """The Bolt app, the command pool and the outbox; callable as the WSGI application."""

    def __init__(self, env: SlackEnv, config: Config, store: Store, commands: dict[str, Command],
                 clock: Callable[[], datetime] = utc_now):
        self.env = env
        redact.use(config.redaction)
        self.store = store
        self.clock = clock
        api_url = env.api_url.rstrip("/") + "/"
        self.client = WebClient(
            token=env.bot_token, base_url=api_url, timeout=SLACK_TIMEOUT_SECONDS,
            retry_handlers=[ConnectionErrorRetryHandler(), RateLimitErrorRetryHandler(max_retry_count=3)],
        )
        self.renderer = Renderer(config.timezone, clock)
        self.delivery = Delivery(store, self.client, self.renderer, clock)
        self.dispatcher = Dispatcher(store, config, commands, clock, Access(config.access, self._group_members))
        self.pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="command")
        self._inflight: set[Future[None]] = set()
        self._lock = threading.Lock()
        self.app = App(
            signing_secret=env.signing_secret,
            client=WebClient(base_url=api_url, timeout=SLACK_TIMEOUT_SECONDS),
            authorize=self._authorize,
            process_before_response=True,
        )
        for name in commands:
            self.app.command(f"/{name}")(self._on_command)
        self.app.action(re.compile(r"^run:"))(self._on_button)
        self._http = SlackRequestHandler(self.app)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.delivery.start()

    def drain(self, seconds: float) -> None:
        """Finish queued and running commands, then send what is due, all within `seconds`."""
        deadline = time.monotonic() + seconds
        with self._lock:
            pending = list(self._inflight)
        log.info("draining %d command(s) and the outbox", len(pending))
        for future in pending:
            try:
                future.result(timeout=max(0.0, deadline - 1.5 - time.monotonic()))
            except Exception:
                log.warning("a command did not finish before shutdown")
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.delivery.stop(deadline, time.monotonic)
        log.info("drained; %d message(s) left in the outbox for the next start", self.store.outbox_pending())

    # -- HTTP ------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            return self._health(start_response)
        return self._http(environ, start_response)

    def _health(self, start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            self.store.check_writable(self.clock())
            status, body = "200 OK", {"status": "ok", "database": "writable",
                                      "outbox_pending": self.store.outbox_pending()}
        except Exception as error:
            log.error("health check failed: %s", error)
            status, body = "503 Service Unavailable", {"status": "error", "database": str(error)}
        payload = json.dumps(body).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
        return [payload]

    # -- Slack listeners (run in the request thread: keep them to a claim and a queue) ------------

    def _authorize(self, enterprise_id: str | None, team_id: str | None) -> AuthorizeResult:
        # Our own token, without Bolt's auth.test round trip: a Slack outage must not stop an
        # incident from being recorded.
        return AuthorizeResult(enterprise_id=enterprise_id, team_id=team_id, bot_token=self.env.bot_token)

    def _on_command(self, ack: Callable[..., None], body: dict[str, Any]) -> None:
        rid = new_request_id()
        request_id.set(rid)
        if not self._first_delivery("command", body.get("trigger_id"), body):
            ack()
            return
        ack()
        self.submit(Invocation(
            command=body["command"].lstrip("/"), text=body.get("text") or "", user=body["user_id"],
            channel=body.get("channel_id"), request_id=rid, response_url=body.get("response_url"),
        ))

    def _on_button(self, ack: Callable[..., None], body: dict[str, Any], action: dict[str, Any]) -> None:
        rid = new_request_id()
        request_id.set(rid)
        first = self._first_delivery("action", f"{body.get('trigger_id')}:{action.get('action_id')}", body)
        ack()
        if not first:
            return
        name, _, text = action.get("value", "").lstrip("/").partition(" ")
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
        self.submit(Invocation(command=name, text=text, user=body["user"]["id"], channel=channel, request_id=rid))

    def _first_delivery(self, kind: str, trigger: str | None, body: dict[str, Any]) -> bool:
        key = trigger or hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        if self.store.claim_delivery(f"{kind}:{key}", self.clock()):
            return True
        log.info("dropped a redelivered %s", kind, extra={"delivery": key})
        return False

    # -- work after the ack ----------------------------------------------------------------

    def submit(self, invocation: Invocation) -> Future[None]:
        future = self.pool.submit(self._execute, invocation)
        with self._lock:
            self._inflight.add(future)
        future.add_done_callback(self._finished)
        return future

    def _finished(self, future: Future[None]) -> None:
        with self._lock:
            self._inflight.discard(future)

    def _execute(self, invocation: Invocation) -> None:
        token = request_id.set(invocation.request_id)
        started = time.monotonic()
        try:
            reply = self.dispatcher.run(invocation)
            self.post(reply, invocation)
            log.info("/%s answered", invocation.command, extra={
                "user": invocation.user, "outcome": reply.outcome.value,
                "ms": round((time.monotonic() - started) * 1000)})
        except Exception:
            log.exception("/%s could not be answered", invocation.command)
        finally:
            request_id.reset(token)

    def post(self, reply: Reply, invocation: Invocation) -> None:
        """Write the reply's messages to the outbox, in the order they must reach Slack."""
        now = self.clock()
        message = self.renderer.slack(reply.template, reply.data)
        common = {"now": now, "request_id": invocation.request_id, "user": invocation.user,
                  "response_url": invocation.response_url}
        incident = self.store.incident(reply.incident_id) if reply.incident_id else None
        if reply.audience in (Audience.THREAD, Audience.ANNOUNCE) and incident is not None:
            kind = "announce" if reply.audience is Audience.ANNOUNCE else "message"
            self._enqueue_message(kind, message, channel=incident.announce_channel, incident_id=incident.id,
                                  **common)
            if invocation.channel != incident.announce_channel:
                pointer = self.renderer.slack("pointer", {"incident": incident})
                self._enqueue_message("ephemeral", pointer, channel=invocation.channel, **common)
        elif reply.audience is Audience.CHANNEL:
            self._enqueue_message("message", message, channel=invocation.channel, **common)
        else:
            self._enqueue_message("ephemeral", message, channel=invocation.channel, **common)
        if reply.card is not None and incident is not None:
            card = self.renderer.slack(reply.card.template, reply.card.data)
            self._enqueue_message("update", card, channel=incident.announce_channel, incident_id=incident.id,
                                  **common)
        self.delivery.wake()

    def _enqueue_message(self, kind: str, message: SlackMessage, **where: Any) -> None:
        self.store.enqueue(kind=kind, payload={"text": message.text, "blocks": message.blocks}, **where)
        if message.overflow is not None and kind != "update":
            upload = {"content": message.overflow, "filename": "oncall-bot.txt", "title": message.text[:100]}
            if kind == "ephemeral":  # a private answer's file goes to the asker's direct messages
                self.store.enqueue(kind="upload_dm", payload=upload, **{**where, "incident_id": None})
            else:
                self.store.enqueue(kind="upload", payload=upload, **where)

    def _group_members(self, group: str) -> set[str]:
        return set(self.client.usergroups_users_list(usergroup=group)["users"])
