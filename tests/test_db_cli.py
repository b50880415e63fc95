"""`oncall-bot db migrate` and `db copy`, through `python -m bot` as operators run them, against the
machine's PostgreSQL (a database of each test's own) and SQLite files."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from test_cli import oncall

from bot.store import HISTORY, NOT_HISTORY, RESOLVED, AlertGroup, Store, WatchCheck
from bot.store.copy import HistoriesDiffer, copy_history
from bot.store.postgres import PostgresStore
from bot.store.sqlite import SqliteStore
from postgres_servers import create_database, drop_database

START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def make_history(store: Store, incidents: int = 3) -> None:
    """Something in every table of HISTORY: incidents in each state, their timeline, a weekly report,
    outbox items sent, given up on and pending, work done and work waiting, an alert group."""
    for number in range(1, incidents + 1):
        opened = START + timedelta(hours=number)
        incident_id = store.insert_incident(
            title=f"checkout returns 500 ({number})", severity=1 + number % 4, service="api", status="open",
            opened_by="U0ALICE01", opened_at=opened, started_at=opened - timedelta(minutes=5), channel="C0INCIDNT",
            announce_channel="C0INCIDNT", thread_ts=f"1700000000.{number:06d}")
        store.add_event(incident_id, at=opened, user="U0ALICE01", kind="opened", text=f"incident {number}")
        if number % 3 != 0:
            store.update_incident(incident_id, status="acknowledged", acknowledged_at=opened + timedelta(minutes=2),
                                  acknowledged_by="U0BOB0001")
        if number % 3 == 1:
            store.update_incident(incident_id, status=RESOLVED, resolved_at=opened + timedelta(minutes=47),
                                  resolved_by="U0BOB0001", resolution="pool size back to 50", cause="deploy:" + "a" * 40)
            store.add_event(incident_id, at=opened + timedelta(minutes=47), user="U0BOB0001", kind="triage",
                            data={"service": "api", "signatures": [f"sig-{number}"], "ratio": 0.5, "ok": True})
            store.update_incident(incident_id, lead="U0BOB0001", postmortem_at=opened + timedelta(days=1))
            store.add_followup(incident_id, text="alert on pool size", owner="U0ALICE01", by="U0BOB0001",
                               at=opened + timedelta(minutes=50))
            store.followup_done(incident_id, 1, by="U0ALICE01", at=opened + timedelta(days=2))
            store.set_reminder(incident_id, "postmortem_due", snoozed_until=opened + timedelta(hours=3),
                               reminded_for=opened + timedelta(hours=2))
            store.add_watch_check(WatchCheck(incident_id, opened + timedelta(minutes=48), errors=0, errors_before=12,
                                             probes_failing=0))
    store.claim_report("2026-W45", "C0REPORTS", START, "web-1:42")
    sent, failed, pending = (store.enqueue(kind=kind, payload={"text": kind, "blocks": [{"type": "divider"}]},
                                           now=START, request_id="req1", incident_id=1, channel="C0INCIDNT",
                                           user="U0ALICE01", response_url="https://hooks.example/r")
                             for kind in ("announce", "message", "update"))
    store.outbox_sent(sent, START + timedelta(seconds=1), channel="C0INCIDNT", ts="1700000000.000001")
    store.outbox_failed(failed, START + timedelta(seconds=2), "not_in_channel")
    store.outbox_retry(pending, START + timedelta(minutes=1), "internal_error")
    store.queue_work("command:1.2.abc", "command", {"text": "/incident ack"}, START)
    store.work_done(store.claim_work(START, timedelta(seconds=90)).id, START + timedelta(seconds=3))
    store.queue_work("command:1.3.abc", "command", {"text": "/mttr"}, START)
    store.update_incident(1, source="alertmanager:prom", dedup_key='{}:{alertname="Down"}')
    store.save_alert_group(AlertGroup("alertmanager:prom", '{}:{alertname="Down"}', 1,
                                      {"f1": {"status": "resolved", "labels": {"alertname": "Down"}}}, START))


def everything(store: Store) -> dict[str, list[dict]]:
    return {table.name: store.rows(table, limit=100_000) for table in HISTORY}


@pytest.fixture
def sqlite_history(tmp_path: Path) -> Path:
    path = tmp_path / "oncall.db"
    store = SqliteStore(path)
    make_history(store)
    store.close()
    return path


def test_migrate_applies_the_schema_once_and_says_what_it_applied(tmp_path, postgres_url):
    for location, names in ((str(tmp_path / "new.db"), "0001_incidents_timeline_outbox"),
                            (postgres_url, "0001_schema")):
        first = oncall(tmp_path, "db", "migrate", env={"ONCALL_DB": location})
        assert first.returncode == 0 and first.stderr == ""
        assert first.stdout.startswith("Applied ") and names in first.stdout and "postgres@" not in first.stdout
        again = oncall(tmp_path, "db", "migrate", env={"ONCALL_DB": location})
        assert again.returncode == 0 and "is current; nothing to apply" in again.stdout
    with psycopg.connect(postgres_url) as conn:
        tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {table.name for table in HISTORY} <= tables


@pytest.mark.parametrize("location, said", [
    ("postgresql://postgres@127.0.0.1:1/oncall", "Connection refused"),
    ("postgresql://postgres@127.0.0.1:5432/oncall_no_such_database", "does not exist"),
    ("no/such/dir/oncall.db", "the directory no/such/dir does not exist"),
])
def test_migrate_of_a_database_it_cannot_reach_is_one_line_and_exit_2(tmp_path, location, said):
    result = oncall(tmp_path, "db", "migrate", env={"ONCALL_DB": location})
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("oncall-bot: ONCALL_DB: ") and said in result.stderr
    assert result.stderr.count("\n") == 1


def test_copy_moves_a_whole_history_into_postgresql_and_a_second_run_copies_nothing(
        tmp_path, sqlite_history, postgres_url):
    source = SqliteStore(sqlite_history)
    expected = everything(source)
    assert all(expected.values()), "the history must fill every table"
    first = oncall(tmp_path, "db", "copy", "--from", str(sqlite_history), "--to", postgres_url)
    assert first.returncode == 0, first.stderr
    counts = {line.split()[0]: line.split()[1] for line in first.stdout.splitlines()[1:]}
    assert counts == {name: str(len(rows)) for name, rows in expected.items()}

    target = PostgresStore(postgres_url, local_dir=tmp_path)
    try:
        assert everything(target) == expected
        for number in (1, 2, 3):
            assert target.incident(number) == source.incident(number)
            assert target.events(number) == source.events(number)
        week = (START - timedelta(days=1), START + timedelta(days=1))
        assert target.resolutions(*week, slowest=5) == source.resolutions(*week, slowest=5)   # durations too
        assert target.outbox_sent_message(1) == ("C0INCIDNT", "1700000000.000001")
        assert target.report_claimed("2026-W45") == source.report_claimed("2026-W45")
        assert not target.queue_work("command:1.2.abc", "command", {}, START)      # a redelivery is still known
        waiting = target.claim_work(START, timedelta(seconds=15))
        assert waiting is not None and waiting.key == "command:1.3.abc"           # and waiting work is run there
        pending = target.claim_outbox(START + timedelta(minutes=2), timedelta(seconds=60))
        assert pending is not None and pending.id == 3 and pending.attempts == 1

        again = oncall(tmp_path, "db", "copy", "--from", f"sqlite:///{sqlite_history}", "--to", postgres_url)
        assert again.returncode == 0, again.stderr
        assert all(line.split()[1] == "0" for line in again.stdout.splitlines()[1:]), again.stdout

        # Numbers and ids the target hands out next come after the ones it was given.
        assert target.insert_incident(title="next", severity=3, status="open", opened_by="U1", opened_at=START,
                                      started_at=START) == 4
        assert target.enqueue(kind="message", payload={}, now=START) == 4
        target.add_event(4, at=START, user="U1", kind="opened")
        assert target.events(4)[0].id == len(expected["events"]) + 1
    finally:
        target.close()


def test_copy_out_of_postgresql_into_sqlite_gives_the_same_history_back(tmp_path, sqlite_history, postgres_url):
    assert oncall(tmp_path, "db", "copy", "--from", str(sqlite_history), "--to", postgres_url).returncode == 0
    back = tmp_path / "back" / "oncall.db"
    back.parent.mkdir()
    result = oncall(tmp_path, "db", "copy", "--from", postgres_url, "--to", str(back))
    assert result.returncode == 0, result.stderr
    assert everything(SqliteStore(back)) == everything(SqliteStore(sqlite_history))
    listed = oncall(tmp_path, "run", "/incident list recent", env={"ONCALL_DB": str(back)})
    assert "#3" in listed.stdout and "checkout returns 500 (1)" in listed.stdout


def test_copy_refuses_a_target_holding_other_incidents_under_the_same_numbers(tmp_path, sqlite_history, postgres_url):
    target = PostgresStore(postgres_url, local_dir=tmp_path)
    target.insert_incident(title="another team's incident", severity=2, status="open", opened_by="U0CAROL01",
                           opened_at=START, started_at=START)
    target.insert_incident(title="and one more", severity=2, status="open", opened_by="U0CAROL01",
                           opened_at=START, started_at=START)
    before = everything(target)
    result = oncall(tmp_path, "db", "copy", "--from", str(sqlite_history), "--to", postgres_url)
    assert result.returncode == 1 and result.stdout == ""
    assert "other incidents under the same numbers" in result.stderr and "#1, #2." in result.stderr
    assert "#3" not in result.stderr and "nothing was copied" in result.stderr
    assert everything(target) == before
    target.close()


def test_copy_refuses_a_timeline_that_went_on_in_both_places(tmp_path, sqlite_history, postgres_url):
    assert oncall(tmp_path, "db", "copy", "--from", str(sqlite_history), "--to", postgres_url).returncode == 0
    for store in (SqliteStore(sqlite_history), PostgresStore(postgres_url, local_dir=tmp_path)):
        store.add_event(1, at=START + timedelta(days=1), user="U1", kind="update", text=f"said in {store.location}")
    result = oncall(tmp_path, "db", "copy", "--from", str(sqlite_history), "--to", postgres_url)
    assert result.returncode == 1 and "other timeline entries under the same ids" in result.stderr


def test_unreachable_ends_of_a_copy_are_named(tmp_path, sqlite_history):
    refused = oncall(tmp_path, "db", "copy", "--from", str(sqlite_history), "--to", "postgresql://postgres@127.0.0.1:1/x")
    assert refused.returncode == 2 and refused.stderr.startswith("oncall-bot: --to: PostgreSQL 127.0.0.1:1/x: ")
    missing = oncall(tmp_path, "db", "copy", "--from", "no/such/dir/x.db", "--to", str(tmp_path / "y.db"))
    assert missing.returncode == 2 and missing.stderr.startswith("oncall-bot: --from: no/such/dir/x.db: ")


@pytest.mark.parametrize("direction", ["sqlite to postgres", "postgres to sqlite"])
def test_copy_reads_in_batches_and_keeps_every_key(tmp_path, direction):
    url = create_database()
    try:
        lite, pg = SqliteStore(tmp_path / "a.db"), PostgresStore(url, local_dir=tmp_path)
        source, target = (lite, pg) if direction == "sqlite to postgres" else (pg, lite)
        make_history(source, incidents=7)
        for week in range(40, 45):
            source.claim_report(f"2026-W{week}", "C1", START, "host")          # text keys, several batches
            source.queue_work(f"event:Ev{week}", "home", {"user": "U1"}, START)
        copied = copy_history(source, target, batch=2)
        assert {table.table: table.copied for table in copied} == {
            name: len(rows) for name, rows in everything(source).items()}
        assert everything(target) == everything(source)
        assert sum(table.copied for table in copy_history(source, target, batch=3)) == 0
        pg.close()
    finally:
        drop_database(url)


def test_a_refusal_is_decided_before_anything_is_written(tmp_path, postgres_url):
    source, target = SqliteStore(tmp_path / "a.db"), PostgresStore(postgres_url, local_dir=tmp_path)
    make_history(source, incidents=4)
    make_history(target, incidents=2)
    target.add_event(2, at=START, user="U1", kind="update", text="only here")   # events 1-2 differ from here on
    with pytest.raises(HistoriesDiffer) as refused:
        copy_history(source, target, batch=1)
    assert refused.value.table.name == "events" and refused.value.count >= 1
    assert target.incident(3) is None
    target.close()


def _tables(store: Store) -> dict[str, set[str]]:
    if isinstance(store, SqliteStore):
        with sqlite3.connect(store.path) as db:
            names = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                                  "AND name NOT LIKE 'sqlite_%' AND name != '_sqlite_migrations'")]
            return {name: {row[1] for row in db.execute(f'PRAGMA table_info("{name}")')} for name in names}
    assert isinstance(store, PostgresStore)
    with psycopg.connect(store.url) as db:
        columns: dict[str, set[str]] = {}
        for table, column in db.execute("SELECT table_name, column_name FROM information_schema.columns "
                                        "WHERE table_schema = 'public' AND table_name != 'schema_migrations'"):
            columns.setdefault(table, set()).add(column)
        return columns


def test_every_table_of_both_schemas_is_copied_or_named_as_not_history(tmp_path, postgres_url):
    """A table a migration adds must join HISTORY (or NOT_HISTORY, saying why), with the same columns
    on both backends, or the copy would leave it behind."""
    lite, pg = _tables(SqliteStore(tmp_path / "a.db")), _tables(PostgresStore(postgres_url, local_dir=tmp_path))
    assert set(lite) == set(pg) == {table.name for table in HISTORY} | set(NOT_HISTORY)
    for table in HISTORY:
        assert lite[table.name] == pg[table.name], table.name
        assert {table.key, *table.identity, *table.moments, *table.json, *table.derived} <= lite[table.name]


def test_a_copy_into_postgresql_leaves_it_ready_for_index_only_scans(tmp_path, postgres_url):
    """/mttr reads its numbers from the covering index incidents_durations alone only where the
    visibility map says the heap need not be visited: right after a bulk load it says so nowhere."""
    source, target = SqliteStore(tmp_path / "a.db"), PostgresStore(postgres_url, local_dir=tmp_path)
    make_history(source, incidents=500)
    copy_history(source, target)
    with psycopg.connect(postgres_url) as conn:
        pages, all_visible, analyzed = conn.execute(
            "SELECT relpages, relallvisible, last_analyze IS NOT NULL FROM pg_class "
            "JOIN pg_stat_user_tables AS s ON s.relid = pg_class.oid WHERE s.relname = 'incidents'").fetchone()
    assert pages > 0 and all_visible == pages and analyzed
    target.close()
