"""PostgreSQL: the store several replicas of the bot share.

Connections come from a small pool per process (psycopg_pool), which checks a connection before
lending it and reconnects by itself once the server is back after a restart or a failover; while
it is not, every operation raises StoreUnavailable within a few seconds rather than hanging.

Units of work (`write()`) are serialised across every replica by one transaction-scoped advisory
lock, as SQLite's `BEGIN IMMEDIATE` serialises the threads of one process: what a unit reads is
current, so two replicas acking and resolving one incident at once end in one consistent state,
and incident numbers (the next after the highest, taken under the lock) stay unique and gap-free.
Operations that need no unit (claiming a delivery, claiming outbox rows with SKIP LOCKED) do not
take the lock, so acks and senders never wait behind a command.

The schema is versioned in `schema_migrations`; a process that finds it behind applies what is
missing under a session advisory lock, so replicas starting at once apply each migration once.
Times are `timestamptz` in UTC; durations are stored generated columns.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from bot.redact import redact, redact_data
from bot.serialize import json_default, to_json
from bot.store import (
    EXPORTED,
    HISTORY,
    INCIDENT_MOMENTS,
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

POOL_SIZE = 8
CONNECT_SECONDS = 5           # how long an operation waits for a connection before saying so
WRITE_LOCK = 7_101_001        # advisory lock keys: units of work, and migrations
MIGRATION_LOCK = 7_101_002

_MIGRATIONS: tuple[tuple[str, str], ...] = (
    ("0001_schema", """
        CREATE TABLE incidents (
            id integer PRIMARY KEY,
            title text NOT NULL, severity integer NOT NULL, service text, status text NOT NULL,
            opened_by text NOT NULL, opened_at timestamptz NOT NULL, started_at timestamptz NOT NULL,
            acknowledged_by text, acknowledged_at timestamptz,
            resolved_by text, resolved_at timestamptz, resolution text,
            channel text, announce_channel text, thread_ts text, reopened integer NOT NULL DEFAULT 0,
            cause text,
            time_to_resolve integer GENERATED ALWAYS AS
                (round(extract(epoch FROM resolved_at - started_at))::integer) STORED,
            time_to_acknowledge integer GENERATED ALWAYS AS
                (round(extract(epoch FROM acknowledged_at - opened_at))::integer) STORED);
        CREATE INDEX incidents_status ON incidents (status);
        CREATE INDEX incidents_opened_at ON incidents (opened_at);
        CREATE INDEX incidents_resolved_at ON incidents (resolved_at);
        CREATE INDEX incidents_durations ON incidents (severity, resolved_at)
            INCLUDE (time_to_resolve, time_to_acknowledge, service, id);
        CREATE TABLE events (
            id bigserial PRIMARY KEY, incident_id integer NOT NULL REFERENCES incidents (id),
            at timestamptz NOT NULL, "user" text, kind text NOT NULL, text text, data jsonb NOT NULL);
        CREATE INDEX events_incident ON events (incident_id);
        CREATE TABLE deliveries (key text PRIMARY KEY, received_at timestamptz NOT NULL);
        CREATE INDEX deliveries_received_at ON deliveries (received_at);
        CREATE TABLE outbox (
            id bigserial PRIMARY KEY, created_at timestamptz NOT NULL, request_id text, kind text NOT NULL,
            incident_id integer, channel text, "user" text, response_url text, payload jsonb NOT NULL,
            attempts integer NOT NULL DEFAULT 0, next_at timestamptz, lease_until timestamptz,
            sent_at timestamptz, failed_at timestamptz, error text, sent_channel text, sent_ts text);
        CREATE INDEX outbox_pending ON outbox (id) WHERE sent_at IS NULL AND failed_at IS NULL;
        CREATE TABLE reports (week text PRIMARY KEY, channel text, claimed_at timestamptz NOT NULL,
                              claimed_by text, data text);
        CREATE TABLE heartbeat (id integer PRIMARY KEY, at timestamptz NOT NULL);
    """),
    ("0002_work_queue", """
        CREATE TABLE work (
            id bigserial PRIMARY KEY, key text NOT NULL UNIQUE, kind text NOT NULL, payload jsonb NOT NULL,
            created_at timestamptz NOT NULL, lease_until timestamptz, attempts integer NOT NULL DEFAULT 0,
            done_at timestamptz);
        CREATE INDEX work_pending ON work (id) WHERE done_at IS NULL;
        DROP TABLE deliveries;
    """),
    # Set when a sender claims an item, cleared when its outcome is known: still set at the next
    # claim, the earlier attempt may have reached Slack.
    ("0003_outbox_marks_attempts_in_flight", "ALTER TABLE outbox ADD COLUMN in_flight_since timestamptz"),
    # The few incidents not resolved, without reading the many that are: every command about "the
    # channel's incident" asks for them (open_incidents writes the predicate as a literal, so the
    # planner can match it).
    ("0004_open_incidents", "CREATE INDEX incidents_open ON incidents (id) WHERE status <> 'resolved'"),
    ("0005_alerts", """
        ALTER TABLE incidents ADD COLUMN source text, ADD COLUMN dedup_key text, ADD COLUMN verdict text;
        CREATE TABLE alert_groups (
            id bigserial PRIMARY KEY, source text NOT NULL, dedup_key text NOT NULL, incident_id integer,
            alerts jsonb NOT NULL, updated_at timestamptz NOT NULL, UNIQUE (source, dedup_key));
    """),
    # The moments evidence gives (an alert, the logs, git, the watch after a fix), and the two
    # durations /mttr adds, read from the covering index like the others.
    ("0006_milestones", """
        ALTER TABLE incidents ADD COLUMN detected_at timestamptz, ADD COLUMN mitigated_at timestamptz,
            ADD COLUMN recovered_at timestamptz,
            ADD COLUMN time_to_detect integer GENERATED ALWAYS AS
                (round(extract(epoch FROM detected_at - started_at))::integer) STORED,
            ADD COLUMN time_to_mitigate integer GENERATED ALWAYS AS
                (round(extract(epoch FROM mitigated_at - started_at))::integer) STORED;
        DROP INDEX incidents_durations;
        CREATE INDEX incidents_durations ON incidents (severity, resolved_at)
            INCLUDE (time_to_resolve, time_to_acknowledge, service, id, time_to_detect, time_to_mitigate);
        CREATE INDEX incidents_mitigated_at ON incidents (mitigated_at);
        CREATE TABLE watch_checks (
            id bigserial PRIMARY KEY, incident_id integer NOT NULL REFERENCES incidents (id),
            at timestamptz NOT NULL, errors integer, errors_before integer, probes_failing integer, failing text,
            UNIQUE (incident_id, at));
        ALTER TABLE outbox ADD COLUMN message_key text;
        CREATE INDEX outbox_message_key ON outbox (message_key) WHERE message_key IS NOT NULL;
    """),
    # Who leads and who talks, the action items, and what each reminder was last posted for (or
    # snoozed until): stored, so a reminder is posted once whatever restarts or replicas.
    ("0007_coordination", """
        ALTER TABLE incidents ADD COLUMN lead text, ADD COLUMN comms text, ADD COLUMN postmortem_at timestamptz;
        CREATE TABLE followups (
            id bigserial PRIMARY KEY, incident_id integer NOT NULL REFERENCES incidents (id),
            number integer NOT NULL, text text NOT NULL, owner text, created_by text,
            created_at timestamptz NOT NULL, done_at timestamptz, done_by text, UNIQUE (incident_id, number));
        CREATE TABLE reminders (
            id bigserial PRIMARY KEY, incident_id integer NOT NULL REFERENCES incidents (id),
            kind text NOT NULL, snoozed_until timestamptz, reminded_for timestamptz, UNIQUE (incident_id, kind));
    """),
)
_INCIDENT_COLUMNS = ", ".join(Incident.__dataclass_fields__)
_TIMES = set(INCIDENT_MOMENTS)
_ISO = """'YYYY-MM-DD"T"HH24:MI:SS"Z"'"""
# The JSON export's lists of an incident: its timeline, and its follow-ups.
_EXPORTED_LISTS = (
    ("timeline", f"""SELECT coalesce(json_agg(json_build_object('when', to_char(at AT TIME ZONE 'UTC', {_ISO}),
                                                            'who', "user", 'kind', kind, 'text', text)
                                          ORDER BY at, id), '[]') FROM events WHERE incident_id = incidents.id"""),
    ("followups", """SELECT coalesce(json_agg(json_build_object('text', text, 'owner', owner,
                                                             'done', done_at IS NOT NULL) ORDER BY number), '[]')
                     FROM followups WHERE incident_id = incidents.id"""),
)


class PostgresStore:
    def __init__(self, url: str, local_dir: Path | None = None, *, migrate: bool = True):
        """The database at `url`, its schema brought up to date unless `migrate` is false; what the
        bot caches on this machine (git mirrors) goes in `local_dir`, the working directory unless
        given."""
        self.url = url
        self._local_dir = local_dir or Path.cwd()
        self._local = threading.local()
        try:   # the pool only logs why it cannot connect: one connection first, to say so
            psycopg.connect(url, connect_timeout=CONNECT_SECONDS).close()
        except psycopg.Error as error:
            raise StoreUnavailable(f"{_where(url)}: {_first_line(error)}") from None
        self._pool = ConnectionPool(url, min_size=1, max_size=POOL_SIZE, timeout=CONNECT_SECONDS,
                                    kwargs={"autocommit": True, "options": "-c timezone=UTC"},
                                    check=ConnectionPool.check_connection, open=False, name="oncall-bot")
        try:
            self._pool.open(wait=True, timeout=CONNECT_SECONDS)
        except PoolTimeout:
            self._pool.close()
            raise StoreUnavailable(f"{_where(url)}: no connection within {CONNECT_SECONDS} s") from None
        if migrate:
            self.migrate()

    @property
    def local_dir(self) -> Path:
        return self._local_dir

    @property
    def location(self) -> str:
        return _where(self.url)

    def migrate(self) -> list[str]:
        """Applies the migrations this database lacks (once, whatever the number of processes
        starting at once); returns their names."""
        applied: list[str] = []
        with self._connection() as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK])
            try:
                conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                             "(name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
                done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
                for name, sql in _MIGRATIONS:
                    if name in done:
                        continue
                    with conn.transaction():
                        conn.execute(sql.encode())
                        conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", [name])
                    applied.append(name)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK])
        return applied

    # -- connections and units of work -------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """The connection of the unit of work this thread is in, else one lent by the pool for as
        long as the operation lasts. A lost server is StoreUnavailable, never a hang."""
        held = getattr(self._local, "conn", None)
        if held is not None:
            yield held
            return
        with self._unavailable_as_such():
            with self._pool.connection() as conn:
                yield conn

    @contextmanager
    def _unavailable_as_such(self) -> Iterator[None]:
        try:
            yield
        except PoolTimeout:
            raise StoreUnavailable(f"{_where(self.url)}: no connection within {CONNECT_SECONDS} s") from None
        except psycopg.OperationalError as error:
            raise StoreUnavailable(f"{_where(self.url)}: {_first_line(error)}") from None

    def _begin(self) -> None:
        """Starts this thread's unit of work: a connection of its own, a transaction, the write lock."""
        with self._unavailable_as_such():
            conn = self._pool.getconn()
            try:
                conn.execute("BEGIN")
                conn.execute("SELECT pg_advisory_xact_lock(%s)", [WRITE_LOCK])
            except BaseException:
                self._pool.putconn(conn)
                raise
        self._local.conn = conn

    def _end(self, *, commit: bool) -> None:
        conn, self._local.conn = self._local.conn, None
        try:
            with self._unavailable_as_such():
                conn.execute("COMMIT" if commit else "ROLLBACK")
        finally:
            self._pool.putconn(conn)

    @contextmanager
    def write(self) -> Iterator[None]:
        """One unit of work: one transaction holding the store-wide write lock (re-entrant; inside
        `atomic()`, the atomic unit's)."""
        if getattr(self._local, "conn", None) is not None:
            yield
            return
        self._begin()
        if getattr(self._local, "atomic", False):
            yield        # ended with the atomic unit
            return
        try:
            yield
        except BaseException:
            self._end(commit=False)
            raise
        self._end(commit=True)

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """As SqliteStore.atomic: the unit begins (connection, transaction, lock) at the first write."""
        if getattr(self._local, "conn", None) is not None or getattr(self._local, "atomic", False):
            yield
            return
        self._local.atomic = True
        try:
            yield
        except BaseException:
            self._local.atomic = False
            if getattr(self._local, "conn", None) is not None:
                self._end(commit=False)
            raise
        self._local.atomic = False
        if getattr(self._local, "conn", None) is not None:
            self._end(commit=True)

    def close(self) -> None:
        self._pool.close()

    def _rows(self, sql: str, params: Iterable[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        with self._connection() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            return cursor.execute(sql, params if isinstance(params, dict) else list(params)).fetchall()

    def _one(self, sql: str, params: Iterable[Any] = ()) -> Any:
        with self._connection() as conn:
            row = conn.execute(sql, list(params)).fetchone()
        return row[0] if row else None

    def _execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        """Runs a statement that writes: inside an atomic unit not begun yet, it begins the unit."""
        if getattr(self._local, "atomic", False) and getattr(self._local, "conn", None) is None:
            self._begin()
        with self._connection() as conn:
            return conn.execute(sql, list(params)).rowcount

    def _returning(self, sql: str, params: Iterable[Any] = ()) -> Any:
        """As `_execute`, for a statement that writes and returns one value."""
        if getattr(self._local, "atomic", False) and getattr(self._local, "conn", None) is None:
            self._begin()
        return self._one(sql, params)

    # -- incidents -------------------------------------------------------------------------

    def incident(self, incident_id: int) -> Incident | None:
        found = self._incidents("id = %s", [incident_id])
        return found[0] if found else None

    def _incidents(self, where: str, params: list[Any], *, order: str = "id",
                   limit: int | None = None) -> list[Incident]:
        sql = f"SELECT {_INCIDENT_COLUMNS} FROM incidents WHERE {where} ORDER BY {order}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [Incident.from_row(row) for row in self._rows(sql, params)]

    def open_incidents(self, channel: str | None = None, *, service: str | None = None,
                       severity: int | None = None) -> list[Incident]:
        where, params = f"status <> '{RESOLVED}'", list[Any]()
        if channel is not None:
            where, params = where + " AND (channel = %s OR announce_channel = %s)", [*params, channel, channel]
        filters, more = incident_filters(service, severity, "%s")
        return self._incidents(where + filters, params + more)

    def recent_incidents(self, limit: int) -> list[Incident]:
        return self._incidents("TRUE", [], order="id DESC", limit=limit)

    def last_resolved(self, channel: str | None = None, *, limit: int = 1) -> list[Incident]:
        if channel is None:
            return self._incidents("status = %s", [RESOLVED], order="resolved_at DESC", limit=limit)
        return self._incidents("status = %s AND (channel = %s OR announce_channel = %s)",
                               [RESOLVED, channel, channel], order="resolved_at DESC", limit=limit)

    def open_twin(self, user: str, title: str, since: datetime) -> Incident | None:
        twins = self._incidents("opened_by = %s AND lower(title) = lower(%s) AND opened_at >= %s AND status != %s",
                                [user, title, since, RESOLVED], order="id DESC", limit=1)
        return twins[0] if twins else None

    def watched(self, since: datetime) -> list[Incident]:
        return self._incidents("mitigated_at >= %s OR resolved_at >= %s", [since, since])

    def insert_incident(self, **fields: Any) -> int:
        with self.write(), self._connection() as conn:
            row = conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM incidents").fetchone()
            incident_id = int(row[0]) if row else 1
            stored = {"id": incident_id, **_stored(fields)}
            conn.execute(f"INSERT INTO incidents ({', '.join(map(quoted, stored))}) "
                         f"VALUES ({', '.join(['%s'] * len(stored))})", list(stored.values()))
            return incident_id

    def update_incident(self, incident_id: int, **fields: Any) -> None:
        stored = _stored(fields)
        with self.write():
            self._execute(f"UPDATE incidents SET {', '.join(f'{quoted(key)} = %s' for key in stored)} WHERE id = %s",
                          [*stored.values(), incident_id])

    def export(self, since: datetime | None, output_format: str) -> Iterator[list[str]]:
        """As SqliteStore.export: PostgreSQL formats each row (json_build_object, or the CSV cells
        joined) as it reads them."""
        where, params = ("opened_at >= %s", [since]) if since else ("TRUE", [])
        values = [(name, _text(column)) for name, column in EXPORTED]
        if output_format == "json":
            pairs = [*(f"'{name}', {value}" for name, value in values),
                     *(f"'{name}', ({query})" for name, query in _EXPORTED_LISTS)]
            row = "json_build_object(" + ", ".join(pairs) + ")::text"
        else:
            row = "concat_ws(',', " + ", ".join(
                _csv_cell(value) if column in TYPED_BY_PEOPLE else f"coalesce({value}::text, '')"
                for (_, value), (_, column) in zip(values, EXPORTED, strict=True)) + ")"
        with self._connection() as conn, conn.transaction(), conn.cursor(name="export") as cursor:
            cursor.execute(f"SELECT {row} FROM incidents WHERE {where} ORDER BY id", params)
            while rows := cursor.fetchmany(1000):
                yield [text for (text,) in rows]

    # -- what /mttr, the weekly report and /triage count ---------------------------------------

    def resolutions(self, start: datetime, end: datetime, *, service: str | None = None,
                    severity: int | None = None, slowest: int = 0) -> list[Resolutions]:
        filters, params = incident_filters(service, None, "%s")
        groups = []
        with self._connection() as conn:
            for level in SEVERITIES if severity is None else (severity,):
                where = f"WHERE severity = %s AND resolved_at >= %s AND resolved_at < %s{filters}"
                values = [level, start, end, *params]
                rows = conn.execute(f"SELECT time_to_resolve, time_to_acknowledge, time_to_detect, time_to_mitigate "
                                    f"FROM incidents {where}", values).fetchall()
                if not rows:
                    continue
                longest = conn.execute(
                    f"SELECT time_to_resolve, id FROM incidents {where} ORDER BY time_to_resolve DESC LIMIT %s",
                    [*values, slowest]).fetchall() if slowest else []
                to_resolve, to_acknowledge, to_detect, to_mitigate = zip(*rows, strict=True)
                groups.append(Resolutions(level, to_resolve, to_acknowledge,
                                          tuple((seconds, incident) for seconds, incident in longest),
                                          to_detect, to_mitigate))
        return groups

    def opened_count(self, start: datetime, end: datetime, *, service: str | None = None,
                     severity: int | None = None) -> int:
        filters, params = incident_filters(service, severity, "%s")
        return int(self._one(f"SELECT COUNT(*) FROM incidents WHERE opened_at >= %s AND opened_at < %s{filters}",
                             [start, end, *params]))

    def resolved_by_service(self, start: datetime, end: datetime) -> list[tuple[str | None, int]]:
        rows = self._rows("SELECT COALESCE(service, '') AS service, COUNT(*) AS n FROM incidents "
                          "WHERE resolved_at >= %s AND resolved_at < %s GROUP BY 1 ORDER BY 2 DESC, 1", [start, end])
        return [(row["service"] or None, int(row["n"])) for row in rows]

    def caused_by_deploys(self, start: datetime, end: datetime) -> list[Incident]:
        return self._incidents("resolved_at >= %s AND resolved_at < %s AND cause LIKE 'deploy:%%'", [start, end])

    def earlier_signatures(self, signatures: Iterable[str], service: str,
                           excluding: int | None) -> list[tuple[int, str]]:
        wanted = list(signatures)
        if not wanted:
            return []
        this = -1 if excluding is None else excluding
        rows = self._rows(
            """SELECT DISTINCT e.incident_id, s.value AS signature FROM events AS e
                   JOIN incidents AS i ON i.id = e.incident_id,
                   jsonb_array_elements_text(CASE WHEN jsonb_typeof(e.data->'signatures') = 'array'
                                             THEN e.data->'signatures' ELSE '[]' END) AS s(value)
               WHERE e.kind = 'triage' AND e.incident_id != %(this)s AND s.value = ANY(%(wanted)s)
                 AND COALESCE(e.data->>'service', i.service) = %(service)s
               UNION
               SELECT DISTINCT e.incident_id, l.value->>'signature' FROM events AS e,
                   jsonb_array_elements(CASE WHEN jsonb_typeof(e.data->'events') = 'array'
                                        THEN e.data->'events' ELSE '[]' END) AS l(value)
               WHERE e.kind = 'logs' AND e.incident_id != %(this)s AND l.value->>'signature' = ANY(%(wanted)s)
                 AND e.data->>'service' = %(service)s
               ORDER BY 1 DESC""",
            {"this": this, "wanted": wanted, "service": service})
        return [(row["incident_id"], row["signature"]) for row in rows]

    # -- the timeline ------------------------------------------------------------------------

    def add_event(self, incident_id: int, *, at: datetime, user: str | None, kind: str,
                  text: str | None = None, data: dict[str, Any] | None = None) -> None:
        self._execute('INSERT INTO events (incident_id, at, "user", kind, text, data) VALUES (%s, %s, %s, %s, %s, %s)',
                      [incident_id, _second(at), user, kind, redact(text) if text else text,
                       Jsonb(json.loads(to_json(redact_data(data or {}, default=json_default))))])

    def events(self, incident_id: int) -> list[Event]:
        rows = self._rows('SELECT id, incident_id, at, "user", kind, text, data FROM events '
                          "WHERE incident_id = %s ORDER BY at, id", [incident_id])
        return [Event(**{**row, "at": row["at"].astimezone(UTC)}) for row in rows]

    # -- watching a fix ---------------------------------------------------------------------

    def add_watch_check(self, check: WatchCheck) -> bool:
        row = {**asdict(check), "at": _second(check.at)}
        return self._execute(
            f"INSERT INTO watch_checks ({', '.join(map(quoted, row))}) VALUES ({', '.join(['%s'] * len(row))}) "
            "ON CONFLICT (incident_id, at) DO NOTHING", list(row.values())) == 1

    def watch_checks(self, incident_id: int) -> list[WatchCheck]:
        rows = self._rows("SELECT incident_id, at, errors, errors_before, probes_failing, failing FROM watch_checks "
                          "WHERE incident_id = %s ORDER BY at", [incident_id])
        return [WatchCheck(**{**row, "at": row["at"].astimezone(UTC)}) for row in rows]

    def last_event_at(self, incident_id: int, kinds: Iterable[str]) -> datetime | None:
        found = self._one("SELECT MAX(at) FROM events WHERE incident_id = %s AND kind = ANY(%s)",
                          [incident_id, list(kinds)])
        return found.astimezone(UTC) if found else None

    # -- coordination ------------------------------------------------------------------------

    def add_followup(self, incident_id: int, *, text: str, owner: str | None, by: str, at: datetime) -> Followup:
        with self.write():
            number = int(self._one("SELECT COALESCE(MAX(number), 0) + 1 FROM followups WHERE incident_id = %s",
                                   [incident_id]))
            self._execute("INSERT INTO followups (incident_id, number, text, owner, created_by, created_at) "
                          "VALUES (%s, %s, %s, %s, %s, %s)",
                          [incident_id, number, redact(text), owner, by, _second(at)])
            return self.followups(incident_id)[number - 1]

    def followups(self, incident_id: int) -> list[Followup]:
        rows = self._rows("SELECT incident_id, number, text, owner, created_by, created_at, done_at, done_by "
                          "FROM followups WHERE incident_id = %s ORDER BY number", [incident_id])
        return [Followup(**{**row, "created_at": row["created_at"].astimezone(UTC),
                            "done_at": row["done_at"].astimezone(UTC) if row["done_at"] else None}) for row in rows]

    def followup_done(self, incident_id: int, number: int, *, by: str, at: datetime) -> Followup | None:
        with self.write():
            changed = self._execute("UPDATE followups SET done_at = %s, done_by = %s "
                                    "WHERE incident_id = %s AND number = %s",
                                    [_second(at), by, incident_id, number])
            found = [item for item in self.followups(incident_id) if item.number == number]
            return found[0] if changed and found else None

    def reminders(self, incident_id: int) -> dict[str, ReminderState]:
        rows = self._rows("SELECT kind, snoozed_until, reminded_for FROM reminders WHERE incident_id = %s",
                          [incident_id])
        return {row["kind"]: ReminderState(incident_id, row["kind"], *(
            row[key].astimezone(UTC) if row[key] else None for key in ("snoozed_until", "reminded_for")))
            for row in rows}

    def set_reminder(self, incident_id: int, kind: str, *, snoozed_until: datetime | None = None,
                     reminded_for: datetime | None = None) -> None:
        self._execute("INSERT INTO reminders (incident_id, kind, snoozed_until, reminded_for) VALUES (%s, %s, %s, %s) "
                      "ON CONFLICT (incident_id, kind) DO UPDATE SET "
                      "snoozed_until = COALESCE(excluded.snoozed_until, reminders.snoozed_until), "
                      "reminded_for = COALESCE(excluded.reminded_for, reminders.reminded_for)",
                      [incident_id, kind, _second(snoozed_until) if snoozed_until else None,
                       _second(reminded_for) if reminded_for else None])

    def resolved_since(self, since: datetime) -> list[Incident]:
        return self._incidents("resolved_at >= %s", [since], order="resolved_at, id")

    # -- deliveries, the outbox, weekly reports ------------------------------------------------

    def queue_work(self, key: str, kind: str, payload: dict[str, Any], now: datetime) -> bool:
        return self._returning("INSERT INTO work (key, kind, payload, created_at) VALUES (%s, %s, %s, %s) "
                               "ON CONFLICT (key) DO NOTHING RETURNING id",
                               [key, kind, Jsonb(json.loads(to_json(payload))), _second(now)]) is not None

    def claim_work(self, now: datetime, lease: timedelta) -> WorkItem | None:
        """As SqliteStore.claim_work, for workers in several processes: SKIP LOCKED, then the lease."""
        rows = self._rows(
            """UPDATE work SET lease_until = %(lease)s, attempts = attempts + 1 WHERE id = (
                   SELECT id FROM work WHERE done_at IS NULL AND (lease_until IS NULL OR lease_until <= %(now)s)
                   ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
               RETURNING id, key, kind, payload, attempts, created_at""", {"now": now, "lease": now + lease})
        if not rows:
            return None
        return WorkItem(**{**rows[0], "created_at": rows[0]["created_at"].astimezone(UTC)})

    def renew_work(self, item_ids: Iterable[int], until: datetime) -> None:
        ids = list(item_ids)
        if ids:
            self._execute("UPDATE work SET lease_until = %s WHERE done_at IS NULL AND id = ANY(%s)", [until, ids])

    def work_done(self, item_id: int, now: datetime) -> None:
        self._execute("UPDATE work SET done_at = %s, lease_until = NULL WHERE id = %s", [now, item_id])

    def work_pending(self) -> int:
        return int(self._one("SELECT COUNT(*) FROM work WHERE done_at IS NULL"))

    def prune_work(self, before: datetime) -> int:
        return self._execute("DELETE FROM work WHERE done_at < %s", [before])

    def enqueue(self, *, kind: str, payload: dict[str, Any], now: datetime, request_id: str | None = None,
                incident_id: int | None = None, channel: str | None = None, user: str | None = None,
                response_url: str | None = None, key: str | None = None) -> int:
        return int(self._returning(
            'INSERT INTO outbox (created_at, request_id, kind, incident_id, channel, "user", response_url, payload, '
            "message_key) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            [_second(now), request_id, kind, incident_id, channel, user, response_url,
             Jsonb(json.loads(to_json(payload))), key]))

    def outbox_keyed(self, key: str) -> int | None:
        found = self._one("SELECT MIN(id) FROM outbox WHERE message_key = %s", [key])
        return int(found) if found is not None else None

    def claim_outbox(self, now: datetime, lease: timedelta) -> OutboxItem | None:
        """As SqliteStore.claim_outbox, for senders in several processes: the row is locked with
        SKIP LOCKED while its lease is set, so two senders never take the same one, and an item
        still waits for the unsent items of its incident and of its request before it."""
        rows = self._rows(
            """WITH next AS (
                   SELECT id, in_flight_since IS NOT NULL AS in_doubt FROM outbox AS o
                   WHERE sent_at IS NULL AND failed_at IS NULL
                     AND (next_at IS NULL OR next_at <= %(now)s)
                     AND (lease_until IS NULL OR lease_until <= %(now)s)
                     AND NOT EXISTS (
                           SELECT 1 FROM outbox AS earlier
                           WHERE earlier.id < o.id AND earlier.sent_at IS NULL AND earlier.failed_at IS NULL
                             AND (earlier.incident_id = o.incident_id OR earlier.request_id = o.request_id))
                   ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
               UPDATE outbox SET lease_until = %(lease)s, in_flight_since = %(now)s FROM next WHERE outbox.id = next.id
               RETURNING outbox.id, kind, request_id, incident_id, channel, "user", response_url, payload, attempts,
                         created_at, next.in_doubt""",
            {"now": now, "lease": now + lease})
        if not rows:
            return None
        row = rows[0]
        return OutboxItem(**{**row, "created_at": row["created_at"].astimezone(UTC)})

    def next_outbox_due(self) -> datetime | None:
        due = self._one("SELECT MIN(COALESCE(next_at, created_at)) FROM outbox "
                        "WHERE sent_at IS NULL AND failed_at IS NULL")
        return due.astimezone(UTC) if due else None

    def outbox_sent(self, item_id: int, now: datetime, *, channel: str | None = None, ts: str | None = None) -> None:
        self._execute("UPDATE outbox SET sent_at = %s, lease_until = NULL, in_flight_since = NULL, sent_channel = %s, "
                      "sent_ts = %s WHERE id = %s", [now, channel, ts, item_id])

    def outbox_sent_message(self, item_id: int) -> tuple[str, str] | None:
        rows = self._rows("SELECT sent_channel, sent_ts FROM outbox WHERE id = %s", [item_id])
        return (rows[0]["sent_channel"], rows[0]["sent_ts"]) if rows and rows[0]["sent_ts"] else None

    def outbox_retry(self, item_id: int, at: datetime, error: str, *, in_doubt: bool = False) -> None:
        in_flight = "in_flight_since" if in_doubt else "NULL"
        self._execute(f"UPDATE outbox SET attempts = attempts + 1, next_at = %s, lease_until = NULL, "
                      f"in_flight_since = {in_flight}, error = %s WHERE id = %s", [at, redact(error), item_id])

    def outbox_failed(self, item_id: int, now: datetime, error: str) -> None:
        self._execute("UPDATE outbox SET failed_at = %s, lease_until = NULL, in_flight_since = NULL, error = %s, "
                      "attempts = attempts + 1 WHERE id = %s", [now, redact(error), item_id])

    def outbox_superseded(self, item: OutboxItem) -> bool:
        same, value = {
            "update": ("incident_id = %s", item.incident_id),
            "home": ('"user" = %s', item.user),
            "update_message": ("payload->>'target' = %s", str(item.payload.get("target"))),
        }[item.kind]
        return self._one(f"SELECT 1 FROM outbox WHERE kind = %s AND {same} AND id > %s "
                         "AND sent_at IS NULL AND failed_at IS NULL LIMIT 1", [item.kind, value, item.id]) is not None

    def prune_outbox(self, before: datetime) -> int:
        return self._execute("DELETE FROM outbox WHERE COALESCE(sent_at, failed_at) < %s", [before])

    def outbox_pending(self) -> int:
        return int(self._one("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL"))

    def claim_report(self, week: str, channel: str, now: datetime, claimed_by: str) -> bool:
        return self._execute("INSERT INTO reports (week, channel, claimed_at, claimed_by) VALUES (%s, %s, %s, %s) "
                             "ON CONFLICT DO NOTHING", [week, channel, now, claimed_by]) == 1

    def report_claimed(self, week: str) -> Report | None:
        return self._report("WHERE week = %s", [week])

    def last_report(self) -> Report | None:
        return self._report("ORDER BY week DESC LIMIT 1", [])

    def _report(self, where: str, params: list[Any]) -> Report | None:
        rows = self._rows(f"SELECT week, channel, claimed_at, claimed_by FROM reports {where}", params)
        return Report(**{**rows[0], "claimed_at": rows[0]["claimed_at"].astimezone(UTC)}) if rows else None

    def check_writable(self, now: datetime) -> None:
        """Raises StoreUnavailable unless a write commits within a second (a read-only replica after a
        failover does not take one)."""
        try:
            with psycopg.connect(self.url, connect_timeout=1, autocommit=True) as conn:
                conn.execute("SET statement_timeout = 1000")
                conn.execute("INSERT INTO heartbeat (id, at) VALUES (1, %s) ON CONFLICT (id) DO UPDATE SET at = %s",
                             [now, now])
        except psycopg.Error as error:
            raise StoreUnavailable(f"{_where(self.url)}: {_first_line(error)}") from error

    # -- alert groups --------------------------------------------------------------------------

    def alert_group(self, source: str, dedup_key: str) -> AlertGroup | None:
        rows = self._rows("SELECT source, dedup_key, incident_id, alerts, updated_at FROM alert_groups "
                          "WHERE source = %s AND dedup_key = %s", [source, dedup_key])
        return AlertGroup(**{**rows[0], "updated_at": rows[0]["updated_at"].astimezone(UTC)}) if rows else None

    def save_alert_group(self, group: AlertGroup) -> None:
        self._execute("INSERT INTO alert_groups (source, dedup_key, incident_id, alerts, updated_at) "
                      "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (source, dedup_key) DO UPDATE SET "
                      "incident_id = excluded.incident_id, alerts = excluded.alerts, updated_at = excluded.updated_at",
                      [group.source, group.dedup_key, group.incident_id,
                       Jsonb(json.loads(to_json(redact_data(group.alerts, default=json_default)))),
                       _second(group.updated_at)])

    # -- moving a history between stores -------------------------------------------------------

    def optimize(self) -> None:
        """VACUUM ANALYZE of the history's tables: the planner's statistics, and the visibility map
        without which /mttr's index-only scans of incidents_durations still visit every row in
        the table (100,000 incidents just copied: about 4x slower until autovacuum comes by)."""
        with self._connection() as conn:
            for table in HISTORY:
                conn.execute(f"VACUUM (ANALYZE) {quoted(table.name)}")

    def rows(self, table: Table, *, after: Any = None, limit: int) -> list[dict[str, Any]]:
        name, key = quoted(table.name), quoted(table.key)
        where, params = ("", []) if after is None else (f"WHERE {key} > %s", [after])
        return [_unstored(table, row) for row in self._rows(
            f"SELECT * FROM {name} {where} ORDER BY {key} LIMIT %s", [*params, limit])]

    def rows_with_keys(self, table: Table, keys: Sequence[Any]) -> list[dict[str, Any]]:
        if not keys:
            return []
        return [_unstored(table, row) for row in self._rows(
            f"SELECT * FROM {quoted(table.name)} WHERE {quoted(table.key)} = ANY(%s)", [list(keys)])]

    def insert_rows(self, table: Table, rows: Sequence[dict[str, Any]]) -> int:
        """INSERT … ON CONFLICT DO NOTHING in one unit of work (incident numbers are taken under its
        lock); a serial key's sequence is then moved past the highest id, never back."""
        if not rows:
            return 0
        columns = [column for column in rows[0] if column not in table.derived]
        values = [[Jsonb(row[column]) if column in table.json and row[column] is not None else row[column]
                   for column in columns] for row in rows]
        name, key = quoted(table.name), quoted(table.key)
        with self.write(), self._connection() as conn:
            cursor = conn.cursor()
            cursor.executemany(f"INSERT INTO {name} ({', '.join(map(quoted, columns))}) "
                               f"VALUES ({', '.join(['%s'] * len(columns))}) ON CONFLICT DO NOTHING", values)
            added = cursor.rowcount
            row = conn.execute("SELECT pg_get_serial_sequence(%s, %s)", [table.name, table.key]).fetchone()
            if row and row[0]:
                conn.execute(f"SELECT setval(%s, GREATEST((SELECT MAX({key}) FROM {name}), "
                             f"(SELECT last_value FROM {row[0]})))", [row[0]])
        return added


def _unstored(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    """A row as `Store.rows` gives it: moments in UTC, no derived column (jsonb is decoded by psycopg)."""
    return {column: value.astimezone(UTC) if column in table.moments and value is not None else value
            for column, value in row.items() if column not in table.derived}


def _stored(fields: dict[str, Any]) -> dict[str, Any]:
    return {key: _second(value) if isinstance(value, datetime) else value for key, value in redacted(fields).items()}


def _second(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(microsecond=0)




def _text(column: str) -> str:
    """A column as export shows it: times as ISO 8601 UTC text to the second, like SQLite's."""
    if column in _TIMES:
        return f"""to_char({column} AT TIME ZONE 'UTC', {_ISO})"""
    return column


def _csv_cell(value: str) -> str:
    escaped = f"""replace({value}, '"', '""')"""
    return (f"""CASE WHEN {value} IS NULL THEN '' WHEN {value} ~ '^[=+@\\t\\r-]' THEN '"''' || {escaped} || '"' """
            f"""WHEN {value} ~ '[",\\r\\n]' THEN '"' || {escaped} || '"' ELSE {value} END""")


def _where(url: str) -> str:
    """The server and database of `url`, without its password."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    return f"PostgreSQL {info.get('host') or 'localhost'}:{info.get('port') or 5432}/{info.get('dbname') or ''}"


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
