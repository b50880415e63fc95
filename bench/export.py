"""`oncall-bot export` of 100,000 incidents, next to the sqlite3 shell writing the same rows.

Both run as fresh processes writing to a file, as a user would run them; the database is the one
bench/mttr.py builds (cached in bench/.cache/). Prints the time of each and the ratio, for CSV
and JSON, and the export's peak memory (flat: rows are streamed).

    .venv/bin/python bench/export.py
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.mttr import CACHE, INCIDENTS, build  # noqa: E402
from bot.store import EXPORT_COLUMNS  # noqa: E402

COLUMNS = ", ".join({"time_to_acknowledge_seconds": "time_to_acknowledge AS time_to_acknowledge_seconds",
                     "time_to_resolve_seconds": "time_to_resolve AS time_to_resolve_seconds"}.get(c, c)
                    for c in EXPORT_COLUMNS)
RUNS = 5


def timed(argv: list[str], out: Path, env: dict[str, str] | None = None) -> tuple[float, int]:
    """Seconds of the fastest of RUNS runs, and the peak memory (KiB) of the last."""
    best = float("inf")
    for _ in range(RUNS):
        with out.open("wb") as sink:
            started = time.perf_counter()
            subprocess.run(argv, stdout=sink, check=True, env=env)
            best = min(best, time.perf_counter() - started)
    return best, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


def main() -> None:
    if not CACHE.exists():
        print(f"building {INCIDENTS:,} incidents in {CACHE.relative_to(ROOT)} …")
        build(CACHE)
    subprocess.run([sys.executable, "-m", "compileall", "-q", "bot", "commands"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)   # as an installed package is: byte-compiled
    env = {**os.environ, "ONCALL_DB": str(CACHE), "ONCALL_CONFIG": ""}
    query = f"SELECT {COLUMNS} FROM incidents ORDER BY id"
    print(f"export of {INCIDENTS:,} incidents, fastest of {RUNS} runs each, fresh processes")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        for fmt, shell_mode in (("csv", "-csv"), ("json", "-json")):
            shell, _ = timed(["sqlite3", "-readonly", shell_mode, "-header", str(CACHE), query], out)
            ours, peak = timed([sys.executable, "-m", "bot", "export", "--format", fmt], out, env)
            print(f"  {fmt:4}  sqlite3 {shell_mode:5} {shell * 1000:7.0f} ms   oncall-bot export {ours * 1000:7.0f} ms"
                  f"   ratio {ours / shell:5.2f}   (goal ≤ 3)   peak memory {peak / 1024:.0f} MB")


if __name__ == "__main__":
    main()
