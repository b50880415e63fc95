import json
import multiprocessing
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import sqlite_utils

from bot.config import Config
from bot.console import Terminal
from bot.store import Store, StoreUnavailable
from bot.store.sqlite import SqliteStore, migrations
from bot.times import to_iso, utc_now
from commands import registry
from conftest import table_rows


def test_schema_is_versioned_and_applied_once(tmp_path):
    SqliteStore(tmp_path / "a.db")
    store = SqliteStore(tmp_path / "a.db")
    applied = list(sqlite_utils.Database(store.path).query("SELECT migration_set, name FROM _sqlite_migrations"))
    assert [row["name"] for row in applied] == ["0001_incidents_timeline_outbox",
                                                "0002_incident_cause_and_weekly_reports",
                                                "0003_outbox_remembers_where_messages_went",
                                                "0004_incident_durations",
                                                "0005_work_queue",
                                                "0006_outbox_marks_attempts_in_flight",
                                                "0007_alerts",
                                                "0008_milestones",
                                                "0009_coordination"]
    assert sqlite_utils.Database(store.path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_an_older_database_is_upgraded_in_place(tmp_path):
    old = sqlite_utils.Database(tmp_path / "old.db")
    migrations().apply(old, stop_before="0002_incident_cause_and_weekly_reports")
    old["incidents"].insert({"title": "from before", "severity": 2, "status": "open", "opened_by": "U1",
                             "opened_at": "2026-01-01T00:00:00Z", "started_at": "2026-01-01T00:00:00Z"})
    old["incidents"].insert({"title": "resolved before", "severity": 2, "status": "resolved", "opened_by": "U1",
                             "opened_at": "2026-01-01T00:00:00Z", "started_at": "2025-12-31T23:50:00Z",
                             "acknowledged_at": "2026-01-01T00:02:00Z", "resolved_at": "2026-01-01T01:00:00Z"})
    old.close()
    store = SqliteStore(tmp_path / "old.db")
    incident = store.incident(1)
    assert incident.title == "from before" and incident.cause is None
    assert sqlite_utils.Database(store.path)["reports"].exists()
    (resolved,) = store.resolutions(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC), slowest=1)
    assert resolved.to_resolve == (4200,) and resolved.to_acknowledge == (120,) and resolved.slowest == ((4200, 2),)
    assert resolved.to_detect == (None,) and resolved.to_mitigate == (None,)
    assert store.incident(2).detected_at is None and store.incident(2).recovered_at is None


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)   # PostgreSQL's are timestamptz columns
def test_times_are_plain_iso_text_for_outside_tools(tmp_path, clock, local):
    local().invoke("/incident open db down --started 14:00")
    conn = sqlite3.connect(tmp_path / "oncall.db")
    row = conn.execute("SELECT opened_at, started_at, status, severity FROM incidents").fetchone()
    assert row == ("2026-11-24T14:00:00Z", "2026-11-24T14:00:00Z", "open", 3)


def _open_and_resolve(store: Store, index: int) -> None:
    runner = Terminal(store, Config(), registry(), utc_now)
    opened = runner.invoke(f"/incident open incident number {index}")
    assert opened.outcome.value == "ok", opened.data
    resolved = runner.invoke(f"/incident resolve #{opened.incident_id} done {index}")
    assert resolved.outcome.value == "ok", resolved.data


def test_fifty_concurrent_opens_and_resolves_lose_nothing(store):
    with ThreadPoolExecutor(max_workers=50) as pool:
        list(pool.map(lambda i: _open_and_resolve(store, i), range(50)))
    incidents = store.recent_incidents(100)
    assert sorted(i.id for i in incidents) == list(range(1, 51))      # unique and gap-free
    assert {i.status for i in incidents} == {"resolved"}
    assert len(table_rows(store, "events")) == 100


def _process_worker(path: str, offset: int) -> None:
    store = SqliteStore(path)
    with ThreadPoolExecutor(max_workers=10) as pool:
        list(pool.map(lambda i: _open_and_resolve(store, offset + i), range(10)))


def test_several_processes_share_the_database(tmp_path):
    path = str(tmp_path / "shared.db")
    SqliteStore(path)
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_process_worker, args=(path, 100 * n)) for n in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    assert sqlite_utils.Database(SqliteStore(path).path).execute("SELECT count(*) FROM incidents WHERE status = 'resolved'").fetchone()[0] == 30


def test_work_is_queued_once_per_key_and_claimed_by_one_worker_at_a_time(store):
    now = datetime(2026, 11, 24, tzinfo=UTC)
    with ThreadPoolExecutor(max_workers=20) as pool:
        queued = list(pool.map(lambda _: store.queue_work("command:trigger-1", "command", {"n": 1}, now), range(20)))
    assert queued.count(True) == 1
    with ThreadPoolExecutor(max_workers=10) as pool:
        claims = list(pool.map(lambda _: store.claim_work(now, timedelta(seconds=90)), range(10)))
    (claimed,) = [claim for claim in claims if claim is not None]
    assert claimed.payload == {"n": 1} and claimed.attempts == 1 and store.work_pending() == 1
    assert store.claim_work(now + timedelta(seconds=89), timedelta(seconds=90)) is None      # leased
    again = store.claim_work(now + timedelta(seconds=91), timedelta(seconds=90))             # the lease ended
    assert again.id == claimed.id and again.attempts == 2
    store.work_done(again.id, now)
    assert store.work_pending() == 0 and store.claim_work(now + timedelta(days=1), timedelta(seconds=90)) is None
    assert not store.queue_work("command:trigger-1", "command", {}, now)                      # a redelivery
    assert store.prune_work(now + timedelta(seconds=1)) == 1
    assert store.queue_work("command:trigger-1", "command", {}, now)


def test_work_queued_at_once_is_queued_once_per_key_and_each_caller_told_whether_it_was_first(store):
    # SQLite writes the rows that arrive together in one statement: each must still learn its own outcome.
    now = datetime(2026, 11, 24, tzinfo=UTC)
    store.queue_work("command:old", "command", {"n": -1}, now)
    store.work_done(store.claim_work(now, timedelta(seconds=90)).id, now)      # moved past the mark of SQLite's inbox
    store.queue_work("command:waiting", "command", {"n": -2}, now)            # still in it
    keys = [f"command:{n % 150}" for n in range(200)] + ["command:old", "command:waiting"] * 5
    with ThreadPoolExecutor(max_workers=16) as pool:
        queued = list(pool.map(lambda key: (key, store.queue_work(key, "command", {"key": key}, now)), keys))
    assert sorted(key for key, new in queued if new) == sorted(f"command:{n}" for n in range(150))
    claimed = []
    while (item := store.claim_work(now, timedelta(seconds=90))) is not None:
        claimed.append((item.key, item.payload))
        store.work_done(item.id, now)
    assert sorted(claimed) == sorted([("command:waiting", {"n": -2})] + [(f"command:{n}", {"key": f"command:{n}"})
                                                                         for n in range(150)])


def test_sqlite_queues_an_ack_while_a_worker_holds_the_write_lock_and_still_knows_a_redelivery(tmp_path, monkeypatch):
    now = datetime(2026, 11, 24, tzinfo=UTC)
    store = SqliteStore(tmp_path / "oncall.db")
    store.queue_work("command:done", "command", {}, now)
    store.work_done(store.claim_work(now, timedelta(seconds=90)).id, now)
    monkeypatch.setattr("bot.store.sqlite.BUSY_TIMEOUT_MS", 200)       # a write that waited for the lock fails
    worker = sqlite3.connect(store.path, isolation_level=None)
    worker.execute("BEGIN IMMEDIATE")
    try:
        assert store.queue_work("command:new", "command", {"n": 1}, now)
        assert not store.queue_work("command:new", "command", {}, now)
        assert not store.queue_work("command:done", "command", {}, now)     # moved and done: the inbox still knows it
    finally:
        worker.execute("ROLLBACK")
    claimed = store.claim_work(now, timedelta(seconds=90))
    assert (claimed.key, claimed.payload) == ("command:new", {"n": 1})
    assert not store.queue_work("command:new", "command", {}, now)      # moved: the inbox still knows it


def test_sqlite_inbox_rows_moved_but_not_yet_marked_are_queued_once_in_their_order(tmp_path):
    """A process that dies between committing the inbox's deliveries to the work queue and moving
    the inbox's mark past them leaves them to be moved again: the work queue takes each key once."""
    now = datetime(2026, 11, 24, tzinfo=UTC)
    store = SqliteStore(tmp_path / "oncall.db")
    for n in range(3):
        store.queue_work(f"command:{n}", "command", {"n": n}, now)
    assert store.work_pending() == 3
    with sqlite3.connect(store.path + "-inbox") as inbox:
        assert inbox.execute("SELECT upto FROM moved").fetchall() == [(3,)]
        inbox.execute("UPDATE moved SET upto = 0")
    store.queue_work("command:3", "command", {"n": 3}, now)
    assert store.work_pending() == 4
    claimed = []
    while (item := store.claim_work(now, timedelta(seconds=90))) is not None:
        claimed.append(item.key)
        store.work_done(item.id, now)
    assert claimed == ["command:0", "command:1", "command:2", "command:3"]


def test_sqlite_inbox_gives_no_id_twice_so_nothing_queued_after_a_prune_is_skipped(tmp_path):
    """The inbox forgets deliveries moved a day ago; one queued after the newest of them is forgotten
    gets a new id all the same (past the mark), and is moved."""
    now = datetime(2026, 11, 24, tzinfo=UTC)
    store = SqliteStore(tmp_path / "oncall.db")
    store.queue_work("command:old", "command", {}, now)
    store.work_done(store.claim_work(now, timedelta(seconds=90)).id, now)
    assert store.prune_work(now + timedelta(days=1)) == 1
    with sqlite3.connect(store.path + "-inbox") as inbox:
        assert inbox.execute("SELECT count(*) FROM deliveries").fetchone() == (0,)
    assert store.queue_work("command:new", "command", {"n": 1}, now)
    assert (store.claim_work(now, timedelta(seconds=90)).key, store.work_pending()) == ("command:new", 1)


def test_sqlite_takes_over_what_an_earlier_release_left_in_its_inbox(tmp_path):
    """An earlier release kept the inbox in a table `inbox` whose ids could be given twice: its rows
    are queued at the next start, in their order."""
    now = datetime(2026, 11, 24, tzinfo=UTC)
    path = tmp_path / "oncall.db"
    SqliteStore(path).close()
    with sqlite3.connect(str(path) + "-inbox") as inbox:
        inbox.execute("DROP TABLE deliveries")
        inbox.execute("DROP TABLE moved")
        inbox.execute("CREATE TABLE inbox (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, "
                      "payload TEXT NOT NULL, created_at TEXT NOT NULL)")
        inbox.executemany("INSERT INTO inbox VALUES (?, ?, 'command', ?, ?)",
                          [(n, f"command:{n}", json.dumps({"n": n}), to_iso(now)) for n in (2, 1)])
    store = SqliteStore(path)
    assert not store.queue_work("command:2", "command", {}, now)          # still known
    claimed = []
    while (item := store.claim_work(now, timedelta(seconds=90))) is not None:
        claimed.append((item.key, item.payload))
        store.work_done(item.id, now)
    assert claimed == [("command:1", {"n": 1}), ("command:2", {"n": 2})]


def test_work_queued_while_workers_claim_is_each_claimed_once(store):
    """Acks queue while several workers claim (on SQLite, each moving what the inbox holds first):
    nothing queued is lost, nothing is claimed twice."""
    now = datetime(2026, 11, 24, tzinfo=UTC)
    keys = [f"command:{n}" for n in range(400)]
    queuing = threading.Event()
    claimed: list[str] = []

    def work() -> None:
        while queuing.is_set() or store.work_pending():
            if (item := store.claim_work(now, timedelta(seconds=90))) is not None:
                claimed.append(item.key)
                store.work_done(item.id, now)

    queuing.set()
    workers = [threading.Thread(target=work) for _ in range(4)]
    for worker in workers:
        worker.start()
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(lambda key: store.queue_work(key, "command", {}, now), keys))
    queuing.clear()
    for worker in workers:
        worker.join(60)
    assert sorted(claimed) == sorted(keys)


def test_sqlite_acks_queued_at_once_while_the_inbox_stays_locked_are_each_told_and_the_next_is_queued(
        tmp_path, monkeypatch):
    # The acks that wait on another's write (a group commit) learn its failure, and none is left waiting.
    now = datetime(2026, 11, 24, tzinfo=UTC)
    store = SqliteStore(tmp_path / "oncall.db")
    monkeypatch.setattr("bot.store.sqlite.BUSY_TIMEOUT_MS", 200)

    def outcome(key: str) -> bool | Exception:
        try:
            return store.queue_work(key, "command", {}, now)
        except StoreUnavailable as error:
            return error

    blocker = sqlite3.connect(store.path + "-inbox", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            outcomes = list(pool.map(outcome, [f"command:{n}" for n in range(8)]))
    finally:
        blocker.execute("ROLLBACK")
    assert all(isinstance(told, StoreUnavailable) and "locked" in str(told) for told in outcomes)
    assert store.queue_work("command:0", "command", {"n": 0}, now)
    claimed = store.claim_work(now, timedelta(seconds=90))
    assert (claimed.key, claimed.payload) == ("command:0", {"n": 0}) and store.work_pending() == 1


def test_sqlite_is_unwritable_when_its_inbox_is(tmp_path):
    store = SqliteStore(tmp_path / "oncall.db")
    store.check_writable(utc_now())
    blocker = sqlite3.connect(store.path + "-inbox", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreUnavailable, match="locked"):
            store.check_writable(utc_now())
    finally:
        blocker.execute("ROLLBACK")
    store.check_writable(utc_now())


def test_what_an_atomic_unit_writes_commits_together_or_not_at_all(store, clock):
    fields = dict(title="t", severity=3, service=None, status="open", opened_by="U1", opened_at=clock(),
                  started_at=clock(), channel="C1", announce_channel="C1")
    try:
        with store.atomic():
            incident_id = store.insert_incident(**fields)
            store.enqueue(kind="announce", payload={"text": "t"}, now=clock(), incident_id=incident_id)
            raise RuntimeError("killed before the work was done")
    except RuntimeError:
        pass
    assert store.recent_incidents(5) == [] and store.outbox_pending() == 0
    with store.atomic():
        incident_id = store.insert_incident(**fields)
        store.enqueue(kind="announce", payload={"text": "t"}, now=clock(), incident_id=incident_id)
    assert [i.id for i in store.recent_incidents(5)] == [incident_id] and store.outbox_pending() == 1


def test_sent_outbox_rows_past_the_retention_are_pruned_and_the_timeline_kept(store, clock):
    from bot.outbox import Outbox

    incident_id = store.insert_incident(title="t", severity=3, service=None, status="open", opened_by="U1",
                                        opened_at=clock(), started_at=clock(), channel="C1", announce_channel="C1")
    store.add_event(incident_id, at=clock(), user="U1", kind="opened", text="t")
    old_sent, old_failed, old_pending, new_sent = (
        store.enqueue(kind="message", payload={"text": str(i)}, now=clock(), channel="C1") for i in range(4))
    store.outbox_sent(old_sent, clock())
    store.outbox_failed(old_failed, clock(), "channel_not_found")
    clock.advance(days=31)
    store.outbox_sent(new_sent, clock())
    outbox = Outbox(store, None, None, clock, retention=timedelta(days=30))
    outbox.prune()
    left = sorted(row[0] for row in table_rows(store, "outbox"))
    assert left == [old_pending, new_sent]
    assert [e.kind for e in store.events(incident_id)] == ["opened"]
