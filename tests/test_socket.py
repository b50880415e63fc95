"""`oncall-bot socket` end to end: Socket Mode envelopes from a WebSocket server standing in for Slack."""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest
from websockets.sync.server import serve

from slack_double import SlackDouble, eventually, slash_command


class SocketModeSlack:
    """Hands envelopes to whichever bot connects, and collects the acks it sends back."""

    def __init__(self):
        self.outgoing: queue.Queue[dict] = queue.Queue()
        self.acks: list[dict] = []
        self.connected = threading.Event()
        self.server = serve(self._session, "127.0.0.1", 0)
        self.url = f"ws://127.0.0.1:{self.server.socket.getsockname()[1]}/link"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _session(self, websocket) -> None:
        websocket.send(json.dumps({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0TEST001"}}))
        self.connected.set()
        while True:
            try:
                websocket.send(json.dumps(self.outgoing.get(timeout=0.05)))
            except queue.Empty:
                pass
            try:
                self.acks.append(json.loads(websocket.recv(timeout=0.05)))
            except TimeoutError:
                pass
            except Exception:
                return

    def close(self):
        self.server.shutdown()


@pytest.fixture
def socket_slack():
    slack = SocketModeSlack()
    yield slack
    slack.close()


def envelope(envelope_id: str, text: str, channel: str) -> dict:
    payload = dict(urllib.parse.parse_qsl(slash_command("/incident", text, channel=channel).decode()))
    return {"envelope_id": envelope_id, "type": "slash_commands", "payload": payload, "accepts_response_payload": True}


def test_socket_mode_answers_dedupes_resent_envelopes_and_drains_on_sigterm(tmp_path, socket_slack):
    double = SlackDouble()
    double.socket_url = socket_slack.url
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ONCALL_"))}
    env.update(SLACK_BOT_TOKEN="xoxb-socket", SLACK_APP_TOKEN="xapp-socket", SLACK_API_URL=double.api_url,
               ONCALL_DB=str(tmp_path / "oncall.db"))
    process = subprocess.Popen([sys.executable, "-m", "bot", "socket"], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert socket_slack.connected.wait(20), "the bot never connected"
        (opened,) = double.called("apps.connections.open")
        assert opened.headers["Authorization"] == "Bearer xapp-socket"
        first = envelope("env-1", "open socket db down", "C0SOCKET1")
        socket_slack.outgoing.put(first)
        socket_slack.outgoing.put({**first, "retry_attempt": 1, "retry_reason": "timeout"})
        (post,) = double.wait_for("chat.postMessage", timeout=20)
        assert post.args["channel"] == "C0SOCKET1" and "socket db down" in post.args["text"]
        assert post.headers["Authorization"] == "Bearer xoxb-socket"
        eventually(lambda: len(socket_slack.acks) >= 2)
        assert {ack["envelope_id"] for ack in socket_slack.acks} == {"env-1"}
        time.sleep(0.5)
        assert len(double.called("chat.postMessage")) == 1

        double.delays["chat.postMessage"] = 1.5
        socket_slack.outgoing.put(envelope("env-2", "resolve #1", "C0SOCKET1"))
        eventually(lambda: len(socket_slack.acks) >= 3)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0 and time.monotonic() - started < 10, output
        assert len(double.called("chat.postMessage")) == 2, output
    finally:
        if process.poll() is None:
            process.kill()
        double.close()
