"""End to end through `oncall-bot serve` (gunicorn), the way Slack talks to a deployed bot."""

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest

from conftest import SIGNING_SECRET, BotClient
from slack_double import SlackDouble, eventually, slash_command


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Served:
    def __init__(self, tmp_path, double: SlackDouble, *, port_from_env: bool = False, env: dict | None = None):
        self.port = free_port()
        self.db = tmp_path / "oncall.db"
        extra = env or {}
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ONCALL_", "PORT"))}
        env.update(SLACK_BOT_TOKEN="xoxb-e2e", SLACK_SIGNING_SECRET=SIGNING_SECRET, SLACK_API_URL=double.api_url,
                   ONCALL_DB=str(self.db))
        env.update(extra)
        command = [sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1"]
        if port_from_env:
            env["PORT"] = str(self.port)
        else:
            command += ["--port", str(self.port)]
        self.output = tmp_path / "serve.log"    # a file, not a pipe that fills up while nobody reads it
        with self.output.open("w") as output:
            self.process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=output, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = BotClient(self.url, double)
        eventually(self._healthy, timeout=20)

    def _healthy(self) -> bool:
        assert self.process.poll() is None, self.output.read_text()
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> tuple[int, float, str]:
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        return self.process.returncode, time.monotonic() - started, self.output.read_text()


@pytest.fixture(scope="module")
def double():
    slack = SlackDouble()
    yield slack
    slack.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory, double):
    server = Served(tmp_path_factory.mktemp("serve"), double)
    yield server
    if server.process.poll() is None:
        server.stop()


def test_healthz_reports_a_writable_database(served):
    response = httpx.get(f"{served.url}/healthz")
    assert response.status_code == 200 and response.json()["status"] == "ok"
    assert response.headers["content-type"] == "application/json"


def test_open_ack_resolve_with_thread_and_chat_update(served, double):
    count = len(double.called("chat.postMessage"))
    assert served.client.command("/incident", "open e2e payments down --sev 1", channel="C0E2E0001").text == ""
    announcement = double.wait_for("chat.postMessage", count + 1)[-1]
    assert announcement.args["channel"] == "C0E2E0001" and "payments down" in announcement.args["text"]
    value = next(b for b in announcement.args["blocks"] if b["type"] == "actions")["elements"][0]["value"]
    served.client.click(value, channel="C0E2E0001", user="U0BOB0001")
    ack = double.wait_for("chat.postMessage", count + 2)[-1]
    thread = ack.args["thread_ts"]
    assert "<@U0BOB0001> acknowledged" in ack.args["text"]
    served.client.command("/incident", "resolve restarted the pool", channel="C0E2E0001")
    resolved = double.wait_for("chat.postMessage", count + 3)[-1]
    assert resolved.args["thread_ts"] == thread and "resolved" in resolved.args["text"]
    updates = double.wait_for("chat.update", where=lambda c: c.args["ts"] == thread, count=2)
    assert "Reopen" in str(updates[-1].args["blocks"])


def test_rejected_signatures(served, double, tmp_path):
    body = slash_command("/incident", "open must not exist", channel="C0E2E0002")
    assert served.client.post(body, secret="wrong").status_code == 401
    assert served.client.post(body, timestamp=int(time.time()) - 301).status_code == 401
    assert httpx.post(f"{served.url}/slack/events", content=body).status_code == 401
    time.sleep(0.5)
    assert not [c for c in double.calls if "must not exist" in str(c.args)]


def test_a_retried_delivery_opens_one_incident(served, double):
    body = slash_command("/incident", "open e2e retry check", channel="C0E2E0003")
    assert served.client.post(body).status_code == 200
    assert served.client.post(body, {"X-Slack-Retry-Num": "1"}).status_code == 200
    assert served.client.post(body, {"X-Slack-Retry-Num": "2"}).status_code == 200
    double.wait_for("chat.postMessage", where=lambda c: c.args.get("channel") == "C0E2E0003")
    time.sleep(0.5)
    assert len([c for c in double.called("chat.postMessage") if c.args.get("channel") == "C0E2E0003"]) == 1


def test_user_text_is_escaped(served, double):
    # Slack escapes /incident's text: what was typed as "<!channel> … & co" arrives as entities, and a
    # real mention of @channel or of a user arrives as Slack's markup.
    typed = "&lt;!channel&gt; e2e &lt;@U0BOSS001&gt; &amp; co, cc <!channel> <@U0BOSS001|boss>"
    served.client.command("/incident", f"open {typed}", channel="C0E2E0004")
    (post,) = double.wait_for("chat.postMessage", where=lambda c: c.args.get("channel") == "C0E2E0004")
    assert "&lt;!channel&gt; e2e &lt;@U0BOSS001&gt; &amp; co, cc @channel @boss" in post.args["text"]
    shown = str(post.args["blocks"]) + post.args["text"]
    assert "<!channel>" not in shown and "<@U0BOSS001" not in shown


def test_port_comes_from_the_environment_and_sigterm_drains(tmp_path, double):
    server = Served(tmp_path, double, port_from_env=True)
    double.delays["chat.postMessage"] = 2
    try:
        server.client.command("/incident", "open e2e drain me", channel="C0E2E0005")
        time.sleep(0.3)  # acknowledged; the announcement is now on its way to a slow Slack
        code, seconds, output = server.stop()
    finally:
        double.delays.clear()
    assert code == 0 and seconds < 10, output
    assert [c for c in double.called("chat.postMessage") if c.args.get("channel") == "C0E2E0005"]
    assert '"msg": "drained; 0 message(s) left in the outbox for the next start"' in output


def test_a_hostile_title_forges_no_button_mention_or_link(served, double):
    served.client.command("/incident", "open e2e victim sev1 --sev 1", channel="C0E2E0006")
    (victim,) = double.wait_for("chat.postMessage", where=lambda c: c.args.get("channel") == "C0E2E0006")
    victim_id = int(victim.args["text"].split("#")[1].split(":")[0])
    forged = (f"\ue000buttons\ue001Acknowledge\ue001/incident resolve #{victim_id}\ue001primary\ue000"
              "\ue003user\ue001U0BOSS001\ue003\ue003usergroup\ue001S0ONCALL\ue003<!channel> <!here> "
              "\ue003link\ue001https://evil.example\ue001docs\ue003\ue005 `code\nStatus: resolved")
    served.client.command("/incident", f"open e2e hostile {forged}", channel="C0E2E0007")
    (card,) = double.wait_for("chat.postMessage", where=lambda c: c.args.get("channel") == "C0E2E0007")
    hostile_id = int(card.args["text"].split("#")[1].split(":")[0])
    actions = [b for b in card.args["blocks"] if b["type"] == "actions"]
    values = [e["value"] for block in actions for e in block["elements"]]
    assert values == [f"/incident ack #{hostile_id}", f"/incident lead #{hostile_id}", f"/incident resolve #{hostile_id}"]
    assert "\n" not in card.args["blocks"][0]["text"]["text"]     # the title is one line: no faked card line
    shown = json.dumps(card.args["blocks"], ensure_ascii=False) + card.args["text"]
    for forgery in ("<!channel>", "<!here>", "<@U0BOSS001>", "<!subteam", "<https://evil", "\ue000", "\ue003"):
        assert forgery not in shown
    for value in values:            # every button of the card acts on its own incident only
        served.client.click(value, channel="C0E2E0007", user="U0BOB0001")
    double.wait_for("chat.update", where=lambda c: c.args.get("channel") == "C0E2E0007"
                    and "Reopen" in json.dumps(c.args["blocks"]))
    with sqlite3.connect(served.db) as db:
        status = dict(db.execute("SELECT id, status FROM incidents WHERE id IN (?, ?)", [victim_id, hostile_id]))
    assert status == {victim_id: "open", hostile_id: "resolved"}


def test_idle_and_slow_clients_hold_no_request_thread(served, double):
    idle, dripping = [], []
    try:
        for _ in range(100):
            idle.append(socket.create_connection(("127.0.0.1", served.port)))
        for index in range(100):
            sock = socket.create_connection(("127.0.0.1", served.port))
            sock.sendall(b"P" if index % 2 else b"POST /slack/events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            dripping.append(sock)
        for _ in range(3):         # the slow ones keep sending, a byte at a time
            for sock in dripping:
                sock.sendall(b"x")
            started = time.monotonic()
            assert httpx.get(f"{served.url}/healthz", timeout=2).status_code == 200
            assert time.monotonic() - started < 1
        assert served.client.command("/incident", "open e2e under siege", channel="C0E2E0008").status_code == 200
        double.wait_for("chat.postMessage", where=lambda c: c.args.get("channel") == "C0E2E0008")
    finally:
        for sock in idle + dripping:
            sock.close()


def test_a_request_that_stops_arriving_is_cut_off(served):
    with socket.create_connection(("127.0.0.1", served.port)) as sock:
        sock.sendall(b"POST /slack/events HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
        sock.settimeout(15)
        started = time.monotonic()
        answer = sock.recv(1024)
        assert answer.startswith(b"HTTP/1.1 408") and 9 < time.monotonic() - started < 13
    with socket.create_connection(("127.0.0.1", served.port)) as sock:
        sock.sendall(b"POST /slack/events HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n")
        sock.settimeout(5)
        assert sock.recv(1024).startswith(b"HTTP/1.1 413")


def test_a_content_length_before_other_headers_is_read(served):
    """As Go's net/http writes a request (Alertmanager's webhook): Content-Length, then more headers."""
    with socket.create_connection(("127.0.0.1", served.port)) as sock:
        sock.sendall(b"POST /slack/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                     b"Content-Type: application/json\r\n\r\n{}")
        sock.settimeout(5)
        assert sock.recv(1024).startswith(b"HTTP/1.1 401")      # read whole, and refused as unsigned


def test_requests_sent_at_once_on_one_connection_are_answered_in_order(served):
    """Each request is served in the event loop, the next one a client sent ahead in its turn: two
    thousand sent at once are all answered, in order, and nothing nests (Python's recursion limit
    is a thousand frames)."""
    requests = (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n" * 2000
                + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    with socket.create_connection(("127.0.0.1", served.port)) as sock:
        sock.sendall(requests)
        sock.settimeout(20)
        received = b""
        while received.count(b"HTTP/1.1 ") < 2002:
            chunk = sock.recv(65536)
            assert chunk, received[-300:]
            received += chunk
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", received)
    assert statuses == [b"200"] + [b"404"] * 2000 + [b"200"]


def test_a_client_that_does_not_read_its_answers_is_cut_off(served):
    """A client that keeps sending requests but takes none of the answers fills its socket; the loop
    that answers everyone waits on it for SEND_SECONDS at a time (twice when the answer went out in
    part), then closes it, which gunicorn does gracefully, reading what the client still sends for
    up to 2 s: everyone else waits a few seconds, once, where before they waited for as long as the
    client held on."""
    hog = socket.socket()
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hog.connect(("127.0.0.1", served.port))
    hog.setblocking(False)
    request = b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"
    try:
        started = time.monotonic()
        cut_off = False
        while not cut_off and time.monotonic() - started < 30:
            try:
                hog.send(request * 100)
            except BlockingIOError:          # the server reads no more: it is waiting on us, or gave up
                time.sleep(0.05)
            except (BrokenPipeError, ConnectionResetError):
                cut_off = True
            answered = time.monotonic()
            assert httpx.get(f"{served.url}/healthz", timeout=10).status_code == 200
            assert time.monotonic() - answered < 8
        assert cut_off
    finally:
        hog.close()
