"""`oncall-bot export` of 100,000 incidents, next to the sqlite3 shell writing the same rows.

Both run as fresh processes writing to a file, as a user would run them; the database is the one
bench/mttr.py builds, with three timeline entries an incident and a follow-up every tenth (cached in
bench/.cache/). The shell's JSON holds each incident's timeline and follow-ups too, as ours does.
Prints the time of each and the ratio, for CSV and JSON, and the export's peak memory (flat: rows
are streamed).

    .venv/bin/python bench/export.py
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.mttr import CACHE, INCIDENTS, build  # noqa: E402
from bot.store import EXPORTED, open_store  # noqa: E402

EXPORT_CACHE = CACHE.with_name("export-100k.db")

COLUMNS = ", ".join(f"{column} AS {name}" if column != name else name for name, column in EXPORTED)
LISTS = """,
    json((SELECT json_group_array(json_object('when', at, 'who', "user", 'kind', kind, 'text', text))
          FROM (SELECT at, "user", kind, text FROM events WHERE incident_id = incidents.id ORDER BY at, id)))
        AS timeline,
    json((SELECT json_group_array(json_object('text', text, 'owner', owner,
                                              'done', json(iif(done_at IS NULL, 'false', 'true'))))
          FROM (SELECT text, owner, done_at FROM followups WHERE incident_id = incidents.id ORDER BY number)))
        AS followups"""
RUNS = 5


def timed(argv: list[str], out: Path, env: dict[str, str] | None = None) -> tuple[float, int]:
    """Seconds of the fastest of RUNS runs, and the largest peak memory (KiB) of the runs."""
    best, peak = float("inf"), 0
    for _ in range(RUNS):
        with out.open("wb") as sink:
            started = time.perf_counter()
            process = subprocess.Popen(argv, stdout=sink, env=env)
            _, status, usage = os.wait4(process.pid, 0)
            best = min(best, time.perf_counter() - started)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode:
            raise subprocess.CalledProcessError(process.returncode, argv)
        peak = max(peak, usage.ru_maxrss)
    return best, peak


def with_timelines(path: Path) -> None:
    """The /mttr bench's incidents, migrated, with their timelines and follow-ups."""
    if not CACHE.exists():
        print(f"building {INCIDENTS:,} incidents in {CACHE.relative_to(ROOT)} …")
        build(CACHE)
    shutil.copyfile(CACHE, path)
    open_store(path).close()
    db = sqlite3.connect(path)
    incidents = db.execute("SELECT id, opened_at, acknowledged_at, resolved_at FROM incidents").fetchall()
    db.executemany('INSERT INTO events (incident_id, at, "user", kind, text, data) VALUES (?, ?, ?, ?, ?, ?)',
                   [(number, at, "U0BENCH01", kind, f"{kind}: checkout returns 500 after the deploy", "{}")
                    for number, opened, acked, resolved in incidents
                    for kind, at in (("opened", opened), ("acknowledged", acked), ("resolved", resolved)) if at])
    db.executemany("INSERT INTO followups (incident_id, number, text, owner, created_by, created_at) "
                   "VALUES (?, 1, 'add an alert on the pool', 'U0BENCH02', 'U0BENCH01', ?)",
                   [(number, opened) for number, opened, _, _ in incidents[::10]])
    db.commit()
    db.close()


def main() -> None:
    if not EXPORT_CACHE.exists():
        with_timelines(EXPORT_CACHE)
        # Afresh: a child's peak memory counts what it was forked from, and building took plenty.
        os.execv(sys.executable, [sys.executable, *sys.argv])
    subprocess.run([sys.executable, "-m", "compileall", "-q", "bot", "commands"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)   # as an installed package is: byte-compiled
    env = {**os.environ, "ONCALL_DB": str(EXPORT_CACHE), "ONCALL_CONFIG": ""}
    subprocess.run([sys.executable, "-m", "bot", "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    queries = {"csv": f"SELECT {COLUMNS} FROM incidents ORDER BY id",
               "json": f"SELECT {COLUMNS}{LISTS} FROM incidents ORDER BY id"}
    print(f"export of {INCIDENTS:,} incidents, fastest of {RUNS} runs each, fresh processes")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        for fmt, shell_mode in (("csv", "-csv"), ("json", "-json")):
            shell, _ = timed(["sqlite3", "-readonly", shell_mode, "-header", str(EXPORT_CACHE), queries[fmt]], out)
            ours, peak = timed([sys.executable, "-m", "bot", "export", "--format", fmt], out, env)
            print(f"  {fmt:4}  sqlite3 {shell_mode:5} {shell * 1000:7.0f} ms   oncall-bot export {ours * 1000:7.0f} ms"
                  f"   ratio {ours / shell:5.2f}   (goal ≤ 3)   peak memory {peak / 1024:.0f} MB")


if __name__ == "__main__":
    main()
