"""Local servers for the probe tests: an HTTP(S) server with misbehaving routes, a TCP server that
accepts and never answers, one whose backlog is full (connects time out), and a closed port; and
the `web` and `hanging` fixtures (test modules import them by name)."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

TOKEN = "Bearer t0ken-from-env-9f8e7d"
SLOW_SECONDS = 5
DRIP_SECONDS = 5


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: WebServer

    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
        self._reply(200, "text/plain", b"")

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?")[0]
        if path == "/ok":
            self._reply(200, "application/json", json.dumps({"status": "ok", "checks": {"db": "up"}}).encode())
        elif path == "/fail":
            self._reply(500, "text/plain", b"upstream connect error or disconnect/reset before headers")
        elif path == "/html-fail":
            self._reply(503, "text/html", b"<html><body>" + b"x" * 5000 + b"</body></html>")
        elif path == "/slow":
            self.server.stopping.wait(SLOW_SECONDS)
            self._reply(200, "text/plain", b"late")
        elif path == "/slowish":
            time.sleep(0.3)
            self._reply(200, "text/plain", b"ok")
        elif path == "/drip":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(DRIP_SECONDS * 10))
            self.end_headers()
            for _ in range(DRIP_SECONDS * 10):
                if self.server.stopping.wait(0.1):
                    return
                self.wfile.write(b".")
                self.wfile.flush()
        elif path == "/redirect":
            self._reply(301, "text/plain", b"", location="/ok")
        elif path == "/elsewhere":     # the same server under another host name: another origin
            self._reply(302, "text/plain", b"", location=f"http://localhost:{self.server.server_address[1]}/ok")
        elif path == "/loop":
            self._reply(302, "text/plain", b"", location="/loop")
        elif path == "/auth":
            ok = self.headers.get("Authorization") == TOKEN
            self._reply(200 if ok else 401, "text/plain", b"welcome" if ok else b"who are you")
        else:
            self._reply(404, "text/plain", b"no such page")

    def _reply(self, status: int, content_type: str, body: bytes, location: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if location:
            self.send_header("Location", location)
        self.end_headers()
        self.wfile.write(body)


class WebServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 64     # the default 5 drops connects of probes started together: a 1 s SYN retry

    def __init__(self, tls: ssl.SSLContext | None = None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.stopping = threading.Event()
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()


class HangingServer:
    """Accepts every connection and never sends a byte."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


class FullBacklogServer:
    """Listens with a full backlog and never accepts: a TCP connect to it times out."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=0)
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.filler = socket.create_connection(("127.0.0.1", self.port), timeout=1)

    def close(self) -> None:
        self.filler.close()
        self.sock.close()


def closed_port() -> int:
    """A port nothing listens on (bound and released, so not some other test's server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def web():
    server = WebServer()
    yield server
    server.close()


@pytest.fixture
def hanging():
    server = HangingServer()
    yield server
    server.close()
