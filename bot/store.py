"""SQLite through sqlite-utils: incidents, their timeline, deliveries seen, the outbox, migrations.

Concurrency: one connection per thread, WAL, a busy timeout, and every read-then-write unit in a
`BEGIN IMMEDIATE` transaction (`Store.write()`): with threads, deferred read-then-write
transactions fail with "database is locked" even under a busy timeout, immediate ones wait their
turn. sqlite-utils nests its own writes inside ours as savepoints.

The file stays friendly to outside tools: plain columns, times as ISO 8601 UTC text.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from operator import itemgetter
from pathlib import Path
from typing import Any

import sqlite_utils
from sqlite_utils.migrations import Migrations

from bot.redact import redact, redact_data
from bot.serialize import json_default, to_json
from bot.times import from_iso, to_iso

BUSY_TIMEOUT_MS = 15_000

OPEN, ACKNOWLEDGED, RESOLVED = "open", "acknowledged", "resolved"
SEVERITIES = (1, 2, 3, 4)     # SEV1 is the worst

migrations = Migrations("oncall-bot")


@migrations(name="0001_incidents_timeline_outbox")
def _initial_schema(db: sqlite_utils.Database) -> None:
    db["incidents"].create(
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
    db["incidents"].create_index(["status"])
    # Covers the MTTR query, so a window of any size is read from the index alone.
    db["incidents"].create_index(["resolved_at", "started_at", "acknowledged_at", "opened_at", "severity", "service"],
                                 index_name="incidents_resolution")
    db["incidents"].create_index(["opened_at"])
    db["events"].create(
        {"id": int, "incident_id": int, "at": str, "user": str, "kind": str, "text": str, "data": str},
        pk="id",
        not_null={"incident_id", "at", "kind"},
        foreign_keys=[("incident_id", "incidents", "id")],
    )
    db["events"].create_index(["incident_id"])
    db["deliveries"].create({"key": str, "received_at": str}, pk="key")
    db["deliveries"].create_index(["received_at"])
    db["outbox"].create(
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
    db["heartbeat"].create({"id": int, "at": str}, pk="id")


@migrations(name="0002_incident_cause_and_weekly_reports")
def _cause_and_reports(db: sqlite_utils.Database) -> None:
    db["incidents"].add_column("cause", str)
    db["reports"].create(
        {"week": str, "channel": str, "claimed_at": str, "claimed_by": str, "data": str},
        pk="week",
        not_null={"claimed_at"},
    )


@migrations(name="0003_outbox_remembers_where_messages_went")
def _sent_message_ids(db: sqlite_utils.Database) -> None:
    # A message updated in place later (a command's progress) is found by the ts Slack gave it.
    db["outbox"].add_column("sent_channel", str)
    db["outbox"].add_column("sent_ts", str)


_SECONDS = "CAST(round((julianday({end}) - julianday({start})) * 86400) AS INTEGER)"
_DURATIONS = (f"time_to_resolve = {_SECONDS.format(start='started_at', end='resolved_at')}, "
              f"time_to_acknowledge = {_SECONDS.format(start='opened_at', end='acknowledged_at')}")


@migrations(name="0004_incident_durations")
def _durations(db: sqlite_utils.Database) -> None:
    # Kept beside the times they come from (the store sets them on every write), so /mttr reads
    # numbers from one covering index per severity instead of parsing two dates per row.
    db["incidents"].add_column("time_to_resolve", int)
    db["incidents"].add_column("time_to_acknowledge", int)
    db.execute(f"UPDATE incidents SET {_DURATIONS}")
    db.execute("DROP INDEX incidents_resolution")
    db["incidents"].create_index(["resolved_at"])
    db["incidents"].create_index(["severity", "resolved_at", "time_to_resolve", "time_to_acknowledge", "service"],
                                 index_name="incidents_durations")


@dataclass(frozen=True)
class Incident:
    id: int
    title: str
    severity: int
    service: str | None
    status: str
    opened_by: str
    opened_at: datetime
    started_at: datetime
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    resolved_by: str | None
    resolved_at: datetime | None
    resolution: str | None
    channel: str | None
    announce_channel: str | None
    thread_ts: str | None
    reopened: int
    cause: str | None = None        # what caused it, e.g. "deploy:<sha>"

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Incident:
        """The incident of a row; the stored durations are left out (they follow from the times)."""
        fields = {key: row[key] for key in cls.__dataclass_fields__}
        for key in ("opened_at", "started_at", "acknowledged_at", "resolved_at"):
            fields[key] = from_iso(row[key])
        return cls(**fields)

    @property
    def is_open(self) -> bool:
        return self.status != RESOLVED

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, datetime):
                data[key] = to_iso(value)
        return data


@dataclass(frozen=True)
class Event:
    id: int
    incident_id: int
    at: datetime
    user: str | None
    kind: str
    text: str | None
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "at": to_iso(self.at)}


@dataclass(frozen=True)
class Resolutions:
    """Incidents of one severity resolved in a window, column by column (one tuple each, in the
    same order): cheap to build for 100,000 of them, and what the statistics read."""

    severity: int
    to_resolve: tuple[int, ...]                   # seconds, resolved - started
    to_acknowledge: tuple[int | None, ...]        # seconds, acknowledged - opened; None: never acknowledged
    slowest: tuple[tuple[int, int], ...] = ()     # (seconds to resolve, id), the longest first, as many as asked


@dataclass(frozen=True)
class OutboxItem:
    id: int
    kind: str
    request_id: str | None
    incident_id: int | None
    channel: str | None
    user: str | None
    response_url: str | None
    payload: dict[str, Any]
    attempts: int
    created_at: datetime


class Store:
    def __init__(self, path: Path | str):
        self.path = str(path)
        self._local = threading.local()
        with self._transaction() as db:
            migrations.apply(db)

    @property
    def _db(self) -> sqlite_utils.Database:
        """This thread's connection, in autocommit mode: each read sees the latest commit."""
        db = getattr(self._local, "db", None)
        if db is None:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            db = self._local.db = sqlite_utils.Database(conn)
        return db

    @contextmanager
    def write(self) -> Iterator[None]:
        """One unit of work: what is read in it is current and nobody writes until it ends
        (re-entrant within a thread, so operations nest in a caller's unit)."""
        with self._transaction():
            yield

    @contextmanager
    def _transaction(self) -> Iterator[sqlite_utils.Database]:
        """One immediate transaction; re-entrant within a thread."""
        db = self._db
        if db.conn.in_transaction:
            yield db
            return
        db.conn.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.conn.execute("ROLLBACK")
            raise
        db.conn.execute("COMMIT")

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # -- incidents -------------------------------------------------------------------------

    def incident(self, incident_id: int) -> Incident | None:
        rows = list(self._db.query("SELECT * FROM incidents WHERE id = ?", [incident_id]))
        return Incident.from_row(rows[0]) if rows else None

    def _incidents(self, where: str, params: list[Any], *, order: str = "id",
                   limit: int | None = None) -> list[Incident]:
        sql = f"SELECT * FROM incidents WHERE {where} ORDER BY {order}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [Incident.from_row(row) for row in self._db.query(sql, params)]

    def open_incidents(self, channel: str | None = None, *, service: str | None = None,
                       severity: int | None = None) -> list[Incident]:
        """Every incident not resolved, oldest first: of `channel` (where it was opened or announced),
        of `service`, of `severity`, when given."""
        where, params = "status != ?", [RESOLVED]
        if channel is not None:
            where, params = where + " AND (channel = ? OR announce_channel = ?)", [*params, channel, channel]
        filters, more = _filters(service, severity)
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

    def incidents_opened_since(self, since: datetime | None) -> Iterator[Incident]:
        """Every incident opened since `since` (all when None), by number, read as they are consumed."""
        where, params = ("opened_at >= ?", [to_iso(since)]) if since else ("1", [])
        for row in self._db.query(f"SELECT * FROM incidents WHERE {where} ORDER BY id", params):
            yield Incident.from_row(row)

    # -- what /mttr and the weekly report count --------------------------------------------------

    def resolutions(self, start: datetime, end: datetime, *, service: str | None = None,
                    severity: int | None = None, slowest: int = 0) -> list[Resolutions]:
        """The incidents resolved in [start, end), one group per severity (ascending), as columns,
        with the ids of each group's `slowest` longest to resolve.

        Only resolved incidents have resolved_at (reopening clears it), so the range is the whole
        filter, and each severity is one range of the durations' covering index: no row of the
        table itself is read, and no id unless asked for.
        """
        filters, params = _filters(service, None)
        groups = []
        for level in SEVERITIES if severity is None else (severity,):
            where = f"WHERE severity = ? AND resolved_at >= ? AND resolved_at < ?{filters}"
            values = [level, to_iso(start), to_iso(end), *params]
            rows = self._db.execute(f"SELECT time_to_resolve, time_to_acknowledge FROM incidents {where}",
                                    values).fetchall()
            if not rows:
                continue
            longest = self._db.execute(
                f"SELECT time_to_resolve, id FROM incidents {where} ORDER BY time_to_resolve DESC LIMIT ?",
                [*values, slowest]).fetchall() if slowest else []
            groups.append(Resolutions(level, tuple(map(itemgetter(0), rows)), tuple(map(itemgetter(1), rows)),
                                      tuple(longest)))
        return groups

    def opened_count(self, start: datetime, end: datetime, *, service: str | None = None,
                     severity: int | None = None) -> int:
        filters, params = _filters(service, severity)
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

    def earlier_signatures(self, signatures: Iterable[str], excluding: int | None) -> list[tuple[int, str]]:
        """(incident, signature) for each of `signatures` recorded by /triage or /logs in another
        incident's timeline, newest incident first."""
        wanted = list(signatures)
        if not wanted:
            return []
        marks = ",".join("?" * len(wanted))
        this = -1 if excluding is None else excluding
        return self._db.execute(
            f"""SELECT DISTINCT e.incident_id, s.value FROM events AS e, json_each(e.data, '$.signatures') AS s
                WHERE e.kind = 'triage' AND e.incident_id != ? AND s.value IN ({marks})
                UNION
                SELECT DISTINCT e.incident_id, json_extract(l.value, '$.signature') FROM events AS e,
                       json_each(e.data, '$.events') AS l
                WHERE e.kind = 'logs' AND e.incident_id != ? AND json_extract(l.value, '$.signature') IN ({marks})
                ORDER BY 1 DESC""",
            [this, *wanted, this, *wanted]).fetchall()

    def insert_incident(self, **fields: Any) -> int:
        with self._transaction() as db:
            incident_id = db["incidents"].insert(_stored(fields)).last_pk
            db.execute(f"UPDATE incidents SET {_DURATIONS} WHERE id = ?", [incident_id])
            return incident_id

    def update_incident(self, incident_id: int, **fields: Any) -> None:
        with self._transaction() as db:
            db["incidents"].update(incident_id, _stored(fields))
            db.execute(f"UPDATE incidents SET {_DURATIONS} WHERE id = ?", [incident_id])

    # -- timeline --------------------------------------------------------------------------

    def add_event(self, incident_id: int, *, at: datetime, user: str | None, kind: str,
                  text: str | None = None, data: dict[str, Any] | None = None) -> None:
        with self._transaction() as db:
            db["events"].insert({
                "incident_id": incident_id, "at": to_iso(at), "user": user, "kind": kind,
                "text": redact(text) if text else text,
                "data": to_json(redact_data(data or {}, default=json_default)),
            })

    def events(self, incident_id: int) -> list[Event]:
        rows = self._db.query("SELECT * FROM events WHERE incident_id = ? ORDER BY at, id", [incident_id])
        return [Event(**{**row, "at": from_iso(row["at"]), "data": json.loads(row["data"] or "{}")})
                for row in rows]

    # -- deliveries (dedupe of redelivered requests) -----------------------------------------

    def claim_delivery(self, key: str, now: datetime) -> bool:
        """True the first time `key` is seen; false for a redelivery of the same work."""
        with self._transaction() as db:
            cursor = db.execute("INSERT OR IGNORE INTO deliveries (key, received_at) VALUES (?, ?)",
                                [key, to_iso(now)])
            db.execute("DELETE FROM deliveries WHERE received_at < ?", [to_iso(now - timedelta(days=1))])
            return cursor.rowcount == 1

    # -- outbox ----------------------------------------------------------------------------

    def enqueue(self, *, kind: str, payload: dict[str, Any], now: datetime, request_id: str | None = None,
                incident_id: int | None = None, channel: str | None = None, user: str | None = None,
                response_url: str | None = None) -> int:
        """Queue one item for Slack; returns its id."""
        with self._transaction() as db:
            return db["outbox"].insert({
                "created_at": to_iso(now), "request_id": request_id, "kind": kind,
                "incident_id": incident_id, "channel": channel, "user": user,
                "response_url": response_url, "payload": to_json(payload),
            }).last_pk

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
        with self._transaction() as db:
            rows = list(db.query(
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
            ))
            if not rows:
                return None
            row = rows[0]
            db.execute("UPDATE outbox SET lease_until = ? WHERE id = ?", [to_iso(now + lease), row["id"]])
        return OutboxItem(
            id=row["id"], kind=row["kind"], request_id=row["request_id"], incident_id=row["incident_id"],
            channel=row["channel"], user=row["user"], response_url=row["response_url"],
            payload=json.loads(row["payload"]), attempts=row["attempts"], created_at=from_iso(row["created_at"]),
        )

    def next_outbox_due(self) -> datetime | None:
        rows = list(self._db.query(
            "SELECT MIN(COALESCE(next_at, created_at)) AS due FROM outbox "
            "WHERE sent_at IS NULL AND failed_at IS NULL"))
        return from_iso(rows[0]["due"]) if rows and rows[0]["due"] else None

    def outbox_sent(self, item_id: int, now: datetime, *, channel: str | None = None, ts: str | None = None) -> None:
        self._db.execute(
            "UPDATE outbox SET sent_at = ?, lease_until = NULL, sent_channel = ?, sent_ts = ? WHERE id = ?",
            [to_iso(now), channel, ts, item_id])

    def outbox_sent_message(self, item_id: int) -> tuple[str, str] | None:
        """Where an outbox message went (channel, ts), once Slack has taken it."""
        row = self._db.execute("SELECT sent_channel, sent_ts FROM outbox WHERE id = ?", [item_id]).fetchone()
        return (row[0], row[1]) if row and row[1] else None

    def outbox_retry(self, item_id: int, at: datetime, error: str) -> None:
        self._db.execute(
            "UPDATE outbox SET attempts = attempts + 1, next_at = ?, lease_until = NULL, error = ? WHERE id = ?",
            [to_iso(at), error, item_id])

    def outbox_failed(self, item_id: int, now: datetime, error: str) -> None:
        self._db.execute(
            "UPDATE outbox SET failed_at = ?, lease_until = NULL, error = ?, attempts = attempts + 1 WHERE id = ?",
            [to_iso(now), error, item_id])

    def outbox_superseded(self, item: OutboxItem) -> bool:
        """A view that a newer one, queued behind it, replaces need not be sent: an incident's
        announcement (`update`, per incident), a user's App Home (`home`, per user), a message
        updated in place (`update_message`, per message)."""
        same, value = {
            "update": ("incident_id = ?", item.incident_id),
            "home": ("user = ?", item.user),
            "update_message": ("json_extract(payload, '$.target') = ?", item.payload.get("target")),
        }[item.kind]
        rows = list(self._db.query(
            f"SELECT 1 FROM outbox WHERE kind = ? AND {same} AND id > ? "
            "AND sent_at IS NULL AND failed_at IS NULL LIMIT 1",
            [item.kind, value, item.id]))
        return bool(rows)

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

    def report_claimed(self, week: str) -> dict[str, Any] | None:
        rows = list(self._db.query("SELECT * FROM reports WHERE week = ?", [week]))
        return rows[0] if rows else None

    def last_report(self) -> dict[str, Any] | None:
        rows = list(self._db.query("SELECT * FROM reports ORDER BY week DESC LIMIT 1"))
        return rows[0] if rows else None

    # -- health ----------------------------------------------------------------------------

    def check_writable(self, now: datetime) -> None:
        """Raises sqlite3.Error unless a write commits within a second."""
        conn = sqlite3.connect(self.path, timeout=1, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT OR REPLACE INTO heartbeat (id, at) VALUES (1, ?)", [to_iso(now)])
            conn.execute("COMMIT")
        finally:
            conn.close()


def _filters(service: str | None, severity: int | None) -> tuple[str, list[Any]]:
    sql, params = "", []
    if service is not None:
        sql += " AND service = ?"
        params.append(service)
    if severity is not None:
        sql += " AND severity = ?"
        params.append(severity)
    return sql, params


def _stored(fields: dict[str, Any]) -> dict[str, Any]:
    return {key: to_iso(value) if isinstance(value, datetime) else value for key, value in fields.items()}
