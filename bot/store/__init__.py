"""The store: where incidents, their timeline and the messages to Slack are kept, behind named
operations with typed results (`Store`), so features never see SQL and the bot runs the same on
either backend:

    SqliteStore     a file (the default; console, `run` and a one-machine bot need no server)
    PostgresStore   a PostgreSQL database that several replicas of the bot share

`open_store(location)` picks one: a `postgresql://` (or `postgres://`) URL, or a path (or
`sqlite:///path`). Both keep times to the second in UTC, redact the text people typed before it is
stored, and serialise every read-then-write unit (`write()`).

Error tree:

    StoreUnavailable     the database cannot be reached or will not take a write (a restart, a
                         failover, a full disk); the command is answered so, and retried by Slack
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from bot.redact import redact
from bot.times import from_iso, to_iso

OPEN, ACKNOWLEDGED, RESOLVED = "open", "acknowledged", "resolved"
SEVERITIES = (1, 2, 3, 4)     # SEV1 is the worst


class StoreUnavailable(Exception):
    """The database cannot be reached, or does not take a write, right now."""


def redacted(fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` with their text redacted: what people typed (titles, notes) is stored without its secrets."""
    return {key: redact(value) if isinstance(value, str) else value for key, value in fields.items()}


INCIDENT_MOMENTS = ("opened_at", "started_at", "acknowledged_at", "resolved_at", "postmortem_at", "detected_at",
                    "mitigated_at", "recovered_at")

# What `oncall-bot export` gives of an incident, and the columns it comes from.
EXPORT_COLUMNS = (
    "id", "title", "severity", "service", "status", "cause",
    "opened_by", "opened_at", "started_at", "acknowledged_by", "acknowledged_at",
    "resolved_by", "resolved_at", "resolution", "reopened",
    "time_to_acknowledge_seconds", "time_to_resolve_seconds", "announce_channel", "thread_ts",
    "detected", "mitigated", "recovered", "source", "dedup_key", "lead", "comms", "postmortem_at",
)
# Each exported name with the column it comes from.
EXPORTED = tuple((name, {"time_to_acknowledge_seconds": "time_to_acknowledge",
                         "time_to_resolve_seconds": "time_to_resolve", "detected": "detected_at",
                         "mitigated": "mitigated_at", "recovered": "recovered_at"}.get(name, name))
                 for name in EXPORT_COLUMNS)
# Exported columns whose text came from people or alert senders (the others are numbers, times, ids
# and states the bot wrote): a CSV cell of theirs is kept from running as a formula.
TYPED_BY_PEOPLE = frozenset({"title", "service", "cause", "resolution", "opened_by", "acknowledged_by",
                             "resolved_by", "source", "dedup_key", "lead", "comms"})


def quoted(column: str) -> str:
    """A column named by our own code, quoted (`user` is a keyword)."""
    if not column.isidentifier():
        raise ValueError(f"{column!r} is not a column name")
    return f'"{column}"'


def incident_filters(service: str | None, severity: int | None, mark: str) -> tuple[str, list[Any]]:
    """` AND …` conditions on an incident's service and severity (those given), with `mark` as the
    parameter placeholder of the store's driver."""
    sql, params = "", list[Any]()
    if service is not None:
        sql += f" AND service = {mark}"
        params.append(service)
    if severity is not None:
        sql += f" AND severity = {mark}"
        params.append(severity)
    return sql, params
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
    source: str | None = None       # what opened it: "alertmanager:prom" (kind:source); None: a person
    dedup_key: str | None = None    # the alert group it was opened for (Alertmanager's groupKey, …)
    verdict: str | None = None      # the last /triage's top verdict about it, shown on its card
    lead: str | None = None         # the incident commander (a Slack user id)
    comms: str | None = None        # who keeps the stakeholders informed (a Slack user id)
    postmortem_at: datetime | None = None   # when its postmortem was written
    detected_at: datetime | None = None     # an alert's start, or the service's first error in its logs
    mitigated_at: datetime | None = None    # a rollback or revert seen in git, or /incident mitigate
    recovered_at: datetime | None = None    # watched after the fix: errors back to their level, probes ok

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Incident:
        """The incident of a row (times as ISO text or as datetimes); the stored durations are left
        out (they follow from the times)."""
        fields = {key: row[key] for key in cls.__dataclass_fields__}
        for key in INCIDENT_MOMENTS:
            value = row[key]
            fields[key] = value.astimezone(UTC) if isinstance(value, datetime) else from_iso(value)
        return cls(**fields)

    def time_to_resolve(self, now: datetime) -> float:
        """Seconds from the start to the resolution, or to `now` while it is not resolved."""
        return ((self.resolved_at or now) - self.started_at).total_seconds()

    @property
    def time_to_acknowledge(self) -> float | None:
        """Seconds from the opening to the acknowledgement; None until acknowledged."""
        return (self.acknowledged_at - self.opened_at).total_seconds() if self.acknowledged_at else None

    @property
    def time_to_detect(self) -> float | None:
        """Seconds from the start to the detection; None until detected."""
        return (self.detected_at - self.started_at).total_seconds() if self.detected_at else None

    @property
    def time_to_mitigate(self) -> float | None:
        """Seconds from the start to the mitigation; None until mitigated."""
        return (self.mitigated_at - self.started_at).total_seconds() if self.mitigated_at else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, datetime):
                data[key] = to_iso(value)
        return data


# The bot's own timeline entries: what a command found, one line with its details in the data
# (ARCHITECTURE.md: event kinds), written through Context.record; and whatever the bot did as
# itself (BOT_USER: an alert's incident, its duties). Every other entry is a person's.
BOT_KINDS = frozenset({"deploys", "logs", "probe", "triage"})
BOT_USER = "oncall-bot"     # who the bot's own doings are by (not a Slack user id)


@dataclass(frozen=True)
class Event:
    id: int
    incident_id: int
    at: datetime
    user: str | None
    kind: str
    text: str | None
    data: dict[str, Any]

    @property
    def by_bot(self) -> bool:
        """The bot's entry (a finding, or nobody's), not something a person did or wrote."""
        return self.user in (None, BOT_USER) or self.kind in BOT_KINDS

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "at": to_iso(self.at)}


@dataclass(frozen=True)
class Followup:
    """An action item of an incident, numbered 1, 2, … within it."""

    incident_id: int
    number: int
    text: str
    owner: str | None
    created_by: str | None
    created_at: datetime
    done_at: datetime | None = None
    done_by: str | None = None

    @property
    def done(self) -> bool:
        return self.done_at is not None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "created_at": to_iso(self.created_at), "done_at": to_iso(self.done_at),
                "done": self.done}


@dataclass(frozen=True)
class ReminderState:
    """What the store remembers of one kind of reminder of one incident: snoozed until when, and
    the moment it was last due when it was posted (so each due moment is reminded once)."""

    incident_id: int
    kind: str
    snoozed_until: datetime | None = None
    reminded_for: datetime | None = None


@dataclass(frozen=True)
class Resolutions:
    """Incidents of one severity resolved in a window, column by column (one tuple each, in the
    same order): cheap to build for 100,000 of them, and what the statistics read."""

    severity: int
    to_resolve: tuple[int, ...]                   # seconds, resolved - started
    to_acknowledge: tuple[int | None, ...]        # seconds, acknowledged - opened; None: never acknowledged
    slowest: tuple[tuple[int, int], ...] = ()     # (seconds to resolve, id), the longest first, as many as asked
    to_detect: tuple[int | None, ...] = ()        # seconds, detected - started; None: no detection recorded
    to_mitigate: tuple[int | None, ...] = ()      # seconds, mitigated - started; None: no mitigation recorded


@dataclass(frozen=True)
class WatchCheck:
    """One minute of watching a fix: the service's errors in the minute before `at` and its probes at `at`."""

    incident_id: int
    at: datetime                   # the minute's end, to the minute
    errors: int | None             # errors (or worse) logged in the minute; None: no log could be read
    errors_before: int | None      # errors in the hour before the incident started: its usual level
    probes_failing: int | None     # probes not ok; None: the service has none
    failing: str | None = None     # which ones, and how ("db down, cache degraded")


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
    # An earlier attempt may have reached Slack: its outcome is unknown (a timeout, a connection
    # lost after the request went out, a sender that died while its lease ran), so a message it
    # posts is looked for before it is posted again.
    in_doubt: bool = False


@dataclass(frozen=True)
class Table:
    """A table as `oncall-bot db copy` moves it between stores, whatever their backends: rows by
    key, values as Python values (moments as UTC datetimes, JSON as what it decodes to)."""

    name: str
    key: str                           # the primary key: rows are read in its order, and kept under it
    identity: tuple[str, ...]          # columns that never change once written: two rows under one key
                                       # that differ in them are two histories, not one row seen twice
    moments: frozenset[str] = frozenset()
    json: frozenset[str] = frozenset()
    derived: frozenset[str] = frozenset()   # computed by each store from the other columns: not copied


# What a store holds, in the order a copy moves it (an event names its incident). Not in it: the
# schema's bookkeeping, and `heartbeat`, the row /healthz rewrites on every check.
HISTORY = (
    Table("incidents", "id", ("title", "opened_by", "opened_at"),
          moments=frozenset(INCIDENT_MOMENTS),
          derived=frozenset({"time_to_resolve", "time_to_acknowledge", "time_to_detect", "time_to_mitigate"})),
    Table("events", "id", ("incident_id", "at", "user", "kind", "text", "data"), moments=frozenset({"at"}),
          json=frozenset({"data"})),
    Table("followups", "id", ("incident_id", "number", "created_at"), moments=frozenset({"created_at", "done_at"})),
    Table("reminders", "id", ("incident_id", "kind"), moments=frozenset({"snoozed_until", "reminded_for"})),
    Table("watch_checks", "id", ("incident_id", "at"), moments=frozenset({"at"})),
    Table("reports", "week", ("week",), moments=frozenset({"claimed_at"})),
    Table("outbox", "id", ("created_at", "kind", "request_id", "payload"),
          moments=frozenset({"created_at", "next_at", "lease_until", "sent_at", "failed_at", "in_flight_since"}),
          json=frozenset({"payload"})),
    Table("work", "id", ("key", "kind", "created_at"), moments=frozenset({"created_at", "lease_until", "done_at"}),
          json=frozenset({"payload"})),
    Table("alert_groups", "id", ("source", "dedup_key"), moments=frozenset({"updated_at"}),
          json=frozenset({"alerts"})),
)
NOT_HISTORY = ("heartbeat",)


@dataclass(frozen=True)
class WorkItem:
    """Work queued for a worker: a Slack request taken, or something a job found due."""

    id: int
    key: str                    # unique: the same request delivered again, or found due again, has it
    kind: str                   # what `payload` is (the frame's kinds: command, button, home, duty)
    payload: dict[str, Any]
    attempts: int               # this claim included
    created_at: datetime


@dataclass(frozen=True)
class AlertGroup:
    """The alerts one source notifies together (Alertmanager's group), under its dedup key: the
    incident they opened last, and each alert as last notified."""

    source: str                             # "alertmanager:prom": the source's kind and name
    dedup_key: str
    incident_id: int | None
    alerts: dict[str, dict[str, Any]]       # fingerprint -> the alert (JSON values)
    updated_at: datetime


@dataclass(frozen=True)
class Report:
    """A week whose report was claimed: where it went, when, and by which process."""

    week: str
    channel: str | None
    claimed_at: datetime
    claimed_by: str | None


class Store(Protocol):
    """What features and the frame may ask of the store; every backend answers all of it."""

    @property
    def local_dir(self) -> Path:
        """A directory of this machine for what the bot caches beside its data (git mirrors)."""

    @property
    def location(self) -> str:
        """Where the data is, said for people: the file, or the server and database (no password)."""

    def migrate(self) -> list[str]:
        """Applies the schema's migrations this database lacks (once, however many processes start
        at once); returns their names, none when the schema was current."""

    def write(self) -> AbstractContextManager[None]:
        """One unit of work: what is read in it is current, and nobody writes until it ends
        (re-entrant, so operations nest in a caller's unit)."""

    def atomic(self) -> AbstractContextManager[None]:
        """Everything written inside (units of work included) commits together, or nothing does;
        the write lock is taken at the first write."""

    def close(self) -> None: ...

    # incidents
    def incident(self, incident_id: int) -> Incident | None: ...
    def open_incidents(self, channel: str | None = None, *, service: str | None = None,
                       severity: int | None = None) -> list[Incident]: ...
    def recent_incidents(self, limit: int) -> list[Incident]: ...
    def last_resolved(self, channel: str | None = None, *, limit: int = 1) -> list[Incident]: ...
    def open_twin(self, user: str, title: str, since: datetime) -> Incident | None: ...
    def insert_incident(self, **fields: Any) -> int: ...
    def update_incident(self, incident_id: int, **fields: Any) -> None: ...
    def export(self, since: datetime | None, output_format: str) -> Iterator[list[str]]: ...
    def watched(self, since: datetime) -> list[Incident]:
        """The incidents mitigated or resolved since `since`: those whose fix may still be watched."""

    # what /mttr, the weekly report and /triage count
    def resolutions(self, start: datetime, end: datetime, *, service: str | None = None,
                    severity: int | None = None, slowest: int = 0) -> list[Resolutions]: ...
    def opened_count(self, start: datetime, end: datetime, *, service: str | None = None,
                     severity: int | None = None) -> int: ...
    def resolved_by_service(self, start: datetime, end: datetime) -> list[tuple[str | None, int]]: ...
    def caused_by_deploys(self, start: datetime, end: datetime) -> list[Incident]: ...
    def earlier_signatures(self, signatures: Iterable[str], service: str,
                           excluding: int | None) -> list[tuple[int, str]]: ...

    # the timeline
    def add_event(self, incident_id: int, *, at: datetime, user: str | None, kind: str,
                  text: str | None = None, data: dict[str, Any] | None = None) -> None: ...
    def events(self, incident_id: int) -> list[Event]: ...
    def last_event_at(self, incident_id: int, kinds: Iterable[str]) -> datetime | None:
        """When the latest event of one of `kinds` was recorded in the incident's timeline."""

    # coordination: follow-ups, reminders, postmortems
    def add_followup(self, incident_id: int, *, text: str, owner: str | None, by: str, at: datetime) -> Followup:
        """A new follow-up, numbered after the incident's others."""
    def followups(self, incident_id: int) -> list[Followup]: ...
    def followup_done(self, incident_id: int, number: int, *, by: str, at: datetime) -> Followup | None:
        """Marks follow-up `number` done; None when the incident has no such follow-up."""
    def reminders(self, incident_id: int) -> dict[str, ReminderState]: ...
    def set_reminder(self, incident_id: int, kind: str, *, snoozed_until: datetime | None = None,
                     reminded_for: datetime | None = None) -> None:
        """Records a snooze or a reminder posted (whichever is given; the other is kept)."""
    def resolved_since(self, since: datetime) -> list[Incident]:
        """The incidents resolved at or after `since`, oldest resolution first."""

    # watching a fix
    def add_watch_check(self, check: WatchCheck) -> bool:
        """Keeps `check` unless the incident has one at that minute; whether it was kept."""
    def watch_checks(self, incident_id: int) -> list[WatchCheck]: ...

    # the work queue
    def queue_work(self, key: str, kind: str, payload: dict[str, Any], now: datetime) -> bool:
        """Queues work under `key`; false when `key` was queued before (a redelivery)."""
    def claim_work(self, now: datetime, lease: timedelta) -> WorkItem | None: ...
    def renew_work(self, item_ids: Iterable[int], until: datetime) -> None: ...
    def work_done(self, item_id: int, now: datetime) -> None: ...
    def work_pending(self) -> int: ...
    def prune_work(self, before: datetime) -> int: ...

    # the outbox, weekly reports, health
    def enqueue(self, *, kind: str, payload: dict[str, Any], now: datetime, request_id: str | None = None,
                incident_id: int | None = None, channel: str | None = None, user: str | None = None,
                response_url: str | None = None, key: str | None = None) -> int:
        """Queues one item; `key` names a message later replies update in place (`outbox_keyed`)."""
    def outbox_keyed(self, key: str) -> int | None:
        """The outbox id of the message queued under `key`, if any."""
    def claim_outbox(self, now: datetime, lease: timedelta) -> OutboxItem | None:
        """The next item due, leased to the caller and marked in flight until its outcome is recorded
        (sent, retry, failed): an item claimed while still so marked is `in_doubt`."""
    def next_outbox_due(self) -> datetime | None: ...
    def outbox_sent(self, item_id: int, now: datetime, *, channel: str | None = None,
                    ts: str | None = None) -> None: ...
    def outbox_sent_message(self, item_id: int) -> tuple[str, str] | None: ...
    def outbox_retry(self, item_id: int, at: datetime, error: str, *, in_doubt: bool = False) -> None:
        """Try again at `at`; `in_doubt`: this attempt may have reached Slack (the mark stays)."""
    def outbox_failed(self, item_id: int, now: datetime, error: str) -> None: ...
    def outbox_superseded(self, item: OutboxItem) -> bool: ...
    def prune_outbox(self, before: datetime) -> int: ...
    def outbox_pending(self) -> int: ...
    def claim_report(self, week: str, channel: str, now: datetime, claimed_by: str) -> bool: ...
    def report_claimed(self, week: str) -> Report | None: ...
    def last_report(self) -> Report | None: ...
    def check_writable(self, now: datetime) -> None:
        """Raises StoreUnavailable unless a write commits within a second."""

    # alert groups (commands/alerts)
    def alert_group(self, source: str, dedup_key: str) -> AlertGroup | None: ...
    def save_alert_group(self, group: AlertGroup) -> None:
        """Writes `group` under its source and dedup key (one row each: a second is an update)."""

    # moving a history between stores (bot/store/copy.py)
    def rows(self, table: Table, *, after: Any = None, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` rows of `table` with keys past `after` (from the first when None), in key
        order, without the derived columns."""

    def rows_with_keys(self, table: Table, keys: Sequence[Any]) -> list[dict[str, Any]]:
        """The rows of `table` under `keys` that it holds, without the derived columns."""

    def insert_rows(self, table: Table, rows: Sequence[dict[str, Any]]) -> int:
        """Adds the `rows` (as `rows` gives them) whose keys `table` does not hold yet, as they are
        (their text was redacted when first stored); returns how many. Ids are kept, and the ids the
        store hands out next come after them."""

    def optimize(self) -> None:
        """After many rows were added at once: what the database needs to read them as fast as
        rows written one by one (PostgreSQL: statistics and the visibility map)."""


def open_store(location: str | Path, *, migrate: bool = True) -> Store:
    """The store at `location`: a PostgreSQL URL, or an SQLite file's path (or `sqlite:///path`);
    its schema brought up to date unless `migrate` is false."""
    text = str(location)
    if text.startswith(("postgresql://", "postgres://")):
        from bot.store.postgres import PostgresStore

        return PostgresStore(text, migrate=migrate)
    from bot.store.sqlite import SqliteStore

    # As SQLAlchemy reads it: sqlite:///oncall.db is relative, sqlite:////srv/oncall.db absolute.
    return SqliteStore(text.removeprefix("sqlite:///"), migrate=migrate)
