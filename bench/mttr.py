"""/mttr over 100,000 incidents (target < 200 ms), next to the floor: reading the same rows; and
the same on PostgreSQL (goal: within 1.5x of SQLite).

The database (cached in bench/.cache/) holds 100,000 incidents over two years. Timed through the
command's own code path (parse, run and the text rendering), best of several runs:
- `/mttr --weeks 105`, a window holding all 100,000 incidents, and its previous window;
- `/mttr` (this week, about 1,000 incidents);
against the floor measured in the same run: one SELECT fetching started/resolved of every row.

The same incidents are copied (`db copy`'s own code) into a PostgreSQL database of the bench's own
on the machine's server, created for the run and dropped after, and the two commands are timed
there too: the ratio PostgreSQL/SQLite is printed beside the ratio to the floor.

    .venv/bin/python bench/mttr.py
"""

from __future__ import annotations

import os
import random
import sqlite3
import sys
import timeit
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from bot.config import Config  # noqa: E402
from bot.console import Terminal  # noqa: E402
from bot.store import Store  # noqa: E402
from bot.store.copy import copy_history  # noqa: E402
from bot.store.postgres import PostgresStore  # noqa: E402
from bot.store.sqlite import SqliteStore  # noqa: E402
from bot.times import to_iso  # noqa: E402
from commands import registry  # noqa: E402

INCIDENTS = 100_000
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
CACHE = ROOT / "bench" / ".cache" / "mttr-100k.db"
POSTGRES = "postgresql://postgres@127.0.0.1:5432"
GOAL_POSTGRES = 1.5      # PostgreSQL at most this many times SQLite


def build(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    for leftover in path.parent.glob(path.name + "*"):
        leftover.unlink()
    store = SqliteStore(path)
    rng = random.Random(47)
    rows = []
    for index in range(INCIDENTS):
        opened = NOW - timedelta(seconds=rng.uniform(3600, 104 * 7 * 86400))
        resolved = opened + timedelta(seconds=rng.lognormvariate(7.5, 1.2))
        acked = opened + timedelta(seconds=rng.expovariate(1 / 300)) if rng.random() < 0.9 else None
        done = index % 500 != 0 and resolved < NOW
        rows.append({
            "title": f"incident {index}", "severity": rng.choice((1, 2, 2, 3, 3, 3, 4)),
            "service": rng.choice(("api", "web", "worker", "db")), "status": "resolved" if done else "open",
            "opened_by": "U0BENCH01", "opened_at": to_iso(opened), "started_at": to_iso(opened),
            "acknowledged_at": to_iso(acked) if acked and acked < NOW else None,
            "resolved_at": to_iso(resolved) if done else None, "channel": "C0BENCH01",
            "announce_channel": "C0BENCH01", "reopened": 0,
        })
    with store.write():
        for row in rows:
            store.insert_incident(**row)
    store.close()


def best_of(runs: int, action) -> float:
    """Milliseconds of the fastest of `runs` runs."""
    return min(timeit.repeat(action, repeat=runs, number=1)) * 1000


@contextmanager
def postgres_copy(source: Store) -> Iterator[PostgresStore]:
    """`source`'s incidents in a new database on the machine's PostgreSQL, dropped at the end."""
    name = f"oncall_bench_mttr_{os.getpid()}"
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        store = PostgresStore(f"{POSTGRES}/{name}", local_dir=CACHE.parent)
        try:
            copy_history(source, store)
            yield store
        finally:
            store.close()
    finally:
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def mttr(runner: Terminal, text: str):
    def run() -> None:
        reply = runner.invoke(text)
        assert reply.outcome.value == "ok", reply.data
        runner.renderer.text(reply.template, reply.data)
    return run


def main() -> None:
    if not CACHE.exists():
        print(f"building {INCIDENTS:,} incidents in {CACHE.relative_to(ROOT)} …")
        build(CACHE)
    store = SqliteStore(CACHE)
    runner = Terminal(store, Config(), registry(), lambda: NOW)
    reader = sqlite3.connect(CACHE)

    def floor() -> None:
        reader.execute("SELECT started_at, resolved_at FROM incidents").fetchall()

    covered = runner.invoke("/mttr --weeks 105").data
    assert covered["resolved"] + len(covered["open"]) == INCIDENTS, covered["resolved"]
    floor_ms = best_of(5, floor)
    all_ms = best_of(5, mttr(runner, "/mttr --weeks 105"))
    week_ms = best_of(5, mttr(runner, "/mttr"))
    with postgres_copy(store) as postgres:
        on_postgres = Terminal(postgres, Config(), registry(), lambda: NOW)
        assert on_postgres.invoke("/mttr --weeks 105").data == covered, "PostgreSQL must count the same"
        pg_all_ms = best_of(5, mttr(on_postgres, "/mttr --weeks 105"))
        pg_week_ms = best_of(5, mttr(on_postgres, "/mttr"))
    print(f"/mttr over {INCIDENTS:,} incidents ({covered['resolved']:,} resolved in the window, "
          f"{len(covered['open'])} open), best of 5")
    print(f"  floor: SELECT of every row          {floor_ms:8.1f} ms")
    print(f"  /mttr --weeks 105 (all of them)     {all_ms:8.1f} ms   ratio to floor {all_ms / floor_ms:5.2f}"
          f"   target < 200 ms: {'ok' if all_ms < 200 else 'MISSED'}")
    print(f"    on PostgreSQL                     {pg_all_ms:8.1f} ms   ratio to floor {pg_all_ms / floor_ms:5.2f}"
          f"   PostgreSQL/SQLite {pg_all_ms / all_ms:5.2f}   goal <= {GOAL_POSTGRES}: "
          f"{'ok' if pg_all_ms <= GOAL_POSTGRES * all_ms else 'MISSED'}")
    print(f"  /mttr (this week, {runner.invoke('/mttr').data['resolved']:,} resolved)"
          f"       {week_ms:8.1f} ms   ratio to floor {week_ms / floor_ms:5.2f}")
    print(f"    on PostgreSQL                     {pg_week_ms:8.1f} ms   ratio to floor {pg_week_ms / floor_ms:5.2f}"
          f"   PostgreSQL/SQLite {pg_week_ms / week_ms:5.2f}   goal <= {GOAL_POSTGRES}: "
          f"{'ok' if pg_week_ms <= GOAL_POSTGRES * week_ms else 'MISSED'}")


if __name__ == "__main__":
    main()
