"""Several replicas on PostgreSQL next to one bot on SQLite, under the same load, in the same run.

30 users each open incidents in a channel of their own and resolve them, one after the other (each
waits for the announcement before resolving, and for the resolution before opening the next),
1,000 incidents in all, through `oncall-bot serve` processes and the Slack test double:
- one replica on SQLite (the single-machine bot, the baseline);
- three replicas on one PostgreSQL database (created by the bench on the machine's server and
  dropped after), the requests spread over them.
Printed: the acks' p50 and p99, and the time until every message was sent, for each, and the ratios.

    .venv/bin/python bench/replicas.py [--incidents 1000]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from slack_double import SlackDouble, sign, slash_command  # noqa: E402
from test_serve import free_port  # noqa: E402

SECRET = "bench-signing-secret"
USERS = 30
SERVER = "postgresql://postgres@127.0.0.1:5432"


def start(database: str, double: SlackDouble, work: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "SLACK_API_URL": double.api_url, "SLACK_BOT_TOKEN": "xoxb-bench",
           "SLACK_SIGNING_SECRET": SECRET, "ONCALL_DB": database}
    process = subprocess.Popen([sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", "--port", str(port)],
                               env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/healthz", timeout=0.5).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise SystemExit("a replica did not start")


def run_load(urls: list[str], double: SlackDouble, incidents: int) -> tuple[list[float], float]:
    """Acks' latencies, and seconds from the first request until every message went out."""
    latencies: list[float] = []
    lock = threading.Lock()
    replica = itertools.count()
    per_user = [incidents // USERS + (1 if n < incidents % USERS else 0) for n in range(USERS)]

    def send(client: httpx.Client, text: str, channel: str) -> None:
        body = slash_command("/incident", text, channel=channel, response_url=double.response_url(),
                             trigger_id=uuid.uuid4().hex)
        url = urls[next(replica) % len(urls)]
        started = time.perf_counter()
        response = client.post(f"{url}/slack/events", content=body,
                               headers={"Content-Type": "application/x-www-form-urlencoded", **sign(SECRET, body)})
        elapsed = time.perf_counter() - started
        if response.status_code != 200 or response.text:
            raise SystemExit(f"{url} answered {response.status_code}: {response.text}")
        with lock:
            latencies.append(elapsed)

    def posted(channel: str, count: int, in_thread: bool) -> None:
        """Wait, as a person would, until the answer is in Slack."""
        deadline = time.monotonic() + 120
        while len([c for c in double.called("chat.postMessage") if c.args.get("channel") == channel
                   and ("thread_ts" in c.args) == in_thread]) < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"{channel}: an answer was never posted")
            time.sleep(0.02)

    def user(n: int) -> None:
        channel = f"C0BENCH{n:03d}"
        with httpx.Client(timeout=30) as client:
            for k in range(per_user[n]):
                send(client, f"open bench incident {n}-{k}", channel)
                posted(channel, k + 1, in_thread=False)
                send(client, f"resolve done {n}-{k}", channel)
                posted(channel, k + 1, in_thread=True)

    started = time.perf_counter()
    with ThreadPoolExecutor(USERS) as pool:
        list(pool.map(user, range(USERS)))
    # Every resolve: its thread reply went out (as did the announcement and the card's update).
    deadline = time.monotonic() + 300
    while len([c for c in double.called("chat.postMessage") if "thread_ts" in c.args]) < incidents:
        if time.monotonic() > deadline:
            raise SystemExit("not every resolution was posted")
        time.sleep(0.05)
    return latencies, time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--incidents", type=int, default=1000)
    args = parser.parse_args()
    results = {}
    name = f"oncall_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        for label, database, replicas in (("1 replica, SQLite", None, 1),
                                          ("3 replicas, PostgreSQL", f"{SERVER}/{name}", 3)):
            double = SlackDouble()
            with tempfile.TemporaryDirectory() as tmp:
                work = Path(tmp)
                started = [start(database or str(work / "bench.db"), double, work) for _ in range(replicas)]
                try:
                    results[label] = run_load([url for _, url in started], double, args.incidents)
                finally:
                    for process, _ in started:
                        process.terminate()
                    for process, _ in started:
                        process.wait(30)
            double.close()
    finally:
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(f"{args.incidents:,} incidents opened and resolved by {USERS} users through oncall-bot serve "
          "(2 worker processes each)")
    print(f"{'':26}{'ack p50 ms':>12}{'ack p99 ms':>12}{'all sent s':>12}")
    for label, (latencies, seconds) in results.items():
        print(f"{label:26}{statistics.median(latencies) * 1000:12.1f}{percentile(latencies, 0.99) * 1000:12.1f}"
              f"{seconds:12.1f}")
    (base_acks, base_time), (acks, seconds) = results.values()
    p99_ratio = percentile(acks, 0.99) / percentile(base_acks, 0.99)
    print(f"ratio 3 replicas on PostgreSQL / 1 on SQLite: ack p99 {p99_ratio:.2f}, "
          f"time until all sent {seconds / base_time:.2f}")


if __name__ == "__main__":
    main()
