"""/probe under hanging dependencies: the fan-out bound and the bot's responsiveness meanwhile.

1. `/probe all` over 20 targets, 5 of which accept connections and never answer (http, https,
   postgres, mysql, redis), with the default 2 s timeout: the wall time against the timeout
   (target: at most 1.3x). For comparison, in the same run: the 15 healthy targets alone, and
   the same 20 probes one after another (five timeouts).
2. The ack latency of other slash commands (signed `/incident list` requests to the real WSGI
   app, bot.app.SlackBot, and a worker, both in-process, with a Slack Web API stub that answers ok
   to anything), p50 and p99, while idle and while `/probe all` keeps hanging (sent every 0.5 s, so
   several requests overlap on the same hanging targets: the most probe threads seen at once is
   printed too, against the number of targets).

Needs the local PostgreSQL, MariaDB and Redis. Run: .venv/bin/python bench/probe.py
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot import config as config_module  # noqa: E402
from bot.app import SlackBot, SlackEnv, web_client  # noqa: E402
from bot.console import Terminal  # noqa: E402
from bot.render import Renderer  # noqa: E402
from bot.store.sqlite import SqliteStore  # noqa: E402
from bot.times import utc_now  # noqa: E402
from bot.worker import Worker  # noqa: E402
from commands import registry, sections  # noqa: E402
from commands.probe.runner import Target, flights_in_the_air, run_probes  # noqa: E402
from commands.probe.settings import ProbeSettings  # noqa: E402

TIMEOUT_SECONDS = 2
RUNS = 3
ACKS = 200
SIGNING_SECRET = "bench-signing-secret"
CACHE = ROOT / "bench" / ".cache"


class Quiet:
    def log_message(self, *args: object) -> None:
        pass


class HealthHandler(Quiet, BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


class SlackStub(Quiet, BaseHTTPRequestHandler):
    """The Slack Web API and response_url: ok to anything."""

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"ok": True, "ts": "1700000000.000100", "channel": "C0BENCH01"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class QuietWSGIHandler(Quiet, WSGIRequestHandler):
    pass


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = 128


def serve_http(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def hanging_server() -> tuple[socket.socket, list[socket.socket]]:
    """Accepts every connection, never sends a byte."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=256)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            held.append(listener.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    return listener, held


def config_text(health_port: int, hang_port: int) -> str:
    hang = f"127.0.0.1:{hang_port}"
    healthy = {
        **{f"pg{n}": ("postgres", 'dsn = "postgresql://postgres@127.0.0.1:5432/test"') for n in range(3)},
        **{f"mysql{n}": ("mysql", 'dsn = "mysql://root@127.0.0.1:3306/test"') for n in range(3)},
        **{f"redis{n}": ("redis", 'url = "redis://127.0.0.1:6379/0"') for n in range(3)},
        **{f"web{n}": ("http", f'url = "http://127.0.0.1:{health_port}/healthz{n}"') for n in range(3)},
        **{f"port{n}": ("tcp", 'address = "127.0.0.1:5432"') for n in range(2)},
        "machine": ("host", "load_per_cpu = 1000"),
    }
    hanging = {
        "api": ("http", f'url = "http://{hang}/healthz"'), "tls": ("http", f'url = "https://{hang}/healthz"'),
        "db": ("postgres", f'dsn = "postgresql://postgres@{hang}/test"'),
        "orders": ("mysql", f'dsn = "mysql://root@{hang}/test"'), "cache": ("redis", f'url = "redis://{hang}/0"'),
    }
    text = ""
    for service, probes in (("healthy", healthy), ("hanging", hanging)):
        for name, (kind, target) in probes.items():
            text += f'[services.{service}.probes.{name}]\nkind = "{kind}"\n{target}\ntimeout = "{TIMEOUT_SECONDS}s"\n'
    return text


def wait_for_landing() -> None:
    """Let abandoned probes of the previous run end, so runs do not share flights."""
    deadline = time.monotonic() + 10
    while flights_in_the_air() and time.monotonic() < deadline:
        time.sleep(0.05)


def timed(action) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def fan_out(local: Terminal, config: config_module.Config) -> dict[str, float]:
    everything = [Target(service, probe) for service, settings in config.services.items()
                  for probe in ProbeSettings.of(settings).probes.values()]

    def one_after_another() -> None:
        for target in everything:
            run_probes([target], time.monotonic() + 30)

    figures: dict[str, list[float]] = {"all": [], "healthy": []}
    for _ in range(RUNS):
        for name, action in (("all", lambda: local.invoke("/probe all")),
                             ("healthy", lambda: local.invoke("/probe healthy"))):
            wait_for_landing()
            figures[name].append(timed(action))
    wait_for_landing()
    sequential = timed(one_after_another)
    reply = local.invoke("/probe all")
    counts = reply.data["counts"]
    assert counts == {"down": 5, "degraded": 0, "ok": 15}, counts
    return {name: statistics.median(values) for name, values in figures.items()} | {"sequential": sequential}


def sign(body: bytes) -> dict[str, str]:
    timestamp = str(int(time.time()))
    digest = hmac.new(SIGNING_SECRET.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": f"v0={digest}",
            "Content-Type": "application/x-www-form-urlencoded"}


def slash(command: str, text: str, response_url: str, serial: int) -> bytes:
    return urllib.parse.urlencode({
        "team_id": "T0BENCH01", "channel_id": "C0BENCH01", "user_id": "U0BENCH01", "user_name": "bench",
        "command": command, "text": text, "api_app_id": "A0BENCH01", "response_url": response_url,
        "trigger_id": f"{serial}.{time.time_ns()}.bench",
    }).encode()


def ack_latencies(bot_url: str, response_url: str, hanging_probes: bool) -> tuple[list[float], int]:
    stop = threading.Event()
    serial = iter(range(10**9))

    def keep_probing() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                body = slash("/probe", "all", response_url, next(serial))
                client.post(f"{bot_url}/slack/events", content=body, headers=sign(body))
                stop.wait(0.5)

    prober = threading.Thread(target=keep_probing, daemon=True)
    if hanging_probes:
        prober.start()
        time.sleep(0.5)
    latencies, most_flights = [], 0
    with httpx.Client(timeout=10) as client:
        for _ in range(ACKS):
            body = slash("/incident", "list", response_url, next(serial))
            started = time.monotonic()
            response = client.post(f"{bot_url}/slack/events", content=body, headers=sign(body))
            latencies.append(time.monotonic() - started)
            assert response.status_code == 200, response.text
            most_flights = max(most_flights, len(flights_in_the_air()))
            time.sleep(0.01)
    stop.set()
    if hanging_probes:
        prober.join()
    return latencies, most_flights


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    health = serve_http(HealthHandler)
    stub = serve_http(SlackStub)
    listener, _held = hanging_server()
    work = Path(tempfile.mkdtemp(dir=CACHE))
    (work / "oncall.toml").write_text(config_text(health.server_address[1], listener.getsockname()[1]))
    config = config_module.load(work / "oncall.toml", registry(), sections(), required=True)

    local = Terminal(SqliteStore(work / "fanout.db"), config, registry(), utc_now)
    figures = fan_out(local, config)
    print(f"/probe all: 20 targets, 5 hanging, timeout {TIMEOUT_SECONDS} s (median of {RUNS} runs)")
    fan_out_ratio, sequential_ratio = figures["all"] / TIMEOUT_SECONDS, figures["sequential"] / TIMEOUT_SECONDS
    print(f"  wall time                         {figures['all']:.2f} s   ratio to the timeout {fan_out_ratio:.2f}"
          "  (target <= 1.30)")
    print(f"  baseline: the 15 healthy alone    {figures['healthy']:.2f} s")
    print(f"  baseline: one after another       {figures['sequential']:.2f} s   ratio {sequential_ratio:.2f}")

    wait_for_landing()
    stub_url = f"http://127.0.0.1:{stub.server_address[1]}"
    env = SlackEnv("xoxb-bench", SIGNING_SECRET, f"{stub_url}/api/")
    store = SqliteStore(work / "slack.db")
    worker = Worker(store, config, registry(), web_client(env), Renderer(config.timezone, utc_now), utc_now)
    bot = SlackBot(env, config, store, registry(), queued=worker.wake)
    worker.start()
    server = make_server("127.0.0.1", 0, bot, server_class=ThreadingWSGIServer, handler_class=QuietWSGIHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    bot_url = f"http://127.0.0.1:{server.server_address[1]}"
    idle, _ = ack_latencies(bot_url, f"{stub_url}/response", hanging_probes=False)
    busy, most_flights = ack_latencies(bot_url, f"{stub_url}/response", hanging_probes=True)
    server.shutdown()
    worker.stop(5)
    print(f"ack latency of /incident list over HTTP (SlackBot on wsgiref and a worker, in-process, {ACKS} signed "
          "requests each; bench/ack_latency.py measures `serve` itself)")
    for label, values in (("idle", idle), ("while /probe all hangs", busy)):
        p50, p99 = percentile(values, 0.5) * 1000, percentile(values, 0.99) * 1000
        print(f"  {label:<24} p50 {p50:6.1f} ms   p99 {p99:6.1f} ms")
    print(f"  ratio busy/idle          p50 {percentile(busy, 0.5) / percentile(idle, 0.5):6.2f}      "
          f"p99 {percentile(busy, 0.99) / percentile(idle, 0.99):6.2f}")
    targets = sum(len(ProbeSettings.of(config.services[name]).probes) for name in ("healthy", "hanging"))
    print(f"  probe threads at once, at most: {most_flights} (targets: {targets})")


if __name__ == "__main__":
    main()
