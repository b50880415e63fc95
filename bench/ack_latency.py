"""Ack latency under load: `oncall-bot serve` next to a Bolt app that only acks, in the same run.

Both are served by the same gunicorn settings (bot/server.py), and Bolt runs as the bot runs it
(`process_before_response=True`). oncall-bot is the real `oncall-bot serve` with its worker
processes. The load: `/probe deps` sent every half second, whose five HTTP targets accept and never
answer (2 s timeouts, so probes keep the workers busy), while each round fires 30 signed
`/incident list` commands at once; each HTTP response is the ack Slack waits for. Targets: the
bot's p99 at most 50 ms, and at most 1.3x the Bolt app's.

    .venv/bin/python bench/ack_latency.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from probe_servers import HangingServer  # noqa: E402
from slack_double import SlackDouble, sign, slash_command  # noqa: E402
from test_serve import free_port  # noqa: E402

SECRET = "bench-signing-secret"
CONCURRENT = 30
HANGING = 5
PROBE_EVERY_SECONDS = 0.5


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


def start(kind: str, double: SlackDouble, work: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "SLACK_API_URL": double.api_url, "SLACK_BOT_TOKEN": "xoxb-bench",
           "SLACK_SIGNING_SECRET": SECRET, "ONCALL_DB": str(work / "bench.db"),
           "ONCALL_CONFIG": str(work / "oncall.toml")}
    if kind == "ours":
        argv = [sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", "--port", str(port)]
    else:
        argv = [sys.executable, __file__, "--serve-bolt", str(port)]
    process = subprocess.Popen(argv, env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
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
    stop = threading.Event()

    def keep_probing() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.wait(PROBE_EVERY_SECONDS):
                post(client, url, "/probe", "deps", response_url)

    prober = threading.Thread(target=keep_probing, daemon=True)
    with httpx.Client(timeout=10, limits=httpx.Limits(max_connections=64)) as client, \
            ThreadPoolExecutor(max_workers=CONCURRENT) as pool:
        for _ in range(3):  # warm up
            post(client, url, "/incident", "list", response_url)
        prober.start()
        time.sleep(2)       # the hanging probes are now holding the workers
        for _ in range(rounds):
            fast = [pool.submit(post, client, url, "/incident", "list", response_url) for _ in range(CONCURRENT)]
            latencies.extend(future.result() for future in fast)
            time.sleep(0.5)
    stop.set()
    prober.join()
    return latencies


def summary(latencies: list[float]) -> tuple[float, float, float]:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p99 * 1000, ordered[-1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--serve-bolt", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bolt:
        serve_bolt_that_only_acks(args.serve_bolt)
        return
    double = SlackDouble()
    hanging = [HangingServer() for _ in range(HANGING)]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "oncall.toml").write_text("".join(
            f'[services.deps.probes.hang{n}]\nkind = "http"\nurl = "http://{server.address}/"\n'
            for n, server in enumerate(hanging)))
        for kind in ("bolt", "ours"):
            process, url = start(kind, double, work)
            try:
                results[kind] = summary(measure(url, double.response_url(), args.rounds))
            finally:
                process.terminate()
                process.wait(30)
    for server in hanging:
        server.close()
    double.close()
    print(f"ack latency: {CONCURRENT} concurrent slash commands per round, {args.rounds} rounds, while "
          f"/probe keeps {HANGING} hanging targets busy (every {PROBE_EVERY_SECONDS} s); same gunicorn settings")
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
