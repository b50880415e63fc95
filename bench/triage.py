"""/triage wall time against the slowest of its parts run alone (target <= 1.2x), in the same run.

The service has a git repository of 5,000 commits, a 200 MB log with errors near the end, probes
of the real Postgres and Redis and of a local HTTP server that answers in 300 ms, and this host.
Each part is timed alone through its own command (`/deploys`, `/probe`, `/logs`, and the host
probe), then `/triage` runs them all at once; best of several runs each.

    .venv/bin/python bench/triage.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import timeit
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot import config as config_module  # noqa: E402
from bot.console import Terminal  # noqa: E402
from bot.store.sqlite import SqliteStore  # noqa: E402
from bot.times import utc_now  # noqa: E402
from commands import registry, sections  # noqa: E402
from commands.probe.runner import Target, run_probes  # noqa: E402
from commands.probe.settings import ProbeConfig  # noqa: E402

CACHE = ROOT / "bench" / ".cache"
COMMITS = 5_000
LOG_MB = 200
RUNS = 5


class SlowHealth(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        time.sleep(0.3)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


def repository(path: Path) -> Path:
    """5,000 commits, one a day's worth of minutes apart, the last ones just before now."""
    if (path / "HEAD").exists() or (path / ".git").exists():
        return path
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=path, check=True)
    now = int(time.time())
    stream = []
    for n in range(COMMITS):
        when = now - (COMMITS - n) * 600
        content = f"value = {n}\n".encode()
        stream.append(f"commit refs/heads/main\ncommitter dana <dana@acme.io> {when} +0000\n"
                      f"data {len(f'change {n}')}\nchange {n}\n"
                      f"M 100644 inline src/acme/module_{n % 50}.py\ndata {len(content)}\n".encode() + content + b"\n")
    subprocess.run(["git", "fast-import", "--quiet"], cwd=path, input=b"".join(stream), check=True)
    subprocess.run(["git", "checkout", "-q", "main"], cwd=path, check=True)
    return path


def big_log(path: Path) -> Path:
    if path.exists() and path.stat().st_size >= LOG_MB * 2**20:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    line = "{} INFO api served GET /items/{} in 12 ms\n"
    lines = LOG_MB * 2**20 // len(line.format("2026-11-24 14:00:00,000", 1_000_000))
    end = datetime.now(UTC) - timedelta(minutes=30)     # the quiet hours before the incident
    step = timedelta(hours=48) / lines
    with path.open("w") as out:
        for n in range(lines):
            out.write(line.format((end - (lines - n) * step).strftime("%Y-%m-%d %H:%M:%S,000"), n))
    return path


def with_fresh_errors(log: Path) -> None:
    """Errors in the last minutes, appended anew each run (the big file itself is cached)."""
    trace = textwrap.dedent("""\
        {} ERROR django.request Internal Server Error: /checkout
        Traceback (most recent call last):
          File "/srv/api/src/acme/module_7.py", line 3, in handler
        ValueError: bad value 42
        """)
    with log.open("a") as out:
        for minutes in (4, 3, 2, 1):
            out.write(trace.format((datetime.now(UTC) - timedelta(minutes=minutes)).strftime("%Y-%m-%d %H:%M:%S,000")))


def best_of(action) -> float:
    """Seconds of the fastest of RUNS runs."""
    return min(timeit.repeat(action, repeat=RUNS, number=1))


def main() -> None:
    repo = repository(CACHE / "triage-repo")
    log = big_log(CACHE / "triage-200mb.log")
    health = ThreadingHTTPServer(("127.0.0.1", 0), SlowHealth)
    threading.Thread(target=health.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "oncall.toml").write_text(textwrap.dedent(f"""
            [services.api]
            repo = "{repo}"
            logs = ["{log}"]
            app_paths = ["src/acme/"]
            [services.api.probes.db]
            kind = "postgres"
            dsn = "postgresql://postgres@127.0.0.1:5432/test"
            [services.api.probes.cache]
            kind = "redis"
            url = "redis://127.0.0.1:6379/0"
            [services.api.probes.health]
            kind = "http"
            url = "http://127.0.0.1:{health.server_address[1]}/healthz"
        """))
        config = config_module.load(Path(tmp) / "oncall.toml", registry(), sections(), required=True)
        runner = Terminal(SqliteStore(Path(tmp) / "bench.db"), config, registry(), utc_now)
        runner.invoke("/incident open checkout 500s --service api --started 5m ago")
        with_fresh_errors(log)

        def ok(line: str):
            def run() -> None:
                reply = runner.invoke(line)
                assert reply.outcome.value == "ok", reply.data
            return run

        def host() -> None:
            run_probes([Target("api", ProbeConfig(name="host", kind="host"))], time.monotonic() + 5)

        parts = {"deploys": ok("/deploys api #1"), "probes": ok("/probe api #1"), "logs": ok("/logs api #1"),
                 "host": host}
        alone = {name: best_of(action) for name, action in parts.items()}
        together = best_of(ok("/triage #1"))
        verdict = runner.invoke("/triage #1").data["verdicts"][0]
    health.shutdown()
    slowest = max(alone, key=alone.get)
    print(f"/triage on a {COMMITS:,}-commit repo, a {LOG_MB} MB log, 3 probes (one answering in 300 ms) "
          f"and this host; best of {RUNS}")
    for name, seconds in alone.items():
        print(f"  {name:<8} alone {seconds * 1000:8.1f} ms")
    print(f"  /triage       {together * 1000:8.1f} ms   ratio to the slowest part ({slowest}) "
          f"{together / alone[slowest]:.2f}   (target <= 1.2)")
    print(f"  sum of the parts {sum(alone.values()) * 1000:8.1f} ms   top verdict: {verdict.kind}: {verdict.summary}")


if __name__ == "__main__":
    main()
