"""Ack latency under load: `oncall-bot serve` next to a Bolt app that only acks, in the same run.

Both are served by the same gunicorn settings (bot/server.py), and Bolt runs as the bot runs it
(`process_before_response=True`). oncall-bot is the real `oncall-bot serve` with its worker
processes. The load: `/probe deps` sent every half second, whose five HTTP targets accept and never
answer (2 s timeouts, so probes keep the workers busy), while each round fires 30 signed
`/incident list` commands at once; each HTTP response is the ack Slack waits for. Both servers run
for the whole bench, each sent its probes, and their rounds take turns a second apart (the bot's
workers post a round's 30 answers within 0.25-0.7 s, measured here with the test suite running
beside, so what they cost falls on the bot's own round, not on Bolt's). A machine whose speed
drifts (a shared virtual machine's often does, by 2x and more within minutes) then slows both
alike, where running one server after the other would compare two different machines.

The client measures the servers, not itself: the requests are signed before a round starts, and
sent and read on 30 kept-alive sockets by one thread (what an HTTP library adds per request would
be counted in both servers' latencies, and its threads would compete with them for the CPU). The
Slack test double and the hanging targets run in a process of their own, as Slack does on other
machines, at a lower priority than the servers. Targets: the bot's p99 at most 50 ms, and at most
1.3x the Bolt app's.

    .venv/bin/python bench/ack_latency.py [--rounds 40]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from slack_double import sign, slash_command  # noqa: E402
from test_serve import free_port  # noqa: E402

SECRET = "bench-signing-secret"
CONCURRENT = 30
HANGING = 5
PROBE_EVERY_SECONDS = 0.5
ROUND_GAP_SECONDS = 1.0
_CONTENT_LENGTH = re.compile(rb"^content-length:\s*(\d+)", re.I | re.M)


def serve_bolt_that_only_acks(port: int) -> None:
    from slack_bolt import App
    from slack_bolt.adapter.wsgi import SlackRequestHandler
    from slack_sdk import WebClient

    from bot.server import Server
    from bot.times import utc_now
    from bot.worker import WorkerProcesses

    app = App(signing_secret=SECRET, token_verification_enabled=False, process_before_response=True,
              client=WebClient(token="xoxb-bench", base_url=os.environ["SLACK_API_URL"]))

    @app.command("/probe")
    @app.command("/incident")
    def ack_only(ack):
        ack()

    class BoltServer(Server):
        """The bot's gunicorn settings, serving the Bolt app."""

        def load(self) -> SlackRequestHandler:
            return SlackRequestHandler(app)

    BoltServer(lambda: None, "127.0.0.1", port, WorkerProcesses(0, utc_now)).run()


def serve_peers() -> None:
    """The Slack test double and the hanging probe targets, until stdin closes."""
    from probe_servers import HangingServer
    from slack_double import SlackDouble

    os.nice(10)
    double = SlackDouble()
    hanging = [HangingServer() for _ in range(HANGING)]
    print(json.dumps({"api_url": double.api_url, "response_url": double.response_url(),
                      "hanging": [server.address for server in hanging]}), flush=True)
    sys.stdin.read()


def start(kind: str, peers: dict, work: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "SLACK_API_URL": peers["api_url"], "SLACK_BOT_TOKEN": "xoxb-bench",
           "SLACK_SIGNING_SECRET": SECRET, "ONCALL_DB": str(work / "bench.db"),
           "ONCALL_CONFIG": str(work / "oncall.toml")}
    if kind == "ours":
        argv = [sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", "--port", str(port)]
    else:
        argv = [sys.executable, __file__, "--serve-bolt", str(port)]
    process = subprocess.Popen(argv, env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{kind} did not start")


def request(port: int, command: str, text: str, response_url: str) -> bytes:
    """A slash command as Slack sends it, signed now, as the bytes on the wire."""
    body = slash_command(command, text, response_url=response_url)
    headers = {"Host": f"127.0.0.1:{port}", "Content-Type": "application/x-www-form-urlencoded",
               "Content-Length": str(len(body)), **sign(SECRET, body)}
    head = "POST /slack/events HTTP/1.1\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return f"{head}\r\n".encode() + body


def answered(data: bytes) -> bool:
    """Whether `data` holds a whole response to one request; a response other than 200 ends the bench."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return False
    head = data[:end]
    if not head.startswith((b"HTTP/1.1 200 ", b"HTTP/1.0 200 ")):
        raise SystemExit(f"the server answered {data[:200]!r}")
    length = _CONTENT_LENGTH.search(head)
    if length:
        return len(data) >= end + 4 + int(length.group(1))
    return data.endswith(b"0\r\n\r\n")          # chunked


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def exchange(sock: socket.socket, data: bytes) -> None:
    sock.sendall(data)
    received = b""
    while not answered(received):
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit("the server closed a kept-alive connection")
        received += chunk


def fire(selector: selectors.BaseSelector, requests: dict[socket.socket, bytes]) -> list[float]:
    """Sends one request on each socket at once; each one's seconds until its whole response."""
    started: dict[socket.socket, float] = {}
    received = {sock: b"" for sock in requests}
    for sock, data in requests.items():
        started[sock] = time.perf_counter()
        sock.sendall(data)
    latencies = []
    while started:
        for key, _ in selector.select(timeout=10):
            assert isinstance(key.fileobj, socket.socket)
            sock = key.fileobj
            chunk = sock.recv(65536)
            if not chunk:
                raise SystemExit("the server closed a kept-alive connection")
            received[sock] += chunk
            if sock in started and answered(received[sock]):
                latencies.append(time.perf_counter() - started.pop(sock))
    return latencies


class Target:
    """One server under the load: 30 kept-alive connections for the rounds, one for the probes."""

    def __init__(self, port: int, response_url: str):
        self.port = port
        self.response_url = response_url
        self.socks = [connect(port) for _ in range(CONCURRENT)]
        self.selector = selectors.DefaultSelector()
        for sock in self.socks:
            self.selector.register(sock, selectors.EVENT_READ)
        self.latencies: list[float] = []

    def burst(self) -> list[float]:
        # A kept-alive connection the server closed while it waited is readable (its end): connected again.
        for key, _ in self.selector.select(timeout=0):
            assert isinstance(key.fileobj, socket.socket)
            index = self.socks.index(key.fileobj)
            self.selector.unregister(key.fileobj)
            key.fileobj.close()
            self.socks[index] = connect(self.port)
            self.selector.register(self.socks[index], selectors.EVENT_READ)
        return fire(self.selector, {sock: request(self.port, "/incident", "list", self.response_url)
                                    for sock in self.socks})

    def keep_probing(self, stop: threading.Event) -> None:
        with connect(self.port) as sock:
            while not stop.wait(PROBE_EVERY_SECONDS):
                exchange(sock, request(self.port, "/probe", "deps", self.response_url))

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


def measure(targets: list[Target], rounds: int) -> None:
    """Rounds of each target in turn (who goes first alternates), so that whatever else the machine
    does at a moment falls on all of them alike."""
    stop = threading.Event()
    for target in targets:
        target.burst()                                       # warm up
    probers = [threading.Thread(target=target.keep_probing, args=(stop,), daemon=True) for target in targets]
    for prober in probers:
        prober.start()
    time.sleep(2)       # the hanging probes are now holding the workers
    for number in range(rounds):
        for target in targets[number % 2:] + targets[:number % 2]:
            target.latencies += target.burst()
            time.sleep(ROUND_GAP_SECONDS)
    stop.set()
    for prober in probers:
        prober.join()


def summary(latencies: list[float]) -> tuple[float, float, float]:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p99 * 1000, ordered[-1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=40, help="rounds of each server")
    parser.add_argument("--serve-bolt", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--serve-peers", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bolt:
        serve_bolt_that_only_acks(args.serve_bolt)
        return
    if args.serve_peers:
        serve_peers()
        return
    peer_process = subprocess.Popen([sys.executable, __file__, "--serve-peers"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True)
    assert peer_process.stdout is not None and peer_process.stdin is not None
    peers = json.loads(peer_process.stdout.readline())
    processes: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "oncall.toml").write_text("".join(
            f'[services.deps.probes.hang{n}]\nkind = "http"\nurl = "http://{address}/"\n'
            for n, address in enumerate(peers["hanging"])))
        try:
            ports = {}
            for kind in ("bolt", "ours"):
                process, ports[kind] = start(kind, peers, work)
                processes.append(process)
            # Connected once both are up: a kept-alive connection left idle for 5 s is closed.
            targets = {kind: Target(port, peers["response_url"]) for kind, port in ports.items()}
            measure(list(targets.values()), args.rounds)
            for target in targets.values():
                target.close()
        finally:
            for process in processes:
                process.terminate()
                process.wait(30)
    peer_process.stdin.close()
    peer_process.wait(10)
    results = {kind: summary(target.latencies) for kind, target in targets.items()}
    print(f"ack latency: {CONCURRENT} concurrent slash commands per round, {args.rounds} rounds each "
          f"(taking turns), while /probe keeps {HANGING} hanging targets busy (every {PROBE_EVERY_SECONDS} s); "
          "same gunicorn settings")
    print(f"{'':22}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for kind, label in (("bolt", "Bolt app, acks only"), ("ours", "oncall-bot serve")):
        p50, p99, worst = results[kind]
        print(f"{label:22}{p50:10.1f}{p99:10.1f}{worst:10.1f}")
    ours, bolt = results["ours"], results["bolt"]
    print(f"ratio oncall-bot / Bolt: p50 {ours[0] / bolt[0]:.2f}, p99 {ours[1] / bolt[1]:.2f}   "
          f"(targets: p99 ≤ 50 ms: {'ok' if ours[1] <= 50 else 'MISSED'}; "
          f"≤ 1.3x: {'ok' if ours[1] <= 1.3 * bolt[1] else 'MISSED'})")


if __name__ == "__main__":
    main()
