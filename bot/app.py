"""The Slack frame: builds the Bolt app from the command registry; verify, queue, ack, nothing else.

A slash command, a button or an App Home visit is queued in the store's work queue under its
delivery's key (the trigger or event id) and acknowledged: the queuing is the claim, so a redelivery
finds its key taken and is acknowledged and dropped, and work a process took but never did is done
by a worker all the same. Workers (bot/worker.py), in processes of their own, run the commands and
post their replies through the outbox. When the store cannot take the work, the asker is told so in
the acknowledgement itself (an event is refused with 503, so Slack sends it again).

Features' endpoints (bot.command.Inbound: POST /alerts/NAME) are answered here too, without Bolt:
401 without their credentials (a bearer token or HTTP basic auth, compared in constant time), 413
past their size, 400 with the reason for a body they do not take; a body taken is queued as work
under a key of what was read (the same notification sent again is dropped) and answered 202. Without a
signing secret (a Socket Mode deployment), `serve` answers only these, and /healthz.

Before Bolt sees a request, the frame reads it (at most MAX_REQUEST_BYTES), checks its signature and
age, and that it is UTF-8 and its JSON parses: anything else is answered 401, 400 or 413 with one
bounded log line that names the reason and never holds the body (it may carry secrets and
response URLs), and no traceback. A slash command of the bot's, the most of what an incident
sends at once, is then handed to its listener here, past Bolt's dispatch (`_answer_command`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from slack_bolt import Ack, App, BoltRequest, BoltResponse
from slack_bolt.adapter.wsgi.http_response import WsgiHttpResponse
from slack_bolt.authorization import AuthorizeResult
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler

from bot import redact
from bot.command import Command, Credentials, Inbound, Malformed
from bot.config import Config
from bot.dispatch import Dispatcher, Invocation
from bot.jsonlog import request_id
from bot.manifest import SHORTCUTS
from bot.outbox import FORM_CALLBACK
from bot.render import Renderer
from bot.store import Store, StoreUnavailable
from bot.times import utc_now
from bot.worker import BUTTON, COMMAND, HOME, work_payload

DEFAULT_API_URL = "https://slack.com/api/"
SLACK_TIMEOUT_SECONDS = 10
EVENTS_PATH = "/slack/events"
# Slack's largest request is a button on a 50-block message, which it sends back whole (percent-encoded).
MAX_REQUEST_BYTES = 4 << 20
SIGNATURE_MAX_AGE_SECONDS = 5 * 60
QUOTE_MAX = 1000     # characters of a message quoted by a shortcut (it travels in the form's private_metadata)

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


def new_request_id() -> str:
    return secrets.token_hex(6)


class SlackBot:
    """The Bolt app over the work queue; callable as the WSGI application."""

    def __init__(self, env: SlackEnv, config: Config, store: Store, commands: dict[str, Command],
                 clock: Callable[[], datetime] = utc_now, queued: Callable[[], None] = lambda: None,
                 inbound: Iterable[Inbound] = ()):
        """`queued` is told when work was queued (a worker of this process looks at once); `inbound`:
        the features' endpoints served beside Slack's."""
        self.env = env
        self.config = config
        self.routes = {f"/{hook.prefix}/{name}": (hook, name, credentials)
                       for hook in inbound for name, credentials in hook.endpoints(config).items()}
        redact.use(config.redaction)
        self.store = store
        self.clock = clock
        self.queued = queued
        self.renderer = Renderer(config.timezone, clock)

        # Our own token, without Bolt's auth.test round trip: a Slack outage must not stop an
        # incident from being recorded. (Bolt passes arguments by name, so no bound methods.)
        def authorize(enterprise_id: str | None, team_id: str | None) -> AuthorizeResult:
            return AuthorizeResult(enterprise_id=enterprise_id, team_id=team_id, bot_token=env.bot_token)

        def on_command(ack: Callable[..., object], body: dict[str, Any]) -> None:
            self._on_command(ack, body)

        def on_button(ack: Callable[..., object], body: dict[str, Any], action: dict[str, Any]) -> None:
            self._on_button(ack, body, action)

        def on_home_opened(ack: Callable[..., object], body: dict[str, Any], event: dict[str, Any]) -> None:
            self._on_home_opened(ack, body, event)

        def on_shortcut(ack: Callable[..., object], body: dict[str, Any], shortcut: dict[str, Any]) -> None:
            self._on_shortcut(ack, body)

        def on_submission(ack: Callable[..., object], body: dict[str, Any], view: dict[str, Any]) -> None:
            self._on_submission(ack, body, view)

        self.app = App(
            signing_secret=env.signing_secret,
            client=WebClient(base_url=env.api_url.rstrip("/") + "/", timeout=SLACK_TIMEOUT_SECONDS),
            authorize=authorize,
            process_before_response=True,
            request_verification_enabled=False,   # verified above, on the raw bytes, before Bolt parses
        )
        # One listener for every command: Bolt tries each listener's matcher in turn.
        self.commands = re.compile(f"^/(?:{'|'.join(map(re.escape, commands))})$")
        self.app.command(self.commands)(on_command)
        self.app.action(re.compile(r"^run:"))(on_button)
        self.app.event("app_home_opened")(on_home_opened)
        for shortcut in SHORTCUTS:
            self.app.shortcut(shortcut.callback_id)(on_shortcut)
        self.app.view(re.compile(f"^{re.escape(FORM_CALLBACK)}"))(on_submission)
        # Checks a submitted form at once, so that its errors are shown in the form (nothing is run here).
        self.forms = Dispatcher(store, config, commands, clock)

    # -- HTTP ------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO"), environ.get("REQUEST_METHOD")
        if path == "/healthz":
            return self._health(start_response)
        if path in self.routes and method == "POST":
            return self._inbound(environ, start_response, *self.routes[path])
        if path != EVENTS_PATH or method != "POST" or not self.env.signing_secret:
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
        command = body.get("command")
        if isinstance(command, str) and self.commands.match(command):
            response = self._answer_command(body)
        else:
            # Bolt is handed the body as parsed above: its own parse of a form takes any body with the
            # word "payload" in it (a slash command's text) for a form with a payload field, and finds
            # nothing to route. A parsed body is what its Socket Mode requests carry, a mode that
            # differs from HTTP only by skipping the signature check, which was done above.
            request = BoltRequest(body=body, query=environ.get("QUERY_STRING", ""), headers=headers,
                                  mode="socket_mode")
            response = self.app.dispatch(request)
        http = WsgiHttpResponse(status=response.status, headers=response.headers, body=response.body)
        start_response(http.status, http.get_headers())
        return http.get_body()

    def _answer_command(self, body: dict[str, Any]) -> BoltResponse:
        """A slash command over HTTP, handed to its listener here, past Bolt's dispatch: its
        middleware, matchers and a Web API client made per request cost more than all the rest of
        an ack (CPU per ack in one process: 105 us through it, 50 us past it, 62 us for a Bolt app
        that only acks), and none of it does anything for a command verified above. The listener
        is the one Socket Mode's commands reach through Bolt, and Bolt's own Ack makes the answer,
        so it is the same either way. A listener that fails is answered 500, as Bolt answers it."""
        ack = Ack()
        try:
            self._on_command(ack, body)
        except Exception:
            log.exception("could not queue a %s command", body["command"])
            return BoltResponse(status=500, body="")
        return ack.response or BoltResponse(status=200, body="")

    def _read_slack_request(self, environ: dict[str, Any],
                            headers: dict[str, str]) -> tuple[dict[str, Any], tuple[str, str] | None]:
        """The body, parsed, or why the request is refused (status, reason): the signature and age first,
        so nothing unsigned is parsed, then what is not a Slack payload."""
        length = headers.get("content-length", "0")
        if not length.isascii() or not length.isdigit():
            return {}, ("400 Bad Request", "Content-Length is not a number")
        if int(length) > MAX_REQUEST_BYTES:
            return {}, ("413 Payload Too Large", f"body of {length} bytes (at most {MAX_REQUEST_BYTES})")
        raw = environ["wsgi.input"].read(int(length)) if int(length) else b""
        timestamp, signature = headers.get("x-slack-request-timestamp"), headers.get("x-slack-signature")
        if not timestamp or not signature:
            return {}, ("401 Unauthorized", "not signed")
        if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
            return {}, ("401 Unauthorized", "the timestamp is not a number")
        if abs(time.time() - int(timestamp)) > SIGNATURE_MAX_AGE_SECONDS:
            return {}, ("401 Unauthorized", "the timestamp is more than 5 minutes off")
        # Slack's v0 signature, over the bytes as they came (slack_sdk's verifier decodes them first).
        expected = "v0=" + hmac.new(self.env.signing_secret.encode(), f"v0:{timestamp}:".encode() + raw,
                                    hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            return {}, ("401 Unauthorized", "invalid signature")
        try:
            body = raw.decode("utf-8")
            if body.startswith("{") or headers.get("content-type", "").startswith("application/json"):
                parsed = json.loads(body)
            else:
                form = dict(urllib.parse.parse_qsl(body, keep_blank_values=True))
                parsed = json.loads(form["payload"]) if "payload" in form else form
        except (UnicodeDecodeError, ValueError) as error:
            return {}, ("400 Bad Request", f"signed, but not understood ({type(error).__name__})")
        if not isinstance(parsed, dict):
            return {}, ("400 Bad Request", "signed, but not a JSON object")
        return parsed, None

    def _inbound(self, environ: dict[str, Any], start_response: Callable[..., Any], hook: Inbound, name: str,
                 credentials: Credentials) -> Iterable[bytes]:
        """A feature's endpoint: authenticate, bound, read, queue; 202 once queued."""
        request_id.set(new_request_id())
        path = environ.get("PATH_INFO")
        length = environ.get("CONTENT_LENGTH") or "0"
        if not _authorized(environ.get("HTTP_AUTHORIZATION", ""), credentials):
            status, reason = "401 Unauthorized", "no valid credentials"
        elif not length.isascii() or not length.isdigit():
            status, reason = "400 Bad Request", "Content-Length is not a number"
        elif int(length) > hook.max_bytes:
            status, reason = "413 Payload Too Large", f"a body of {length} bytes (at most {hook.max_bytes})"
        else:
            body = environ["wsgi.input"].read(int(length)) if int(length) else b""
            try:
                payload = hook.read(self.config, name, body, self.clock())
            except Malformed as error:
                status, reason = "400 Bad Request", str(error)
            else:
                return self._queue_inbound(start_response, hook, name, payload)
        log.warning("rejected a request to %s: %s", path, reason, extra={"status": int(status[:3])})
        headers = [("WWW-Authenticate", 'Bearer, Basic realm="oncall-bot"')] if status.startswith("401") else []
        return _answer(start_response, status, reason if status.startswith("400") else status[4:], headers)

    def _queue_inbound(self, start_response: Callable[..., Any], hook: Inbound, name: str,
                       payload: dict[str, Any]) -> Iterable[bytes]:
        # Keyed by what was read (a time the sender left out is the arrival's): the same notification
        # resent is dropped, and a stale retry cannot undo what a later one said.
        key = f"{hook.prefix}:{name}:{hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()}"
        try:
            queued = self.store.queue_work(key, hook.prefix, {"endpoint": name, "request_id": request_id.get(),
                                                              "payload": payload}, self.clock())
        except StoreUnavailable as error:
            log.error("could not queue a request to /%s/%s: the store is unavailable (%s)", hook.prefix, name, error)
            return _answer(start_response, "503 Service Unavailable", "the store is unavailable; send it again")
        if not queued:
            log.info("dropped a request to /%s/%s sent before", hook.prefix, name)
            return _answer(start_response, "202 Accepted", "already queued")
        log.info("queued a request to /%s/%s", hook.prefix, name)
        self.queued()
        return _answer(start_response, "202 Accepted", "queued")

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

    # -- Slack listeners (run where the request is served: a queue and an ack, nothing else) ------

    def _on_command(self, ack: Callable[..., object], body: dict[str, Any]) -> None:
        rid = new_request_id()
        request_id.set(rid)
        invocation = Invocation(
            command=body["command"].lstrip("/"), text=body.get("text") or "", user=body["user_id"],
            channel=body.get("channel_id"), request_id=rid, response_url=body.get("response_url"),
            trigger_id=body.get("trigger_id"))
        self._queue(ack, COMMAND, body.get("trigger_id"), body, work_payload(invocation))

    def _on_shortcut(self, ack: Callable[..., object], body: dict[str, Any]) -> None:
        """A message shortcut: its command run on the message, which is quoted (redacted, cut)."""
        rid = new_request_id()
        request_id.set(rid)
        shortcut = next(s for s in SHORTCUTS if s.callback_id == body.get("callback_id"))
        name, _, text = shortcut.command.lstrip("/").partition(" ")
        message, channel = body.get("message") or {}, (body.get("channel") or {}).get("id")
        # An alert a tool posted may say it all in its attachments' fallback text.
        said = message.get("text") or "\n".join(attachment.get("fallback") or attachment.get("text") or ""
                                                for attachment in message.get("attachments") or [])
        quote = {"text": redact.excerpt(said, QUOTE_MAX), "user": message.get("user"), "channel": channel,
                 "ts": message.get("ts")}
        invocation = Invocation(command=name, text=text, user=body["user"]["id"], channel=channel, request_id=rid,
                                response_url=body.get("response_url") or None, trigger_id=body.get("trigger_id"),
                                quote=quote)
        self._queue(ack, COMMAND, body.get("trigger_id"), body, work_payload(invocation))

    def _on_submission(self, ack: Callable[..., object], body: dict[str, Any], view: dict[str, Any]) -> None:
        """A submitted form: checked at once (errors are answered in the form, which stays open),
        then run as its command, as the submitting user, in the channel the form was asked from."""
        rid = new_request_id()
        request_id.set(rid)
        asked = json.loads(view.get("private_metadata") or "{}")
        invocation = Invocation(
            command=view["callback_id"].removeprefix(FORM_CALLBACK), text="", user=body["user"]["id"],
            channel=asked.get("channel"), request_id=rid, form=_form_values(view), quote=asked.get("quote"))
        try:
            errors = self.forms.check_form(invocation)
        except Exception:   # the worker will say what went wrong, where the answer goes
            log.exception("could not check a form for /%s", invocation.command)
            errors = {}
        if errors:
            ack(response_action="errors", errors=errors)
            return
        self._queue(ack, COMMAND, f"{view.get('id')}:{view.get('hash')}", body, work_payload(invocation))

    def _on_button(self, ack: Callable[..., object], body: dict[str, Any], action: dict[str, Any]) -> None:
        rid = new_request_id()
        request_id.set(rid)
        trigger = body.get("trigger_id")
        name, _, text = action.get("value", "").lstrip("/").partition(" ")
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
        invocation = Invocation(command=name, text=text, user=body["user"]["id"], channel=channel, request_id=rid)
        from_home = (body.get("view") or {}).get("type") == "home"
        self._queue(ack, BUTTON, f"{trigger}:{action.get('action_id')}" if trigger else None, body,
                    work_payload(invocation, then_home=from_home))

    def _on_home_opened(self, ack: Callable[..., object], body: dict[str, Any], event: dict[str, Any]) -> None:
        rid = new_request_id()
        request_id.set(rid)
        if event.get("tab") != "home":
            ack()
            return
        self._queue(ack, HOME, body.get("event_id"), body, {"user": event["user"], "request_id": rid})

    def _queue(self, ack: Callable[..., object], kind: str, trigger: str | None, body: dict[str, Any],
               payload: dict[str, Any]) -> None:
        """Queue the work under its delivery's key, then acknowledge; a redelivery is only acknowledged."""
        key = trigger or hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        try:
            queued = self.store.queue_work(f"{kind}:{key}", kind, payload, self.clock())
        except StoreUnavailable as error:
            log.error("could not queue a %s: the store is unavailable (%s)", kind, error)
            if kind == HOME:
                raise    # an event: refused, so Slack sends it again
            ack(text=self.renderer.text("store_unavailable", {}))
            return
        ack()
        if not queued:
            log.info("dropped a redelivered %s", kind, extra={"delivery": key})
            return
        self.queued()


def _form_values(view: dict[str, Any]) -> dict[str, str]:
    """A submitted view's input values by field name (its inputs' action ids); empty when not filled in."""
    values: dict[str, str] = {}
    for block in ((view.get("state") or {}).get("values") or {}).values():
        for name, element in block.items():
            chosen = element.get("value") or (element.get("selected_option") or {}).get("value") \
                or element.get("selected_user")
            values[name] = chosen if isinstance(chosen, str) else ""
    return values


def _answer(start_response: Callable[..., Any], status: str, text: str,
            headers: list[tuple[str, str]] | None = None) -> Iterable[bytes]:
    payload = text.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(payload))),
                            *(headers or [])])
    return [payload]


def _authorized(header: str, credentials: Credentials) -> bool:
    """Whether the Authorization header shows `credentials`: compared in constant time, all of it."""
    scheme, _, value = header.strip().partition(" ")
    if credentials.token is not None:
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), credentials.token.encode())
    if credentials.username is None or credentials.password is None or scheme.lower() != "basic":
        return False
    try:
        user, _, password = base64.b64decode(value.strip(), validate=True).partition(b":")
    except (binascii.Error, ValueError):
        return False
    right_user = hmac.compare_digest(user, credentials.username.encode())
    right_password = hmac.compare_digest(password, credentials.password.encode())
    return right_user and right_password
