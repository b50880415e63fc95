"""The Slack frame: builds the Bolt app from the command registry; ack first, work after.

A slash command or a button is acknowledged at once (Bolt has verified its signature and age by
then) and its work is queued on a bounded pool, so a slow command never delays another's ack.
A redelivered request (same trigger or event id) is acknowledged and dropped. Replies go through
the outbox (bot/outbox.py), written before anything is sent.

Before Bolt sees a request, the frame reads it (at most MAX_REQUEST_BYTES), checks its signature and
age, and that it is UTF-8 and its JSON parses: anything else is answered 401, 400 or 413 with one
bounded log line that names the reason and never holds the body (it may carry secrets and
response URLs), and no traceback.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from slack_bolt import App, BoltRequest
from slack_bolt.adapter.wsgi.http_response import WsgiHttpResponse
from slack_bolt.authorization import AuthorizeResult
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler

from bot import redact
from bot.access import Access
from bot.command import Command, Outcome, Reply
from bot.config import Config
from bot.dispatch import Dispatcher, Invocation
from bot.jsonlog import request_id
from bot.outbox import Outbox
from bot.render import Renderer
from bot.schedule import WeeklyReport
from bot.store import Store
from bot.times import utc_now

DEFAULT_API_URL = "https://slack.com/api/"
WORKERS = 32
SLACK_TIMEOUT_SECONDS = 10
EVENTS_PATH = "/slack/events"
# Slack's largest request is a button on a 50-block message, which it sends back whole (percent-encoded).
MAX_REQUEST_BYTES = 4 << 20
SIGNATURE_MAX_AGE_SECONDS = 5 * 60

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlackEnv:
    bot_token: str
    signing_secret: str
    api_url: str = DEFAULT_API_URL
    app_token: str | None = None


class _OwnClientNotice(logging.Filter):
    """Bolt reads SLACK_BOT_TOKEN itself and warns that it goes unused next to our client and
    authorize function; that is on purpose (see `authorize` below), so the warning is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`token` will be unused" not in record.getMessage()


logging.getLogger("slack_bolt.App").addFilter(_OwnClientNotice())


def web_client(env: SlackEnv) -> WebClient:
    """Our Web API client: the configured base URL, a timeout, and retries after 429 Retry-After."""
    return WebClient(
        token=env.bot_token, base_url=env.api_url.rstrip("/") + "/", timeout=SLACK_TIMEOUT_SECONDS,
        retry_handlers=[ConnectionErrorRetryHandler(), RateLimitErrorRetryHandler(max_retry_count=3)],
    )


def workspace_url(client: WebClient) -> str | None:
    """The workspace's URL (auth.test), for links to threads; None, logged, when Slack does not say."""
    try:
        return client.auth_test()["url"]
    except Exception as error:
        log.warning("auth.test failed (%s): links to threads are left out", error)
        return None


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
        self.client = web_client(env)
        self.renderer = Renderer(config.timezone, clock)
        self.outbox = Outbox(store, self.client, self.renderer, clock, config.slack.outbox_retention)
        self.dispatcher = Dispatcher(store, config, commands, clock, Access(config.access, self._group_members))
        # The bot itself runs the weekly report: [access] is for people.
        self.weekly_report = WeeklyReport(store, config, Dispatcher(store, config, commands, clock), self.outbox,
                                          clock)
        self.pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="command")
        self._inflight: dict[Future[None], Invocation] = {}
        self._lock = threading.Lock()
        # Our own token, without Bolt's auth.test round trip: a Slack outage must not stop an
        # incident from being recorded. (Bolt passes arguments by name, so no bound methods.)
        def authorize(enterprise_id: str | None, team_id: str | None) -> AuthorizeResult:
            return AuthorizeResult(enterprise_id=enterprise_id, team_id=team_id, bot_token=env.bot_token)

        def on_command(ack: Callable[..., None], body: dict[str, Any]) -> None:
            self._on_command(ack, body)

        def on_button(ack: Callable[..., None], body: dict[str, Any], action: dict[str, Any]) -> None:
            self._on_button(ack, body, action)

        def on_home_opened(ack: Callable[..., None], body: dict[str, Any], event: dict[str, Any]) -> None:
            self._on_home_opened(ack, body, event)

        self.app = App(
            signing_secret=env.signing_secret,
            client=WebClient(base_url=self.client.base_url, timeout=SLACK_TIMEOUT_SECONDS),
            authorize=authorize,
            process_before_response=True,
        )
        for name in commands:
            self.app.command(f"/{name}")(on_command)
        self.app.action(re.compile(r"^run:"))(on_button)
        self.app.event("app_home_opened")(on_home_opened)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.outbox.start()
        self.weekly_report.start()
        threading.Thread(target=self._learn_workspace_url, name="auth-test", daemon=True).start()

    def _learn_workspace_url(self) -> None:
        self.renderer.workspace_url = workspace_url(self.client)

    def drain(self, seconds: float) -> None:
        """Finish queued and running commands, then send what is due, all within `seconds`."""
        deadline = time.monotonic() + seconds
        with self._lock:
            pending = dict(self._inflight)
        log.info("draining %d command(s) and the outbox", len(pending))
        for future, invocation in pending.items():
            try:
                future.result(timeout=max(0.0, deadline - 1.5 - time.monotonic()))
            except Exception:
                log.warning("/%s did not finish before shutdown", invocation.command,
                            extra={"cut_short": invocation.request_id})
                # Whoever asked hears that it was cut short, rather than waiting for an answer.
                self.outbox.post(Reply("restarting", {"command": invocation.command}), invocation)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.weekly_report.stop()
        self.outbox.stop(max(0.0, deadline - time.monotonic()))
        log.info("drained; %d message(s) left in the outbox for the next start", self.store.outbox_pending())

    # -- HTTP ------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO"), environ.get("REQUEST_METHOD")
        if path == "/healthz":
            return self._health(start_response)
        if path != EVENTS_PATH or method != "POST":
            return _answer(start_response, "404 Not Found", "Not Found")
        headers = {key[5:].lower().replace("_", "-"): value for key, value in environ.items()
                   if key.startswith("HTTP_")}
        headers.update({key.lower().replace("_", "-"): environ[key] for key in ("CONTENT_TYPE", "CONTENT_LENGTH")
                        if environ.get(key)})
        body, refusal = self._read_slack_request(environ, headers)
        if refusal is not None:
            status, reason = refusal
            log.warning("rejected a request to %s: %s", path, reason,
                        extra={"status": int(status[:3]), "bytes": headers.get("content-length")})
            return _answer(start_response, status, status[4:])
        response = self.app.dispatch(BoltRequest(body=body, query=environ.get("QUERY_STRING", ""), headers=headers))
        http = WsgiHttpResponse(status=response.status, headers=response.headers, body=response.body)
        start_response(http.status, http.get_headers())
        return http.get_body()

    def _read_slack_request(self, environ: dict[str, Any],
                            headers: dict[str, str]) -> tuple[str, tuple[str, str] | None]:
        """The body as text, or why the request is refused (status, reason): the signature and age first,
        so nothing unsigned is parsed, then what Bolt would choke on."""
        length = headers.get("content-length", "0")
        if not length.isascii() or not length.isdigit():
            return "", ("400 Bad Request", "Content-Length is not a number")
        if int(length) > MAX_REQUEST_BYTES:
            return "", ("413 Payload Too Large", f"body of {length} bytes (at most {MAX_REQUEST_BYTES})")
        raw = environ["wsgi.input"].read(int(length)) if int(length) else b""
        timestamp, signature = headers.get("x-slack-request-timestamp"), headers.get("x-slack-signature")
        if not timestamp or not signature:
            return "", ("401 Unauthorized", "not signed")
        if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
            return "", ("401 Unauthorized", "the timestamp is not a number")
        if abs(time.time() - int(timestamp)) > SIGNATURE_MAX_AGE_SECONDS:
            return "", ("401 Unauthorized", "the timestamp is more than 5 minutes off")
        # Slack's v0 signature, over the bytes as they came (slack_sdk's verifier decodes them first).
        expected = "v0=" + hmac.new(self.env.signing_secret.encode(), f"v0:{timestamp}:".encode() + raw,
                                    hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            return "", ("401 Unauthorized", "invalid signature")
        try:
            body = raw.decode("utf-8")
            if body.startswith("{") or headers.get("content-type", "").startswith("application/json"):
                parsed = json.loads(body)
            else:
                form = dict(urllib.parse.parse_qsl(body, keep_blank_values=True))
                parsed = json.loads(form["payload"]) if "payload" in form else form
        except (UnicodeDecodeError, ValueError) as error:
            return "", ("400 Bad Request", f"signed, but not understood ({type(error).__name__})")
        if not isinstance(parsed, dict):
            return "", ("400 Bad Request", "signed, but not a JSON object")
        return body, None

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

    def _on_command(self, ack: Callable[..., None], body: dict[str, Any]) -> None:
        rid = new_request_id()
        request_id.set(rid)
        first = self._first_delivery("command", body.get("trigger_id"), body)
        ack()
        if not first:
            return
        self.submit(Invocation(
            command=body["command"].lstrip("/"), text=body.get("text") or "", user=body["user_id"],
            channel=body.get("channel_id"), request_id=rid, response_url=body.get("response_url"),
        ))

    def _on_button(self, ack: Callable[..., None], body: dict[str, Any], action: dict[str, Any]) -> None:
        rid = new_request_id()
        request_id.set(rid)
        trigger = body.get("trigger_id")
        first = self._first_delivery("action", f"{trigger}:{action.get('action_id')}" if trigger else None, body)
        ack()
        if not first:
            return
        name, _, text = action.get("value", "").lstrip("/").partition(" ")
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
        invocation = Invocation(command=name, text=text, user=body["user"]["id"], channel=channel, request_id=rid)
        from_home = (body.get("view") or {}).get("type") == "home"
        self.submit(invocation, then=(lambda: self.publish_home(invocation.user, rid)) if from_home else None)

    def _on_home_opened(self, ack: Callable[..., None], body: dict[str, Any], event: dict[str, Any]) -> None:
        rid = new_request_id()
        request_id.set(rid)
        ack()
        if event.get("tab") == "home" and self._first_delivery("event", body.get("event_id"), body):
            self.pool.submit(self.publish_home, event["user"], rid)

    def publish_home(self, user: str, rid: str) -> None:
        """The App Home: open incidents with their buttons, this week's numbers, the last report.

        Its parts are commands run as this user, so [access] applies to them as to the commands.
        """
        token = request_id.set(rid)
        try:
            parts = {name: self.dispatcher.run(Invocation(name, text, user, None, rid))
                     for name, text in (("incident", "list"), ("mttr", "this-week"))}
            data = {name: reply.data if reply.outcome is Outcome.OK else None for name, reply in parts.items()}
            self.outbox.publish_home(user, {**data, "last_report": self.store.last_report()}, rid)
        except Exception:
            log.exception("could not publish the App Home of %s", user)
        finally:
            request_id.reset(token)

    def _first_delivery(self, kind: str, trigger: str | None, body: dict[str, Any]) -> bool:
        key = trigger or hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        if self.store.claim_delivery(f"{kind}:{key}", self.clock()):
            return True
        log.info("dropped a redelivered %s", kind, extra={"delivery": key})
        return False

    # -- work after the ack ----------------------------------------------------------------

    def submit(self, invocation: Invocation, then: Callable[[], None] | None = None) -> Future[None]:
        future = self.pool.submit(self._execute, invocation, then)
        with self._lock:
            self._inflight[future] = invocation
        future.add_done_callback(self._finished)
        return future

    def _finished(self, future: Future[None]) -> None:
        with self._lock:
            self._inflight.pop(future, None)

    def _execute(self, invocation: Invocation, then: Callable[[], None] | None) -> None:
        token = request_id.set(invocation.request_id)
        started = time.monotonic()
        shown: list[int] = []   # the outbox id of the progress message, once there is one

        def progress(partial: Reply) -> None:
            shown[:] = [self.outbox.progress(partial, invocation, shown[0] if shown else None)]

        try:
            reply = self.dispatcher.run(invocation, progress)
            try:
                self.outbox.post(reply, invocation, replacing=shown[0] if shown else None)
            except Exception:  # the answer could not be rendered: say so where the answer was due
                log.exception("/%s: the answer could not be posted", invocation.command)
                reply = Reply("internal_error", {"command": invocation.command, "request_id": invocation.request_id},
                              outcome=Outcome.FAILED)
                self.outbox.post(reply, invocation, replacing=shown[0] if shown else None)
            if then is not None:
                then()
            log.info("/%s answered", invocation.command, extra={
                "user": invocation.user, "outcome": reply.outcome.value,
                "ms": round((time.monotonic() - started) * 1000)})
        except Exception:
            log.exception("/%s could not be answered", invocation.command)
        finally:
            request_id.reset(token)

    def _group_members(self, group: str) -> set[str]:
        return set(self.client.usergroups_users_list(usergroup=group)["users"])


def _answer(start_response: Callable[..., Any], status: str, text: str) -> Iterable[bytes]:
    payload = text.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(payload)))])
    return [payload]
