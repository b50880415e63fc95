"""A test double of Slack: its Web API on loopback, and requests signed exactly as Slack signs them.

The double is a real HTTP server. It records every call (method, arguments, headers), answers like
Slack does (auth.test, chat.postMessage, chat.update, chat.postEphemeral, conversations.join and
.open, usergroups.users.list, the three steps of files_upload_v2, response_url), keeps the messages
posted with their metadata and answers conversations.history and .replies from them (newest first,
resp. the thread oldest first, in pages; metadata only with include_all_metadata), and fails on
demand: an HTTP status (500, 429 with Retry-After) or `ok: false` with an error code. It can also
do a call and answer it late (after the client gave up) or not at all (the connection dropped):
the outcomes a client cannot tell from a call that never arrived.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BOT_USER = "UBOT00001"
BOT_ID = "B0TEST001"
TEAM = "T0TEST001"
HANG_UP = 0      # a status that means: close the connection without an answer


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)


@dataclass
class Late:
    method: str
    times: int
    seconds: float
    hang_up: bool


@dataclass
class Failure:
    method: str
    times: int
    status: int = 200
    error: str | None = None
    retry_after: int | None = None


class SlackDouble:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.usergroups: dict[str, list[str]] = {}
        self.socket_url = "ws://127.0.0.1:9/unset"   # what apps.connections.open hands out
        self.delays: dict[str, float] = {}   # method -> seconds to wait before answering
        self._failures: list[Failure] = []
        self._late: list[Late] = []
        self.messages: dict[str, list[dict[str, Any]]] = {}   # channel -> messages posted, oldest first
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._ts = itertools.count(1)
        self._files = itertools.count(1)
        self.uploads: dict[str, bytes] = {}
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if len(raw) < length:   # the client died mid-request: Slack never sees a partial one
                    self.close_connection = True
                    return
                status, headers, body = double._handle(self.path, dict(self.headers), raw)
                if status == HANG_UP:
                    self.close_connection = True
                    return
                try:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:   # a late answer: the client has gone
                    self.close_connection = True

            do_GET = do_POST

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.api_url = f"{self.base}/api/"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- test controls ---------------------------------------------------------------------

    def fail(self, method: str, *, times: int = 1, status: int = 200, error: str | None = None,
             retry_after: int | None = None) -> None:
        """The next `times` calls of `method` ("*" for any) fail as told."""
        with self._lock:
            self._failures.append(Failure(method, times, status, error, retry_after))

    def answer_late(self, method: str, seconds: float, *, times: int = 1) -> None:
        """The next `times` calls of `method` are done at once and answered `seconds` later."""
        with self._lock:
            self._late.append(Late(method, times, seconds, hang_up=False))

    def hang_up(self, method: str, *, times: int = 1) -> None:
        """The next `times` calls of `method` are done, and the connection is closed without an answer."""
        with self._lock:
            self._late.append(Late(method, times, 0, hang_up=True))

    def posted(self, channel: str) -> list[dict[str, Any]]:
        """The messages in `channel` (thread replies too), oldest first."""
        with self._lock:
            return [dict(message) for message in self.messages.get(channel, [])]

    def response_url(self, name: str = "r") -> str:
        return f"{self.base}/response/{name}"

    def called(self, method: str) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if call.method == method]

    def wait_for(self, method: str, count: int = 1, timeout: float = 10,
                 where: Callable[[Call], bool] = lambda call: True) -> list[Call]:
        """Block until `count` successful calls of `method` matching `where` were recorded."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [c for c in self.calls if c.method == method and where(c) and not c.args.get("_failed")]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(c.method, c.args.get("_failed")) for c in self.calls]
                    raise AssertionError(f"expected {count} {method} call(s) in {timeout}s; saw {seen}")
                self._changed.wait(left)

    # -- the server side -------------------------------------------------------------------

    def _handle(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, str], bytes]:
        parsed = urllib.parse.urlparse(path)
        if parsed.path.startswith("/upload/"):
            file_id = parsed.path.rsplit("/", 1)[1]
            self.uploads[file_id] = raw
            return self._record("upload", {"file_id": file_id, "bytes": len(raw)}, headers, 200, {},
                                b"OK - " + str(len(raw)).encode())
        if parsed.path.startswith("/response/"):
            args = json.loads(raw or b"{}")
            return self._respond("response_url", args, headers, lambda: b"ok")
        method = parsed.path.removeprefix("/api/")
        args = self._arguments(headers, raw, parsed.query)
        return self._respond(method, args, headers, lambda: json.dumps(self._answer(method, args)).encode())

    def _respond(self, method: str, args: dict[str, Any], headers: dict[str, str],
                 answer: Callable[[], bytes]) -> tuple[int, dict[str, str], bytes]:
        time.sleep(self.delays.get(method, 0))
        failure = self._take_failure(method)
        if failure is not None:
            args = {**args, "_failed": True}
            if failure.status != 200:
                extra = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
                body = json.dumps({"ok": False, "error": "ratelimited" if failure.status == 429 else "internal"})
                return self._record(method, args, headers, failure.status, extra, body.encode())
            return self._record(method, args, headers, 200, {},
                                json.dumps({"ok": False, "error": failure.error}).encode())
        late = self._take_late(method)
        done = self._record(method, args, headers, 200, {}, answer())
        if late is not None:
            time.sleep(late.seconds)
            if late.hang_up:
                return HANG_UP, {}, b""
        return done

    def _record(self, method: str, args: dict[str, Any], headers: dict[str, str], status: int,
                extra: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        with self._changed:
            self.calls.append(Call(method, args, headers))
            self._changed.notify_all()
        content_type = "application/json" if body.startswith(b"{") else "text/plain"
        return status, {"Content-Type": content_type, **extra}, body

    def _take_failure(self, method: str) -> Failure | None:
        with self._lock:
            for failure in self._failures:
                if failure.method in (method, "*") and failure.times > 0:
                    failure.times -= 1
                    return failure
        return None

    def _take_late(self, method: str) -> Late | None:
        with self._lock:
            for late in self._late:
                if late.method == method and late.times > 0:
                    late.times -= 1
                    return late
        return None

    @staticmethod
    def _arguments(headers: dict[str, str], raw: bytes, query: str) -> dict[str, Any]:
        args: dict[str, Any] = dict(urllib.parse.parse_qsl(query))
        content_type = headers.get("Content-Type", "")
        if "json" in content_type:
            args.update(json.loads(raw or b"{}"))
        elif raw:
            args.update(urllib.parse.parse_qsl(raw.decode()))
        for key in ("blocks", "files", "metadata"):
            if isinstance(args.get(key), str):
                args[key] = json.loads(args[key])
        return args

    def _answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        ts = f"1700000000.{next(self._ts):06d}" if method in ("chat.postMessage", "chat.postEphemeral") else None
        if method == "auth.test":
            return {"ok": True, "url": "https://oncall-test.slack.com/", "team": "Test", "user": "oncall-bot",
                    "team_id": TEAM, "user_id": BOT_USER, "bot_id": BOT_ID}
        if method == "chat.postMessage":
            message = {"type": "message", "ts": ts, "text": args.get("text"), "user": BOT_USER, "bot_id": BOT_ID,
                       **{key: args[key] for key in ("thread_ts", "metadata", "blocks") if args.get(key)}}
            with self._lock:
                self.messages.setdefault(args.get("channel"), []).append(message)
            return {"ok": True, "channel": args.get("channel"), "ts": ts,
                    "message": {"text": args.get("text"), "ts": ts, "thread_ts": args.get("thread_ts")}}
        if method == "chat.update":
            with self._lock:
                for message in self.messages.get(args.get("channel"), []):
                    if message["ts"] == args.get("ts"):
                        message.update({key: args[key] for key in ("text", "blocks", "metadata") if key in args})
            return {"ok": True, "channel": args.get("channel"), "ts": args.get("ts")}
        if method in ("conversations.history", "conversations.replies"):
            return self._history(method, args)
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": ts}
        if method == "apps.connections.open":
            return {"ok": True, "url": self.socket_url}
        if method == "conversations.join":
            return {"ok": True, "channel": {"id": args.get("channel")}}
        if method == "conversations.open":
            return {"ok": True, "channel": {"id": "D" + str(args.get("users", "X"))[1:]}}
        if method == "usergroups.users.list":
            return {"ok": True, "users": self.usergroups.get(args.get("usergroup"), [])}
        if method == "files.getUploadURLExternal":
            file_id = f"F{next(self._files):08d}"
            return {"ok": True, "upload_url": f"{self.base}/upload/{file_id}", "file_id": file_id}
        if method == "files.completeUploadExternal":
            return {"ok": True, "files": [{"id": f["id"], "title": f.get("title")} for f in args.get("files", [])]}
        return {"ok": True}

    def _history(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            posted = [dict(message) for message in self.messages.get(args.get("channel"), [])]
        if method == "conversations.history":     # the channel's own messages, newest first
            found = [m for m in reversed(posted) if m.get("thread_ts") in (None, m["ts"])]
        else:                                     # a thread: its parent, then its replies, oldest first
            found = [m for m in posted if args.get("ts") in (m["ts"], m.get("thread_ts"))]
            if not found:
                return {"ok": False, "error": "thread_not_found"}
        if args.get("include_all_metadata") not in (True, "1", "true"):
            for message in found:
                message.pop("metadata", None)
        start, limit = int(args.get("cursor") or 0), int(args.get("limit") or 100)
        page, more = found[start:start + limit], start + limit < len(found)
        return {"ok": True, "messages": page, "has_more": more,
                "response_metadata": {"next_cursor": str(start + limit) if more else ""}}


# -- requests to the bot, signed like Slack's --------------------------------------------------


def sign(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack sends: v0 HMAC-SHA256 of `v0:{timestamp}:{body}`."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    base = f"v0:{timestamp}:".encode() + body
    signature = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": signature}


_triggers = itertools.count(1)


def slash_command(command: str, text: str, *, user: str = "U0ALICE01", channel: str = "C0INCIDNT",
                  response_url: str = "", trigger_id: str | None = None) -> bytes:
    """A slash command payload as Slack POSTs it (form-encoded)."""
    return urllib.parse.urlencode({
        "token": "legacy-verification-token", "team_id": TEAM, "team_domain": "oncall-test",
        "channel_id": channel, "channel_name": "incidents", "user_id": user, "user_name": user.lower(),
        "command": command, "text": text, "api_app_id": "A0TEST001", "is_enterprise_install": "false",
        "response_url": response_url, "trigger_id": trigger_id or f"{next(_triggers)}.{int(time.time())}.abc",
    }).encode()


def button_click(value: str, *, user: str = "U0ALICE01", channel: str = "C0INCIDNT", message_ts: str = "1.0",
                 trigger_id: str | None = None) -> bytes:
    """A block_actions payload for one of our buttons, as Slack POSTs it."""
    payload = {
        "type": "block_actions", "team": {"id": TEAM, "domain": "oncall-test"},
        "user": {"id": user, "username": user.lower(), "team_id": TEAM}, "api_app_id": "A0TEST001",
        "token": "legacy-verification-token", "trigger_id": trigger_id or f"{next(_triggers)}.{int(time.time())}.btn",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel, "is_ephemeral": False},
        "channel": {"id": channel, "name": "incidents"},
        "message": {"type": "message", "ts": message_ts, "text": "incident"},
        "response_url": "", "actions": [{"action_id": "run:0", "block_id": "b1", "type": "button",
                                         "value": value, "text": {"type": "plain_text", "text": "x"},
                                         "action_ts": str(time.time())}],
    }
    return urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()


def eventually(predicate: Callable[[], Any], timeout: float = 10) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout}s: {predicate}")
        time.sleep(0.02)


def home_opened(user: str = "U0ALICE01", event_id: str | None = None) -> bytes:
    """An Events API app_home_opened delivery, as Slack POSTs it (JSON)."""
    return json.dumps({
        "token": "legacy-verification-token", "team_id": TEAM, "api_app_id": "A0TEST001", "type": "event_callback",
        "event_id": event_id or f"Ev{next(_triggers):08d}", "event_time": int(time.time()),
        "event": {"type": "app_home_opened", "user": user, "channel": "D0HOME001", "tab": "home",
                  "event_ts": str(time.time())},
    }).encode()


def home_button_click(value: str, *, user: str = "U0ALICE01") -> bytes:
    """A block_actions payload for a button on the App Home view."""
    payload = {
        "type": "block_actions", "team": {"id": TEAM, "domain": "oncall-test"},
        "user": {"id": user, "username": user.lower(), "team_id": TEAM}, "api_app_id": "A0TEST001",
        "token": "legacy-verification-token", "trigger_id": f"{next(_triggers)}.{int(time.time())}.home",
        "container": {"type": "view", "view_id": "V0HOME001"},
        "view": {"id": "V0HOME001", "type": "home", "blocks": []},
        "actions": [{"action_id": "run:0", "block_id": "b1", "type": "button", "value": value,
                     "text": {"type": "plain_text", "text": "x"}, "action_ts": str(time.time())}],
    }
    return urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
