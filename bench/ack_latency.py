"""Ack latency under load: oncall-bot next to a minimal Bolt app, measured in the same run.

Both are served by the same gunicorn settings (`bot/server.py`) and talk to the Slack test double.
Each round starts 10 slow commands (2 s of work each), then fires 30 slash commands at once and
times each HTTP response, which is the ack Slack waits for (3 s at most; our target: well under
100 ms). The minimal Bolt app does what Bolt's docs show: ack(), then the work, in the listener.

    .venv/bin/python bench/ack_latency.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from slack_double import SlackDouble, sign, slash_command  # noqa: E402

SECRET = "bench-signing-secret"
SLOW_SECONDS = 2.0
SLOW_COMMANDS = 10
CONCURRENT = 30


def serve_ours(port: int) -> None:
    from bot.app import SlackBot, SlackEnv
    from bot.command import Command, Reply
    from bot.config import Config
    from bot.server import Server
    from bot.store.sqlite import SqliteStore
    from commands import registry

    def slow(ctx, args) -> Reply:
        time.sleep(SLOW_SECONDS)
        return Reply("commands_help", {"commands": [], "console": False})

    commands = {**registry(), "slow": Command("slow", "sleeps", "", lambda text: text, slow)}
    env = SlackEnv("xoxb-bench", SECRET, os.environ["SLACK_API_URL"])
    Server(lambda: SlackBot(env, Config(), SqliteStore(os.environ["ONCALL_DB"]), commands), "127.0.0.1", port).run()


def serve_minimal_bolt(port: int) -> None:
    from slack_bolt import App
    from slack_bolt.adapter.wsgi import SlackRequestHandler
    from slack_sdk import WebClient

    from bot.server import Server

    class MinimalBolt:
        def start(self) -> None:
            app = App(signing_secret=SECRET, token_verification_enabled=False,
                      client=WebClient(token="xoxb-bench", base_url=os.environ["SLACK_API_URL"]))

            @app.command("/slow")
            def slow(ack, respond):
                ack()
                time.sleep(SLOW_SECONDS)

            @app.command("/incident")
            def fast(ack):
                ack()

            self.handler = SlackRequestHandler(app)

        def __call__(self, environ, start_response):
            return self.handler(environ, start_response)

        def drain(self, seconds: float) -> None:
            pass

    Server(MinimalBolt, "127.0.0.1", port).run()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(kind: str, double: SlackDouble, db: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "SLACK_API_URL": double.api_url, "ONCALL_DB": str(db), "SLACK_BOT_TOKEN": "xoxb-bench"}
    process = subprocess.Popen([sys.executable, __file__, "--serve", kind, str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.post(f"{url}/slack/events", content=b"", timeout=0.5)
            return process, url
        except httpx.HTTPError:
            time.sleep(0.05)
    raise SystemExit(f"{kind} did not start")


def post(client: httpx.Client, url: str, command: str, text: str, response_url: str) -> float:
    body = slash_command(command, text, response_url=response_url)
    headers = {"Content-Type": "application/x-www-form-urlencoded", **sign(SECRET, body)}
    started = time.perf_counter()
    response = client.post(f"{url}/slack/events", content=body, headers=headers)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise SystemExit(f"{url} answered {response.status_code}: {response.text}")
    return elapsed


def measure(url: str, response_url: str, rounds: int) -> list[float]:
    latencies: list[float] = []
    with httpx.Client(timeout=10, limits=httpx.Limits(max_connections=64)) as client, \
            ThreadPoolExecutor(max_workers=CONCURRENT + SLOW_COMMANDS) as pool:
        for _ in range(3):  # warm up
            post(client, url, "/incident", "list", response_url)
        for _ in range(rounds):
            slow = [pool.submit(post, client, url, "/slow", "", response_url) for _ in range(SLOW_COMMANDS)]
            for future in slow:
                future.result()
            time.sleep(0.1)  # the slow work is now running
            fast = [pool.submit(post, client, url, "/incident", "list", response_url) for _ in range(CONCURRENT)]
            latencies.extend(future.result() for future in fast)
            time.sleep(SLOW_SECONDS)
    return latencies


def summary(latencies: list[float]) -> tuple[float, float, float]:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p99 * 1000, ordered[-1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        (serve_ours if args.serve[0] == "ours" else serve_minimal_bolt)(int(args.serve[1]))
        return
    double = SlackDouble()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("bolt", "ours"):
            process, url = start(kind, double, Path(tmp) / "bench.db")
            try:
                results[kind] = summary(measure(url, double.response_url(), args.rounds))
            finally:
                process.terminate()
                process.wait(20)
    double.close()
    print(f"ack latency: {CONCURRENT} concurrent slash commands while {SLOW_COMMANDS} slow ones "
          f"({SLOW_SECONDS:.0f} s each) run; {args.rounds} rounds; gunicorn gthread, same settings for both")
    print(f"{'':16}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for kind, label in (("bolt", "minimal Bolt"), ("ours", "oncall-bot")):
        p50, p99, worst = results[kind]
        print(f"{label:16}{p50:10.1f}{p99:10.1f}{worst:10.1f}")
    print(f"ratio oncall-bot / minimal Bolt: p50 {results['ours'][0] / results['bolt'][0]:.2f}, "
          f"p99 {results['ours'][1] / results['bolt'][1]:.2f}   (target: oncall-bot p99 < 100 ms)")


if __name__ == "__main__":
    main()
