"""Reminders in an incident's thread: not acknowledged, no update, open too long, no postmortem.

A feature without a command of its own: its settings (`[reminders]`) and its job. Every look (JOBS)
finds each reminder due by the clock and the store alone, and names it by the incident, its kind
and the moment it fell due; the scheduler queues it as work under that name and the bot runs
`/incident remind #N <kind>`, which checks again and records the moment reminded in the same unit
of work as the message it posts. So each reminder is posted once whatever the number of replicas
and restarts, and not at all when its condition went away in between (acknowledged, updated,
resolved, postmortem written). Snoozing stores a later moment to be due at.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar

from bot.command import Audience, Context, Duty, Job, Reply
from bot.config import USERGROUP_ID, Table, TableSection
from bot.store import OPEN, RESOLVED, SEVERITIES, Incident, ReminderState, Store
from bot.times import to_iso

KINDS = ("unacknowledged", "no_update", "open_longer", "postmortem_due")
SNOOZE = timedelta(minutes=30)
SHORTEST = timedelta(minutes=1)
LOOK_EVERY = timedelta(seconds=30)
# Past this, a postmortem reminder is not posted late (the bot was down): it would come out of the blue.
LATE = timedelta(days=1)
# What counts as an update to the people following an incident: a note, or a change of its status.
UPDATES = ("opened", "acknowledged", "update", "mitigated", "reopened")

Thresholds = tuple[timedelta | None, ...]     # by severity, SEV1 first; None: off


def _minutes(*minutes: int | None) -> Thresholds:
    return tuple(timedelta(minutes=m) if m is not None else None for m in minutes)


@dataclass(frozen=True)
class ReminderSettings(TableSection):
    TABLE: ClassVar[str] = "reminders"

    unacknowledged: Thresholds = _minutes(5, 15, 60, None)
    no_update: Thresholds = _minutes(30, 30, None, None)
    open_longer: Thresholds = _minutes(4 * 60, 8 * 60, None, None)
    postmortem_due: Thresholds = _minutes(2 * 24 * 60, 5 * 24 * 60, None, None)
    mention: str | None = None          # a user group pinged when the incident has no lead

    @classmethod
    def read(cls, table: Table) -> ReminderSettings:
        thresholds = {kind: _thresholds(table, kind, getattr(cls, kind)) for kind in KINDS}
        return cls(**thresholds, mention=table.slack_id("mention", USERGROUP_ID, "user group ID like S0123ABCD"))

    def after(self, kind: str, severity: int) -> timedelta | None:
        """How long after its start a reminder of `kind` is due for an incident of `severity`; None: off."""
        thresholds: Thresholds = getattr(self, kind)
        return thresholds[severity - 1]


def _thresholds(table: Table, key: str, default: Thresholds) -> Thresholds:
    """`key = "30m"` (every severity), `"off"`, or `{ sev1 = "15m", sev2 = "30m" }` (the others off)."""
    if not table.has(key):
        return default
    if not isinstance(table.data[key], dict):
        return (_threshold(table, key),) * len(SEVERITIES)
    levels = table.table(key)
    found = tuple(_threshold(levels, f"sev{level}") if levels.has(f"sev{level}") else None for level in SEVERITIES)
    levels.done()
    return found


def _threshold(table: Table, key: str) -> timedelta | None:
    if table.string(key, None) == "off":
        return None
    after = table.duration(key, SHORTEST)
    if after < SHORTEST:
        table.fail(key, f"must be at least 1m, or \"off\" (not {table.data[key]!r})")
    return after


def _since(store: Store, incident: Incident, kind: str) -> datetime | None:
    """The moment a reminder of `kind` counts from, or None while its condition does not hold."""
    if kind == "unacknowledged":
        return incident.opened_at if incident.status == OPEN else None
    if kind == "no_update":
        return None if incident.status == RESOLVED else (
            store.last_event_at(incident.id, UPDATES) or incident.opened_at)
    if kind == "open_longer":
        return None if incident.status == RESOLVED else incident.started_at
    return incident.resolved_at if incident.status == RESOLVED and incident.postmortem_at is None else None


def due(store: Store, settings: ReminderSettings, incident: Incident, kind: str,
        state: ReminderState | None) -> tuple[datetime, datetime] | None:
    """(counted from, due at) of the reminder of `kind`, past or future, or None: off, its
    condition gone, or already posted for that moment. A snooze moves it later, never earlier."""
    after = settings.after(kind, incident.severity)
    since = _since(store, incident, kind) if after is not None else None
    if after is None or since is None:
        return None
    at = since + after
    if state is not None and state.snoozed_until is not None and state.snoozed_until > at:
        at = state.snoozed_until
    if state is not None and state.reminded_for == at:
        return None
    return since, at


def _on_time(kind: str, at: datetime, now: datetime) -> bool:
    return at <= now and (kind != "postmortem_due" or now - at <= LATE)


def found_due(ctx: Context) -> Iterator[Duty]:
    """The job: every reminder due now, named by its incident, kind and moment."""
    settings = ReminderSettings.of(ctx.config)
    now = ctx.now()
    incidents = ctx.store.open_incidents()
    longest = max((after for after in settings.postmortem_due if after is not None), default=None)
    if longest is not None:
        incidents += [incident for incident in ctx.store.resolved_since(now - longest - LATE)
                      if incident.postmortem_at is None]
    for incident in incidents:
        states = ctx.store.reminders(incident.id)
        for kind in KINDS:
            found = due(ctx.store, settings, incident, kind, states.get(kind))
            if found is not None and _on_time(kind, found[1], now):
                yield Duty(f"remind:{incident.id}:{kind}:{to_iso(found[1])}", f"/incident remind #{incident.id} {kind}")


def remind(ctx: Context, incident_ref: int | None, kind: str) -> Reply:
    """Post the reminder of `kind` in the incident's thread if it is due and was not posted yet (run
    by the bot for each duty; the moment reminded is written with the message)."""
    settings = ReminderSettings.of(ctx.config)
    now = ctx.now()
    with ctx.store.write():
        incident = ctx.incident(incident_ref)
        found = due(ctx.store, settings, incident, kind, ctx.store.reminders(incident.id).get(kind))
        if found is None or not _on_time(kind, found[1], now):
            return Reply("incident_notice", {"incident": incident, "why": "no_reminder", "kind": kind},
                         incident_id=incident.id)
        since, at = found
        ctx.store.set_reminder(incident.id, kind, reminded_for=at)
    return Reply("incident_reminder", {
        "incident": incident, "kind": kind, "since": since, "waited": (now - since).total_seconds(),
        "group": settings.mention, "snooze_minutes": int(SNOOZE.total_seconds() // 60),
    }, Audience.THREAD, incident_id=incident.id)


def snooze(ctx: Context, incident_ref: int | None, kind: str) -> Reply:
    """The reminder of `kind` is not due again before SNOOZE from now (stored: every replica knows)."""
    until = ctx.now() + SNOOZE
    with ctx.store.write():
        incident = ctx.incident(incident_ref)
        ctx.store.set_reminder(incident.id, kind, snoozed_until=until)
    return Reply("incident_notice", {"incident": incident, "why": "snoozed", "kind": kind, "until": until},
                 incident_id=incident.id)


SETTINGS = (ReminderSettings,)
JOBS = (Job("reminders", LOOK_EVERY, found_due),)
