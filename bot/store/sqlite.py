"""SQLite: incidents, their timeline, deliveries seen, the outbox, weekly reports; each a named operation.

Concurrency: one connection per thread, WAL, a busy timeout, and every read-then-write unit in a
`BEGIN IMMEDIATE` transaction (`Store.write()`): with threads, deferred read-then-write
transactions fail with "database is locked" even under a busy timeout, immediate ones wait their
turn. A write that is one statement (a claim, a lease, a mark) is its own transaction instead: SQLite
then holds the write lock only while that statement runs, where a transaction holds it across the
Python between its statements, and the interpreter's lock can keep a busy process's thread from
that Python for milliseconds, while every other writer (the acks' queue writes) waits.

The schema is versioned with sqlite-utils' migrations, imported only when one is still to be
applied (a process that finds the schema current, like every `oncall-bot run`, does not load it);
the operations are plain SQL on the standard library's driver.

The file stays friendly to outside tools: plain columns, times as ISO 8601 UTC text.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from bot.redact import redact, redact_data
from bot.serialize import json_default, to_json
from bot.store import (
    EXPORTED,
    RESOLVED,
    SEVERITIES,
    TYPED_BY_PEOPLE,
    AlertGroup,
    Event,
    Followup,
    Incident,
    OutboxItem,
    ReminderState,
    Report,
    Resolutions,
    StoreUnavailable,
    Table,
    WatchCheck,
    WorkItem,
    incident_filters,
    quoted,
    redacted,
)
from bot.times import from_iso, to_iso, utc_now

if TYPE_CHECKING:
    import sqlite_utils
    from sqlite_utils.migrations import Migrations

BUSY_TIMEOUT_MS = 15_000
QUEUE_BATCH_ROWS = 500               # rows queued in one statement (4 parameters each, of SQLite's 32,766)
INBOX_SUFFIX = "-inbox"             # the file beside the database that Slack's deliveries are queued in


MIGRATION_SET = "oncall-bot"
T = TypeVar("T")


def _initial_schema(db: sqlite_utils.Database) -> None:
    db.table("incidents").create(
        {
            "id": int, "title": str, "severity": int, "service": str, "status": str,
            "opened_by": str, "opened_at": str, "started_at": str,
            "acknowledged_by": str, "acknowledged_at": str,
            "resolved_by": str, "resolved_at": str, "resolution": str,
            "channel": str, "announce_channel": str, "thread_ts": str, "reopened": int,
        },
        pk="id",
        not_null={"title", "severity", "status", "opened_by", "opened_at", "started_at"},
        defaults={"reopened": 0},
    )
    db.table("incidents").create_index(["status"])
    db.table("incidents").create_index(
        ["resolved_at", "started_at", "acknowledged_at", "opened_at", "severity", "service"],
        index_name="incidents_resolution")
    db.table("incidents").create_index(["opened_at"])
    db.table("events").create(
        {"id": int, "incident_id": int, "at": str, "user": str, "kind": str, "text": str, "data": str},
        pk="id",
        not_null={"incident_id", "at", "kind"},
        foreign_keys=[("incident_id", "incidents", "id")],
    )
    db.table("events").create_index(["incident_id"])
    db.table("deliveries").create({"key": str, "received_at": str}, pk="key")
    db.table("deliveries").create_index(["received_at"])
    db.table("outbox").create(
        {
            "id": int, "created_at": str, "request_id": str, "kind": str, "incident_id": int,
            "channel": str, "user": str, "response_url": str, "payload": str,
            "attempts": int, "next_at": str, "lease_until": str,
            "sent_at": str, "failed_at": str, "error": str,
        },
        pk="id",
        not_null={"created_at", "kind", "payload"},
        defaults={"attempts": 0},
    )
    db.execute("CREATE INDEX outbox_pending ON outbox(id) WHERE sent_at IS NULL AND failed_at IS NULL")
    db.table("heartbeat").create({"id": int, "at": str}, pk="id")


def _cause_and_reports(db: sqlite_utils.Database) -> None:
    db.table("incidents").add_column("cause", str)
    db.table("reports").create(
        {"week": str, "channel": str, "claimed_at": str, "claimed_by": str, "data": str},
        pk="week",
        not_null={"claimed_at"},
    )


def _sent_message_ids(db: sqlite_utils.Database) -> None:
    # A message updated in place later (a command's progress) is found by the ts Slack gave it.
    db.table("outbox").add_column("sent_channel", str)
    db.table("outbox").add_column("sent_ts", str)


_SECONDS = "CAST(round((julianday({end}) - julianday({start})) * 86400) AS INTEGER)"
_RESOLVE_AND_ACKNOWLEDGE = (f"time_to_resolve = {_SECONDS.format(start='started_at', end='resolved_at')}, "
                            f"time_to_acknowledge = {_SECONDS.format(start='opened_at', end='acknowledged_at')}")
_DURATIONS = (f"{_RESOLVE_AND_ACKNOWLEDGE}, "
              f"time_to_detect = {_SECONDS.format(start='started_at', end='detected_at')}, "
              f"time_to_mitigate = {_SECONDS.format(start='started_at', end='mitigated_at')}")


def _durations(db: sqlite_utils.Database) -> None:
    # Kept beside the times they come from (the store sets them on every write), so /mttr reads
    # numbers from one covering index per severity instead of parsing two dates per row.
    db.table("incidents").add_column("time_to_resolve", int)
    db.table("incidents").add_column("time_to_acknowledge", int)
    db.execute(f"UPDATE incidents SET {_RESOLVE_AND_ACKNOWLEDGE}")
    db.execute("DROP INDEX incidents_resolution")
    db.table("incidents").create_index(["resolved_at"])
    db.table("incidents").create_index(
        ["severity", "resolved_at", "time_to_resolve", "time_to_acknowledge", "service"],
        index_name="incidents_durations")


def _work_queue(db: sqlite_utils.Database) -> None:
    # What Slack delivered and what the bot found due, kept until it is done: a redelivery finds its
    # key taken, and work a dead process claimed is taken over when its lease ends.
    db.table("work").create(
        {"id": int, "key": str, "kind": str, "payload": str, "created_at": str, "lease_until": str,
         "attempts": int, "done_at": str},
        pk="id", not_null={"key", "kind", "payload", "created_at"}, defaults={"attempts": 0})
    db.execute("CREATE UNIQUE INDEX work_key ON work(key)")
    db.execute("CREATE INDEX work_pending ON work(id) WHERE done_at IS NULL")
    db.execute("DROP TABLE deliveries")


def _in_flight(db: sqlite_utils.Database) -> None:
    # Set when a sender claims an item, cleared when its outcome is known: still set at the next
    # claim, the earlier attempt may have reached Slack.
    db.table("outbox").add_column("in_flight_since", str)


def _alerts(db: sqlite_utils.Database) -> None:
    db.table("incidents").add_column("source", str)
    db.table("incidents").add_column("dedup_key", str)
    db.table("incidents").add_column("verdict", str)
    db.table("alert_groups").create(
        {"id": int, "source": str, "dedup_key": str, "incident_id": int, "alerts": str, "updated_at": str},
        pk="id", not_null={"source", "dedup_key", "alerts", "updated_at"})
    # One group per source and key, whatever the number of replicas notified at once.
    db.execute("CREATE UNIQUE INDEX alert_groups_key ON alert_groups(source, dedup_key)")


def _milestones(db: sqlite_utils.Database) -> None:
    # The moments evidence gives (an alert, the logs, git, the watch after a fix), and the two
    # durations /mttr adds, kept in the covering index like the others.
    for column in ("detected_at", "mitigated_at", "recovered_at"):
        db.table("incidents").add_column(column, str)
    db.table("incidents").add_column("time_to_detect", int)
    db.table("incidents").add_column("time_to_mitigate", int)
    db.execute("DROP INDEX incidents_durations")
    db.table("incidents").create_index(
        ["severity", "resolved_at", "time_to_resolve", "time_to_acknowledge", "service", "time_to_detect",
         "time_to_mitigate"], index_name="incidents_durations")
    db.table("incidents").create_index(["mitigated_at"])
    # Watching a fix: a check a minute, once (its key), and the one message it updates in place.
    db.table("watch_checks").create(
        {"id": int, "incident_id": int, "at": str, "errors": int, "errors_before": int, "probes_failing": int,
         "failing": str}, pk="id", not_null={"incident_id", "at"})
    db.execute("CREATE UNIQUE INDEX watch_checks_minute ON watch_checks(incident_id, at)")
    db.table("outbox").add_column("message_key", str)
    db.execute("CREATE INDEX outbox_message_key ON outbox(message_key) WHERE message_key IS NOT NULL")


def _coordination(db: sqlite_utils.Database) -> None:
    # Who leads and who talks, the action items, and what each reminder was last posted for (or
    # snoozed until): stored, so a reminder is posted once whatever restarts or replicas.
    for column in ("lead", "comms", "postmortem_at"):
        db.table("incidents").add_column(column, str)
    db.table("followups").create(
        {"id": int, "incident_id": int, "number": int, "text": str, "owner": str, "created_by": str,
         "created_at": str, "done_at": str, "done_by": str},
        pk="id", not_null={"incident_id", "number", "text", "created_at"},
        foreign_keys=[("incident_id", "incidents", "id")])
    db.execute("CREATE UNIQUE INDEX followups_number ON followups(incident_id, number)")
    db.table("reminders").create(
        {"id": int, "incident_id": int, "kind": str, "snoozed_until": str, "reminded_for": str},
        pk="id", not_null={"incident_id", "kind"}, foreign_keys=[("incident_id", "incidents", "id")])
    db.execute("CREATE UNIQUE INDEX reminders_kind ON reminders(incident_id, kind)")


_MIGRATIONS = (
    ("0001_incidents_timeline_outbox", _initial_schema),
    ("0002_incident_cause_and_weekly_reports", _cause_and_reports),
    ("0003_outbox_remembers_where_messages_went", _sent_message_ids),
    ("0004_incident_durations", _durations),
    ("0005_work_queue", _work_queue),
    ("0006_outbox_marks_attempts_in_flight", _in_flight),
    ("0007_alerts", _alerts),
    ("0008_milestones", _milestones),
    ("0009_coordination", _coordination),
)


def migrations() -> Migrations:
    """The schema's migrations, in order, as sqlite-utils applies them."""
    from sqlite_utils.migrations import Migrations

    versions = Migrations(MIGRATION_SET)
    for name, migration in _MIGRATIONS:
        versions(name=name)(migration)
    return versions


# The JSON export's lists of an incident: its timeline, and its follow-ups.
_EXPORTED_LISTS = (
    ("timeline", """SELECT json_group_array(json_object('when', at, 'who', "user", 'kind', kind, 'text', text))
                    FROM (SELECT at, "user", kind, text FROM events
                          WHERE incident_id = incidents.id ORDER BY at, id)"""),
    ("followups", """SELECT json_group_array(json_object('text', text, 'owner', owner,
                                                        'done', json(iif(done_at IS NULL, 'false', 'true'))))
                     FROM (SELECT text, owner, done_at FROM followups
                           WHERE incident_id = incidents.id ORDER BY number)"""),
)
_FORMULA_START = "'[=+@\t\r-]*'"
_NEEDS_QUOTES = "'*[\",\r\n]*'"


def _csv_cell(column: str) -> str:
    """SQL for one CSV cell of `column` (NULL is printed empty)."""
    escaped = f"""replace({column}, '"', '""')"""
    return (f"""CASE WHEN {column} GLOB {_FORMULA_START} THEN '"''' || {escaped} || '"' """
            f"""WHEN {column} GLOB {_NEEDS_QUOTES} THEN '"' || {escaped} || '"' ELSE {column} END""")


class SqliteStore:
    def __init__(self, path: Path | str, *, migrate: bool = True):
        """Opens the database at `path`, creating it on a first run, and brings its schema up to
        date unless `migrate` is false; StoreUnavailable when it cannot.

        Only here, and only once: a marker beside the file remembers that a database was made there,
        and every later connection opens the file read-write without creating it, so a database
        deleted since (under a running bot, or between runs) is an error (and /healthz a 503), never
        a new empty one that looks healthy.
        """
        self.path = str(path)
        file = Path(path)
        self._uri = file.resolve().as_uri() + "?mode=rw"
        inbox_file = file.resolve().with_name(file.name + INBOX_SUFFIX)
        self._inbox_uri = inbox_file.as_uri() + "?mode=rw"
        self._local = threading.local()
        self._queue_writer = _QueueWriter(str(inbox_file), lambda: self._connect(self._inbox_uri))
        if not file.parent.is_dir():
            raise StoreUnavailable(f"{file}: the directory {file.parent} does not exist")
        marker = file.with_name(f".{file.name}.created")
        if not file.exists() and marker.exists():
            raise StoreUnavailable(f"{file}: the database is missing, but one was created there before "
                                   f"(see {marker}); restore it, or remove {marker} to start a new, empty one")
        try:
            sqlite3.connect(self.path).close()
            with closing(sqlite3.connect(inbox_file, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)) as inbox:
                _make_inbox(inbox)
            if not marker.exists():
                marker.write_text(f"oncall-bot created {file.name} here on {utc_now():%Y-%m-%d %H:%M} UTC\n")
        except (sqlite3.Error, OSError) as error:
            raise StoreUnavailable(f"{file}: cannot use the database: {error}") from None
        if migrate:
            self.migrate()

    @property
    def location(self) -> str:
        return self.path

    def migrate(self) -> list[str]:
        """Applies the migrations the file lacks, in one immediate transaction (so two processes
        starting at once apply each once); returns their names."""
        try:
            if not self._missing_migrations():
                return []
            import sqlite_utils

            with self._transaction() as db:
                missing = self._missing_migrations()
                migrations().apply(sqlite_utils.Database(db))
            return missing
        except sqlite3.Error as error:
            raise StoreUnavailable(f"{self.path}: cannot use the database: {error}") from None

    def _missing_migrations(self) -> list[str]:
        try:
            applied = {row[0] for row in self._db.execute(
                "SELECT name FROM _sqlite_migrations WHERE migration_set = ?", [MIGRATION_SET])}
        except sqlite3.OperationalError:   # no such table: a new database
            applied = set()
        return [name for name, _ in _MIGRATIONS if name not in applied]

    @property
    def _db(self) -> sqlite3.Connection:
        """This thread's connection, in autocommit mode: each read sees the latest commit."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
        return db

    @property
    def _inbox(self) -> sqlite3.Connection:
        """This thread's connection to the inbox, whose rows it moves into the work queue."""
        db: sqlite3.Connection | None = getattr(self._local, "inbox", None)
        if db is None:
            db = self._local.inbox = self._connect(self._inbox_uri)
        return db

    def _connect(self, uri: str | None = None) -> sqlite3.Connection:
        db = sqlite3.connect(uri or self._uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                             check_same_thread=False)
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
        return db

    def _rows(self, sql: str, params: Iterable[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        cursor = self._db.execute(sql, params if isinstance(params, dict) else list(params))
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]

    @contextmanager
    def write(self) -> Iterator[None]:
        """One unit of work: what is read in it is current and nobody writes until it ends
        (re-entrant within a thread, so operations nest in a caller's unit)."""
        with self._transaction():
            yield

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """Everything written inside commits together, or nothing does. The write lock is taken at
        the first write, not before, so the reading and waiting a command does first holds nobody up."""
        if self._in_unit():
            yield
            return
        self._local.atomic = True
        try:
            yield
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        finally:
            self._local.atomic = False
        if self._db.in_transaction:
            self._db.execute("COMMIT")

    def _in_unit(self) -> bool:
        """Whether this thread is inside a transaction or an atomic unit (what it writes joins it)."""
        return self._db.in_transaction or getattr(self._local, "atomic", False)

    def _write_statement(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        """One write statement (its RETURNING rows): its own transaction, or part of this thread's unit."""
        if self._in_unit():
            with self._transaction() as db:
                return db.execute(sql, params).fetchall()
        return self._db.execute(sql, params).fetchall()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One immediate transaction; re-entrant within a thread; inside `atomic()`, its transaction."""
        db = self._db
        if db.in_transaction:
            yield db
            return
        _begin_immediate(db)
        if getattr(self._local, "atomic", False):
            yield db     # committed (or rolled back) when the atomic unit ends
            return
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        for name in ("db", "inbox"):
            db: sqlite3.Connection | None = getattr(self._local, name, None)
            if db is not None:
                db.close()
                setattr(self._local, name, None)
        self._queue_writer.close()

    # -- incidents -------------------------------------------------------------------------

    def incident(self, incident_id: int) -> Incident | None:
        rows = self._rows("SELECT * FROM incidents WHERE id = ?", [incident_id])
        return Incident.from_row(rows[0]) if rows else None

    def _incidents(self, where: str, params: list[Any], *, order: str = "id",
                   limit: int | None = None) -> list[Incident]:
        sql = f"SELECT * FROM incidents WHERE {where} ORDER BY {order}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [Incident.from_row(row) for row in self._rows(sql, params)]

    def open_incidents(self, channel: str | None = None, *, service: str | None = None,
                       severity: int | None = None) -> list[Incident]:
        """Every incident not resolved, oldest first: of `channel` (where it was opened or announced),
        of `service`, of `severity`, when given."""
        where, params = "status != ?", [RESOLVED]
        if channel is not None:
            where, params = where + " AND (channel = ? OR announce_channel = ?)", [*params, channel, channel]
        filters, more = incident_filters(service, severity, "?")
        return self._incidents(where + filters, params + more)

    def recent_incidents(self, limit: int) -> list[Incident]:
        return self._incidents("1", [], order="id DESC", limit=limit)

    def last_resolved(self, channel: str | None = None, *, limit: int = 1) -> list[Incident]:
        """The most recently resolved incidents (of `channel`, when given), newest first."""
        if channel is None:
            return self._incidents("status = ?", [RESOLVED], order="resolved_at DESC", limit=limit)
        return self._incidents("status = ? AND (channel = ? OR announce_channel = ?)", [RESOLVED, channel, channel],
                               order="resolved_at DESC", limit=limit)

    def open_twin(self, user: str, title: str, since: datetime) -> Incident | None:
        """An open incident `user` opened with the same title (any case) since `since`: a double submit."""
        twins = self._incidents("opened_by = ? AND lower(title) = lower(?) AND opened_at >= ? AND status != ?",
                                [user, title, to_iso(since), RESOLVED], order="id DESC", limit=1)
        return twins[0] if twins else None

    def export(self, since: datetime | None, output_format: str) -> Iterator[list[str]]:
        """Every incident opened since `since` (all when None), by number, formatted as CSV lines
        (RFC 4180, without their line ends) or JSON objects, one per incident (EXPORTED), in
        batches; a JSON object also holds the incident's `timeline` and `followups`.

        SQLite formats the rows as it reads them (printf, json_object), so 100,000 incidents cost
        a small multiple of what the sqlite3 shell takes, and no cell becomes a Python value. A CSV
        cell people typed is quoted when it holds a quote, comma or line break; one a spreadsheet
        would run as a formula (starting with =, +, -, @, tab or CR) is quoted behind a ' that
        keeps it text (OWASP's rule).
        """
        where, params = ("opened_at >= ?", [to_iso(since)]) if since else ("1", [])
        if output_format == "json":
            row = "json_object(" + ", ".join([*(f"'{name}', {column}" for name, column in EXPORTED),
                                              *(f"'{name}', json(({query}))" for name, query in _EXPORTED_LISTS)]) + ")"
        else:
            cells = [_csv_cell(column) if column in TYPED_BY_PEOPLE else column for _, column in EXPORTED]
            row = "printf('" + ",".join("%s" for _ in cells) + "', " + ", ".join(cells) + ")"
        cursor = self._db.execute(f"SELECT {row} FROM incidents WHERE {where} ORDER BY id", params)
        while rows := cursor.fetchmany(1000):
            yield [text for (text,) in rows]

    # -- what /mttr and the weekly report count --------------------------------------------------

    def resolutions(self, start: datetime, end: datetime, *, service: str | None = None,
                    severity: int | None = None, slowest: int = 0) -> list[Resolutions]:
        """The incidents resolved in [start, end), one group per severity (ascending), as columns,
        with the ids of each group's `slowest` longest to resolve.

        Only resolved incidents have resolved_at (reopening clears it), so the range is the whole
        filter, and each severity is one range of the durations' covering index: no row of the
        table itself is read, and no id unless asked for.
        """
        filters, params = incident_filters(service, None, "?")
        groups = []
        for level in SEVERITIES if severity is None else (severity,):
            where = f"WHERE severity = ? AND resolved_at >= ? AND resolved_at < ?{filters}"
            values = [level, to_iso(start), to_iso(end), *params]
            rows = self._db.execute(
                f"SELECT time_to_resolve, time_to_acknowledge, time_to_detect, time_to_mitigate FROM incidents {where}",
                values).fetchall()
            if not rows:
                continue
            longest = self._db.execute(
                f"SELECT time_to_resolve, id FROM incidents {where} ORDER BY time_to_resolve DESC LIMIT ?",
                [*values, slowest]).fetchall() if slowest else []
            groups.append(Resolutions(level, tuple(map(itemgetter(0), rows)), tuple(map(itemgetter(1), rows)),
                                      tuple(longest), tuple(map(itemgetter(2), rows)),
                                      tuple(map(itemgetter(3), rows))))
        return groups

    def opened_count(self, start: datetime, end: datetime, *, service: str | None = None,
                     severity: int | None = None) -> int:
        filters, params = incident_filters(service, severity, "?")
        return self._db.execute(f"SELECT COUNT(*) FROM incidents WHERE opened_at >= ? AND opened_at < ?{filters}",
                                [to_iso(start), to_iso(end), *params]).fetchone()[0]

    def resolved_by_service(self, start: datetime, end: datetime) -> list[tuple[str | None, int]]:
        """(service, incidents resolved in [start, end)), most first."""
        return [(service or None, count) for service, count in self._db.execute(
            "SELECT COALESCE(service, ''), COUNT(*) FROM incidents WHERE resolved_at >= ? AND resolved_at < ?"
            " GROUP BY 1 ORDER BY 2 DESC, 1", [to_iso(start), to_iso(end)]).fetchall()]

    def caused_by_deploys(self, start: datetime, end: datetime) -> list[Incident]:
        """The incidents resolved in [start, end) with a deploy recorded as their cause."""
        return self._incidents("resolved_at >= ? AND resolved_at < ? AND cause LIKE 'deploy:%'",
                               [to_iso(start), to_iso(end)])

    def earlier_signatures(self, signatures: Iterable[str], service: str,
                           excluding: int | None) -> list[tuple[int, str]]:
        """(incident, signature) for each of `signatures` that /triage or /logs recorded about `service`
        in another incident's timeline, newest incident first. A triage event recorded before it named
        its service is taken as about its incident's service."""
        wanted = list(signatures)
        if not wanted:
            return []
        marks = ",".join("?" * len(wanted))
        this = -1 if excluding is None else excluding
        return self._db.execute(
            f"""SELECT DISTINCT e.incident_id, s.value FROM events AS e
                JOIN incidents AS i ON i.id = e.incident_id, json_each(e.data, '$.signatures') AS s
                WHERE e.kind = 'triage' AND e.incident_id != ? AND s.value IN ({marks})
                  AND COALESCE(json_extract(e.data, '$.service'), i.service) = ?
                UNION
                SELECT DISTINCT e.incident_id, json_extract(l.value, '$.signature') FROM events AS e,
                       json_each(e.data, '$.events') AS l
                WHERE e.kind = 'logs' AND e.incident_id != ? AND json_extract(l.value, '$.signature') IN ({marks})
                  AND json_extract(e.data, '$.service') = ?
                ORDER BY 1 DESC""",
            [this, *wanted, service, this, *wanted, service]).fetchall()

    def watched(self, since: datetime) -> list[Incident]:
        return self._incidents("mitigated_at >= ? OR resolved_at >= ?", [to_iso(since), to_iso(since)])

    def insert_incident(self, **fields: Any) -> int:
        with self._transaction() as db:
            incident_id = _insert(db, "incidents", _stored(fields))
            db.execute(f"UPDATE incidents SET {_DURATIONS} WHERE id = ?", [incident_id])
            return incident_id

    def update_incident(self, incident_id: int, **fields: Any) -> None:
        stored = _stored(fields)
        with self._transaction() as db:
            db.execute(f"UPDATE incidents SET {', '.join(f'{quoted(key)} = ?' for key in stored)} WHERE id = ?",
                       [*stored.values(), incident_id])
            db.execute(f"UPDATE incidents SET {_DURATIONS} WHERE id = ?", [incident_id])

    # -- timeline --------------------------------------------------------------------------

    def add_event(self, incident_id: int, *, at: datetime, user: str | None, kind: str,
                  text: str | None = None, data: dict[str, Any] | None = None) -> None:
        with self._transaction() as db:
            _insert(db, "events", {
                "incident_id": incident_id, "at": to_iso(at), "user": user, "kind": kind,
                "text": redact(text) if text else text,
                "data": to_json(redact_data(data or {}, default=json_default)),
            })

    def events(self, incident_id: int) -> list[Event]:
        rows = self._rows("SELECT * FROM events WHERE incident_id = ? ORDER BY at, id", [incident_id])
        return [Event(**{**row, "at": from_iso(row["at"]), "data": json.loads(row["data"] or "{}")})
                for row in rows]

    # -- watching a fix ---------------------------------------------------------------------

    def add_watch_check(self, check: WatchCheck) -> bool:
        with self._transaction() as db:
            row = {**asdict(check), "at": to_iso(check.at)}
            columns = ", ".join(map(quoted, row))
            return db.execute(f"INSERT OR IGNORE INTO watch_checks ({columns}) VALUES ({', '.join('?' * len(row))})",
                              list(row.values())).rowcount == 1

    def watch_checks(self, incident_id: int) -> list[WatchCheck]:
        rows = self._rows("SELECT incident_id, at, errors, errors_before, probes_failing, failing FROM watch_checks "
                          "WHERE incident_id = ? ORDER BY at", [incident_id])
        return [WatchCheck(**{**row, "at": from_iso(row["at"])}) for row in rows]

    def last_event_at(self, incident_id: int, kinds: Iterable[str]) -> datetime | None:
        wanted = list(kinds)
        found = self._db.execute(f"SELECT MAX(at) FROM events WHERE incident_id = ? AND kind IN "
                                 f"({','.join('?' * len(wanted))})", [incident_id, *wanted]).fetchone()[0]
        return from_iso(found)

    # -- coordination ------------------------------------------------------------------------

    def add_followup(self, incident_id: int, *, text: str, owner: str | None, by: str, at: datetime) -> Followup:
        with self._transaction() as db:
            number = db.execute("SELECT COALESCE(MAX(number), 0) + 1 FROM followups WHERE incident_id = ?",
                                [incident_id]).fetchone()[0]
            _insert(db, "followups", {"incident_id": incident_id, "number": number, "text": redact(text),
                                      "owner": owner, "created_by": by, "created_at": to_iso(at)})
        return self.followups(incident_id)[number - 1]

    def followups(self, incident_id: int) -> list[Followup]:
        rows = self._rows("SELECT incident_id, number, text, owner, created_by, created_at, done_at, done_by "
                          "FROM followups WHERE incident_id = ? ORDER BY number", [incident_id])
        return [Followup(**{**row, "created_at": from_iso(row["created_at"]), "done_at": from_iso(row["done_at"])})
                for row in rows]

    def followup_done(self, incident_id: int, number: int, *, by: str, at: datetime) -> Followup | None:
        with self._transaction() as db:
            changed = db.execute("UPDATE followups SET done_at = ?, done_by = ? WHERE incident_id = ? AND number = ?",
                                 [to_iso(at), by, incident_id, number]).rowcount
        found = [item for item in self.followups(incident_id) if item.number == number]
        return found[0] if changed and found else None

    def reminders(self, incident_id: int) -> dict[str, ReminderState]:
        rows = self._rows("SELECT kind, snoozed_until, reminded_for FROM reminders WHERE incident_id = ?",
                          [incident_id])
        return {row["kind"]: ReminderState(incident_id, row["kind"], from_iso(row["snoozed_until"]),
                                           from_iso(row["reminded_for"])) for row in rows}

    def set_reminder(self, incident_id: int, kind: str, *, snoozed_until: datetime | None = None,
                     reminded_for: datetime | None = None) -> None:
        with self._transaction() as db:
            db.execute("INSERT INTO reminders (incident_id, kind, snoozed_until, reminded_for) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT (incident_id, kind) DO UPDATE SET "
                       "snoozed_until = COALESCE(excluded.snoozed_until, snoozed_until), "
                       "reminded_for = COALESCE(excluded.reminded_for, reminded_for)",
                       [incident_id, kind, to_iso(snoozed_until), to_iso(reminded_for)])

    def resolved_since(self, since: datetime) -> list[Incident]:
        return self._incidents("resolved_at >= ?", [to_iso(since)], order="resolved_at, id")

    # -- the work queue --------------------------------------------------------------------

    def queue_work(self, key: str, kind: str, payload: dict[str, Any], now: datetime) -> bool:
        """Queues work under `key`; false when `key` was queued before (a redelivery).

        Inside a unit it joins the unit. Otherwise (the acks' case) it goes to the inbox, a file of
        its own whose write lock nothing holds for long: the workers write the database in units
        that can hold its lock for milliseconds, and an ack waited on each of them. The inbox's
        deliveries are moved into the work queue when a worker looks for work, and kept there as
        long as done work is, so a key delivered again finds itself in the inbox alone."""
        row = (key, kind, to_json(payload), to_iso(now))
        if self._in_unit():
            return _queue_rows(self._db, "work", [row])[0]
        return self._queue_writer.write(row)

    def _move_inbox(self) -> None:
        """Moves the inbox's deliveries past its mark into the work queue, in their order, then the
        mark past them. Its ids only grow (AUTOINCREMENT, and commits follow each other), so the
        deliveries past the mark are those not moved yet. A process that dies between the two moves
        them again, and the work queue takes a key once."""
        rows = self._inbox.execute(
            "SELECT id, key, kind, payload, created_at FROM deliveries WHERE id > (SELECT upto FROM moved) "
            "ORDER BY id LIMIT ?", [QUEUE_BATCH_ROWS]).fetchall()
        if not rows:
            return
        self._write_statement(*_queue_statement("work", [row[1:] for row in rows]))
        self._inbox.execute("UPDATE moved SET upto = max(upto, ?)", [rows[-1][0]])

    def claim_work(self, now: datetime, lease: timedelta) -> WorkItem | None:
        """The oldest work not done whose lease (if any) has ended, leased to the caller."""
        self._move_inbox()
        claimable = "done_at IS NULL AND (lease_until IS NULL OR lease_until <= ?)"
        if not self._db.execute(f"SELECT 1 FROM work WHERE {claimable} LIMIT 1", [to_iso(now)]).fetchone():
            return None   # the common case of all work done or being done, without taking the write lock
        rows = self._write_statement(
            f"UPDATE work SET lease_until = ?, attempts = attempts + 1 "
            f"WHERE id = (SELECT id FROM work WHERE {claimable} ORDER BY id LIMIT 1) "
            "RETURNING id, key, kind, payload, attempts, created_at", [to_iso(now + lease), to_iso(now)])
        if not rows:
            return None
        (item_id, key, kind, payload, attempts, created_at), = rows
        return WorkItem(item_id, key, kind, json.loads(payload), attempts, from_iso(created_at))

    def renew_work(self, item_ids: Iterable[int], until: datetime) -> None:
        """Extends the leases of work still being done (a live worker keeps what it runs)."""
        ids = list(item_ids)
        if ids:
            marks = ",".join("?" * len(ids))
            self._write_statement(f"UPDATE work SET lease_until = ? WHERE done_at IS NULL AND id IN ({marks})",
                                  [to_iso(until), *ids])

    def work_done(self, item_id: int, now: datetime) -> None:
        self._write_statement("UPDATE work SET done_at = ?, lease_until = NULL WHERE id = ?", [to_iso(now), item_id])

    def work_pending(self) -> int:
        self._move_inbox()
        return int(self._db.execute("SELECT COUNT(*) FROM work WHERE done_at IS NULL").fetchone()[0])

    def prune_work(self, before: datetime) -> int:
        """Forgets work done before `before`, and the inbox's deliveries moved and made before then
        (a key forgotten in both no longer stops a redelivery); how many pieces of work."""
        self._inbox.execute("DELETE FROM deliveries WHERE id <= (SELECT upto FROM moved) AND created_at < ?",
                            [to_iso(before)])
        with self._transaction() as db:
            return db.execute("DELETE FROM work WHERE done_at < ?", [to_iso(before)]).rowcount

    # -- outbox ----------------------------------------------------------------------------

    def enqueue(self, *, kind: str, payload: dict[str, Any], now: datetime, request_id: str | None = None,
                incident_id: int | None = None, channel: str | None = None, user: str | None = None,
                response_url: str | None = None, key: str | None = None) -> int:
        """Queue one item for Slack; returns its id."""
        with self._transaction() as db:
            return _insert(db, "outbox", {
                "created_at": to_iso(now), "request_id": request_id, "kind": kind,
                "incident_id": incident_id, "channel": channel, "user": user,
                "response_url": response_url, "payload": to_json(payload), "message_key": key,
            })

    def outbox_keyed(self, key: str) -> int | None:
        row = self._db.execute("SELECT MIN(id) FROM outbox WHERE message_key = ?", [key]).fetchone()
        return row[0] if row else None

    def claim_outbox(self, now: datetime, lease: timedelta) -> OutboxItem | None:
        """The oldest item that is due, not leased, and not behind an unsent item of its incident
        or of its request.

        Items of one incident go out in order (a thread reply never overtakes the announcement that
        creates the thread), and so do the items of one request (an update never overtakes the
        message it updates).
        """
        if self.outbox_pending() == 0:  # the common idle case, without taking the write lock
            return None
        stamp = to_iso(now)
        with self._transaction():
            rows = self._rows(
                """
                SELECT * FROM outbox AS o
                WHERE sent_at IS NULL AND failed_at IS NULL
                  AND (next_at IS NULL OR next_at <= :now)
                  AND (lease_until IS NULL OR lease_until <= :now)
                  AND NOT EXISTS (
                        SELECT 1 FROM outbox AS earlier
                        WHERE earlier.id < o.id AND earlier.sent_at IS NULL AND earlier.failed_at IS NULL
                          AND (earlier.incident_id = o.incident_id OR earlier.request_id = o.request_id))
                ORDER BY id LIMIT 1
                """,
                {"now": stamp},
            )
            if not rows:
                return None
            row = rows[0]
            self._db.execute("UPDATE outbox SET lease_until = ?, in_flight_since = ? WHERE id = ?",
                             [to_iso(now + lease), stamp, row["id"]])
        return OutboxItem(
            id=row["id"], kind=row["kind"], request_id=row["request_id"], incident_id=row["incident_id"],
            channel=row["channel"], user=row["user"], response_url=row["response_url"],
            payload=json.loads(row["payload"]), attempts=row["attempts"], created_at=from_iso(row["created_at"]),
            in_doubt=row["in_flight_since"] is not None,
        )

    def next_outbox_due(self) -> datetime | None:
        (due,) = self._db.execute("SELECT MIN(COALESCE(next_at, created_at)) FROM outbox "
                                  "WHERE sent_at IS NULL AND failed_at IS NULL").fetchone()
        return from_iso(due)

    def outbox_sent(self, item_id: int, now: datetime, *, channel: str | None = None, ts: str | None = None) -> None:
        self._write_statement(
            "UPDATE outbox SET sent_at = ?, lease_until = NULL, in_flight_since = NULL, sent_channel = ?, "
            "sent_ts = ? WHERE id = ?", [to_iso(now), channel, ts, item_id])

    def outbox_sent_message(self, item_id: int) -> tuple[str, str] | None:
        """Where an outbox message went (channel, ts), once Slack has taken it."""
        row = self._db.execute("SELECT sent_channel, sent_ts FROM outbox WHERE id = ?", [item_id]).fetchone()
        return (row[0], row[1]) if row and row[1] else None

    def outbox_retry(self, item_id: int, at: datetime, error: str, *, in_doubt: bool = False) -> None:
        in_flight = "in_flight_since" if in_doubt else "NULL"
        self._write_statement(
            f"UPDATE outbox SET attempts = attempts + 1, next_at = ?, lease_until = NULL, "
            f"in_flight_since = {in_flight}, error = ? WHERE id = ?", [to_iso(at), redact(error), item_id])

    def outbox_failed(self, item_id: int, now: datetime, error: str) -> None:
        self._write_statement(
            "UPDATE outbox SET failed_at = ?, lease_until = NULL, in_flight_since = NULL, error = ?, "
            "attempts = attempts + 1 WHERE id = ?", [to_iso(now), redact(error), item_id])

    def outbox_superseded(self, item: OutboxItem) -> bool:
        """A view that a newer one, queued behind it, replaces need not be sent: an incident's
        announcement (`update`, per incident), a user's App Home (`home`, per user), a message
        updated in place (`update_message`, per message)."""
        same, value = {
            "update": ("incident_id = ?", item.incident_id),
            "home": ("user = ?", item.user),
            "update_message": ("json_extract(payload, '$.target') = ?", item.payload.get("target")),
        }[item.kind]
        return self._db.execute(
            f"SELECT 1 FROM outbox WHERE kind = ? AND {same} AND id > ? "
            "AND sent_at IS NULL AND failed_at IS NULL LIMIT 1",
            [item.kind, value, item.id]).fetchone() is not None

    def prune_outbox(self, before: datetime) -> int:
        """Forgets messages sent, or given up on, before `before` (the timeline keeps what happened);
        returns how many."""
        with self._transaction() as db:
            return db.execute("DELETE FROM outbox WHERE COALESCE(sent_at, failed_at) < ?", [to_iso(before)]).rowcount

    def outbox_pending(self) -> int:
        return self._db.execute(
            "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL").fetchone()[0]

    # -- weekly reports ----------------------------------------------------------------------

    def claim_report(self, week: str, channel: str, now: datetime, claimed_by: str) -> bool:
        """True for the one caller that claims `week`'s report; everyone after finds it taken."""
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO reports (week, channel, claimed_at, claimed_by) VALUES (?, ?, ?, ?)",
                [week, channel, to_iso(now), claimed_by])
            return cursor.rowcount == 1

    def report_claimed(self, week: str) -> Report | None:
        return self._report("SELECT week, channel, claimed_at, claimed_by FROM reports WHERE week = ?", [week])

    def last_report(self) -> Report | None:
        return self._report("SELECT week, channel, claimed_at, claimed_by FROM reports ORDER BY week DESC LIMIT 1")

    def _report(self, sql: str, params: Iterable[Any] = ()) -> Report | None:
        row = self._db.execute(sql, list(params)).fetchone()
        return Report(row[0], row[1], from_iso(row[2]), row[3]) if row else None

    # -- health ----------------------------------------------------------------------------

    def check_writable(self, now: datetime) -> None:
        """Raises StoreUnavailable unless a write commits within a second, in the database and in the inbox."""
        try:
            with closing(sqlite3.connect(self._uri, uri=True, timeout=1, isolation_level=None)) as conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT OR REPLACE INTO heartbeat (id, at) VALUES (1, ?)", [to_iso(now)])
                conn.execute("COMMIT")
            with closing(sqlite3.connect(self._inbox_uri, uri=True, timeout=1, isolation_level=None)) as conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("COMMIT")
        except sqlite3.Error as error:
            raise StoreUnavailable(str(error)) from error

    # -- alert groups ----------------------------------------------------------------------

    def alert_group(self, source: str, dedup_key: str) -> AlertGroup | None:
        rows = self._rows("SELECT source, dedup_key, incident_id, alerts, updated_at FROM alert_groups "
                          "WHERE source = ? AND dedup_key = ?", [source, dedup_key])
        if not rows:
            return None
        row = rows[0]
        return AlertGroup(**{**row, "alerts": json.loads(row["alerts"]), "updated_at": from_iso(row["updated_at"])})

    def save_alert_group(self, group: AlertGroup) -> None:
        with self._transaction() as db:
            db.execute("INSERT INTO alert_groups (source, dedup_key, incident_id, alerts, updated_at) "
                       "VALUES (?, ?, ?, ?, ?) ON CONFLICT (source, dedup_key) DO UPDATE SET "
                       "incident_id = excluded.incident_id, alerts = excluded.alerts, updated_at = excluded.updated_at",
                       [group.source, group.dedup_key, group.incident_id,
                        to_json(redact_data(group.alerts, default=json_default)), to_iso(group.updated_at)])

    @property
    def local_dir(self) -> Path:
        return Path(self.path).resolve().parent

    # -- moving a history between stores -------------------------------------------------------

    def optimize(self) -> None:
        """Nothing to do: /mttr's covering index is read without statistics or a visibility map."""

    def rows(self, table: Table, *, after: Any = None, limit: int) -> list[dict[str, Any]]:
        if table.name == "work" and after is None:
            self._move_inbox()
        name, key = quoted(table.name), quoted(table.key)
        where, params = ("", []) if after is None else (f"WHERE {key} > ?", [after])
        return [_unstored(table, row) for row in self._rows(
            f"SELECT * FROM {name} {where} ORDER BY {key} LIMIT ?", [*params, limit])]

    def rows_with_keys(self, table: Table, keys: Sequence[Any]) -> list[dict[str, Any]]:
        if not keys:
            return []
        return [_unstored(table, row) for row in self._rows(
            f"SELECT * FROM {quoted(table.name)} WHERE {quoted(table.key)} IN ({','.join('?' * len(keys))})",
            keys)]

    def insert_rows(self, table: Table, rows: Sequence[dict[str, Any]]) -> int:
        """INSERT OR IGNORE, in one transaction. An INTEGER PRIMARY KEY hands out the highest id
        plus one next, so the ids kept need nothing more; an incident's durations are computed, as
        on every write."""
        if not rows:
            return 0
        columns = [column for column in rows[0] if column not in table.derived]
        values = [[_stored_value(table, column, row[column]) for column in columns] for row in rows]
        with self._transaction() as db:
            added = db.executemany(f"INSERT OR IGNORE INTO {quoted(table.name)} ({', '.join(map(quoted, columns))}) "
                                   f"VALUES ({', '.join('?' * len(columns))})", values).rowcount
            if table.name == "incidents":
                keys = [row[table.key] for row in rows]
                db.execute(f"UPDATE incidents SET {_DURATIONS} WHERE id IN ({','.join('?' * len(keys))})", keys)
        return added


class _QueueWriter:
    """The work queued by threads at once, written into the inbox in one statement: a group commit.

    Slack's acks wait on their queue write, and a commit costs far more than an insert: with 30
    commands at once, a commit each kept the last ack waiting for 29 of them. Here, while one thread
    writes, the rows of the others gather. When its commit is done, it wakes every thread whose row
    it wrote at once (their outcomes, or its error), and asks the first of those that came since to
    write the next batch: each thread is woken once, so no wake-up waits for another.

    The writes go through a connection of their own that never checkpoints the WAL: a checkpoint
    syncs the database file (milliseconds, tens of them on a slow disk) inside the commit that
    triggers it, and the acks would wait for it. The workers' connections, which mark the rows
    they moved, checkpoint instead, and SQLite does when the last connection closes."""

    def __init__(self, path: str, connect: Callable[[], sqlite3.Connection]):
        self._path = path
        self._connect = connect
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._waiting: list[_Queued] = []
        self._writing = False

    def write(self, row: tuple[Any, ...]) -> bool:
        mine = _Queued(row)
        with self._lock:
            if self._writing:
                mine.turn = threading.Event()
                self._waiting.append(mine)
            self._writing = True
        if mine.turn is not None:
            mine.turn.wait()          # written by another thread, or asked to write
        if not mine.written:
            if mine.turn is None:
                batch = [mine]        # nobody was writing: the common case, which needs no Event
            else:
                with self._lock:
                    batch, self._waiting = self._waiting[:QUEUE_BATCH_ROWS], self._waiting[QUEUE_BATCH_ROWS:]
            self._write(batch)
            with self._lock:
                if self._waiting:
                    self._waiting[0].wake()
                else:
                    self._writing = False
        if mine.error is not None:
            raise mine.error
        return mine.queued

    def _write(self, batch: list[_Queued]) -> None:
        try:
            if self._db is None:
                self._db = self._connect()
                self._db.execute("PRAGMA wal_autocheckpoint = 0")
                self._db.execute("PRAGMA busy_timeout = 0")
            db, rows = self._db, [queued.row for queued in batch]
            outcomes = _when_unlocked(lambda: _queue_rows(db, "deliveries", rows))
        except BaseException as error:
            told = StoreUnavailable(f"{self._path}: {error}") if isinstance(error, sqlite3.Error) else error
            for queued in batch:
                queued.error = told
        else:
            for queued, outcome in zip(batch, outcomes, strict=True):
                queued.queued = outcome
        for queued in batch:
            queued.written = True
            queued.wake()

    def close(self) -> None:
        """Closes the connection, unless a write is under way (it is then closed with the process)."""
        with self._lock:
            if self._db is not None and not self._writing:
                self._db.close()
                self._db = None


@dataclass
class _Queued:
    row: tuple[Any, ...]
    turn: threading.Event | None = None     # what it waits on, when another thread was writing
    written: bool = False
    queued: bool = False
    error: BaseException | None = None

    def wake(self) -> None:
        if self.turn is not None:
            self.turn.set()


def _make_inbox(inbox: sqlite3.Connection) -> None:
    """The inbox's tables: the deliveries queued, and the mark up to which they were moved into the
    work queue. Deliveries that an earlier release left in its table `inbox` are taken over. The
    write lock is taken only when there is something to do (as for the database's migrations), so
    a start-up never waits behind the acks for nothing."""
    inbox.execute("PRAGMA journal_mode = WAL")
    tables = {name for name, in inbox.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if {"deliveries", "moved"} <= tables and "inbox" not in tables:
        return
    inbox.execute("BEGIN IMMEDIATE")
    inbox.execute("CREATE TABLE IF NOT EXISTS deliveries (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                  "key TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, payload TEXT NOT NULL, created_at TEXT NOT NULL)")
    inbox.execute("CREATE TABLE IF NOT EXISTS moved (upto INTEGER NOT NULL)")
    inbox.execute("INSERT INTO moved SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM moved)")
    if inbox.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'inbox'").fetchone():
        inbox.execute("INSERT OR IGNORE INTO deliveries (key, kind, payload, created_at) "
                      "SELECT key, kind, payload, created_at FROM inbox ORDER BY id")
        inbox.execute("DROP TABLE inbox")
    inbox.execute("COMMIT")


def _queue_statement(table: str, rows: Sequence[tuple[Any, ...]]) -> tuple[str, list[Any]]:
    """The statement queuing `rows` of (key, kind, payload, created_at) in `table` (the work queue or the
    inbox's deliveries), and its parameters."""
    values = ", ".join(["(?, ?, ?, ?)"] * len(rows))
    return (f"INSERT OR IGNORE INTO {table} (key, kind, payload, created_at) VALUES {values}",
            [value for row in rows for value in row])


def _queue_rows(db: sqlite3.Connection, table: str, rows: list[tuple[Any, ...]]) -> list[bool]:
    """Whether each row was queued: false when its key was queued before (or earlier in `rows`). One
    statement for all of them: every statement lets go of the interpreter while SQLite runs it,
    and with other threads busy (Socket Mode's), getting it back is what a write waits for most.
    One row (an ack's: `serve` serves one request at a time) is told by the count of rows the
    statement changed: a statement returning the keys it took lets go twice, once for the key and
    once to end."""
    statement, parameters = _queue_statement(table, rows)
    if len(rows) == 1:
        return [db.execute(statement, parameters).rowcount == 1]
    new = {key for key, in db.execute(f"{statement} RETURNING key", parameters)}
    queued = []
    for key, *_ in rows:
        queued.append(key in new)
        new.discard(key)
    return queued


def _begin_immediate(db: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE on a connection that otherwise waits for locks with SQLite's busy handler."""
    db.execute("PRAGMA busy_timeout = 0")
    try:
        _when_unlocked(lambda: db.execute("BEGIN IMMEDIATE"))
    finally:
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")


def _when_unlocked(write: Callable[[], T]) -> T:
    """`write` on a connection without a busy timeout, tried again while the lock it needs is taken,
    in steps of at most a millisecond or two.

    SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25… ms between tries, so a writer that
    finds the lock taken often sleeps well past its release: with many short transactions (the
    acks' queuing beside the workers' removals from the inbox, the workers' units beside each
    other) that sleep is most of what a write waits."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    pause = 0.0002
    while True:
        try:
            return write()
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.002)


def _insert(db: sqlite3.Connection, table: str, row: dict[str, Any]) -> int:
    """Inserts `row` (column -> value) into `table`; returns the new row's id."""
    columns = ", ".join(map(quoted, row))
    cursor = db.execute(f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
    if cursor.lastrowid is None:
        raise sqlite3.DatabaseError(f"an insert into {table} made no row")
    return cursor.lastrowid




def _unstored(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    """A row as `Store.rows` gives it: moments as datetimes, JSON decoded, no derived column."""
    return {column: from_iso(value) if column in table.moments
            else json.loads(value) if column in table.json and value is not None
            else value for column, value in row.items() if column not in table.derived}


def _stored_value(table: Table, column: str, value: Any) -> Any:
    if column in table.moments:
        return to_iso(value)
    if column in table.json and value is not None:
        return to_json(value)
    return value


def _stored(fields: dict[str, Any]) -> dict[str, Any]:
    """Times as ISO 8601 text, text redacted."""
    return {key: to_iso(value) if isinstance(value, datetime) else value for key, value in redacted(fields).items()}
