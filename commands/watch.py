"""Watching a fix: after an incident is mitigated or resolved, is its service well again?

For `[watch] for` (default 15 minutes) after the fix, the bot checks every minute the errors the
service's logs hold in the minute just ended, against their usual level (the hour before the
incident started), and runs the service's probes. One message in the incident's thread says how it
goes, updated in place. When the errors have been at their usual level and the probes ok for STEADY
minutes in a row, the incident is *recovered*, from the first of those minutes; when the errors rise
above their level again after a good minute, the message says they came back and, if the incident
is resolved, offers Reopen.

Each minute's check is a duty of the `watch` job, `/incident watch #N` run by the bot, queued under
`watch:<incident>:<minute>`: done once, whatever the number of workers, replicas and restarts; the
store also keeps one check per incident and minute, so a person's `/incident watch` in the same
minute adds nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from bot.command import Audience, CommandError, Context, Duty, Job, Reply
from bot.config import Table, TableSection
from bot.store import Incident, WatchCheck
from bot.times import to_iso
from commands import milestones
from commands.logs.settings import LogSettings
from commands.probe.settings import ProbeSettings

if TYPE_CHECKING:
    from commands.probe.runner import Target

WATCH_FOR = timedelta(minutes=15)
MAX_WATCH = timedelta(hours=24)
MINUTE = timedelta(minutes=1)
STEADY = 5                       # good minutes in a row for the service to be recovered
USUAL = timedelta(hours=1)       # the errors' usual level: this long before the incident started
PROBE_MARGIN_SECONDS = 1.0       # of the command's deadline, left to record and answer


@dataclass(frozen=True)
class WatchSettings(TableSection):
    """`[watch]`: how long a fix is watched."""

    TABLE = "watch"

    duration: timedelta = WATCH_FOR

    @classmethod
    def read(cls, table: Table) -> WatchSettings:
        duration = table.duration("for", WATCH_FOR)
        if not MINUTE <= duration <= MAX_WATCH:
            table.fail("for", "from 1m to 24h")
        return cls(duration=duration)


SETTINGS = (WatchSettings,)


@dataclass(frozen=True)
class Span:
    """When a fix is watched: from the mitigation or the resolve, to `watch_for` after the later of
    them (a resolve long after the mitigation is watched on its own)."""

    since: datetime
    until: datetime

    @classmethod
    def of(cls, incident: Incident, watch_for: timedelta) -> Span | None:
        fixes = [moment for moment in (incident.mitigated_at, incident.resolved_at) if moment is not None]
        if not fixes:
            return None
        since = min(fixes) if max(fixes) - min(fixes) <= watch_for else max(fixes)
        return cls(since, max(fixes) + watch_for)

    @property
    def last_check(self) -> datetime:
        """The minute of the last check: the first whole minute at or after the end."""
        return _ceil_minute(self.until)


@dataclass(frozen=True)
class Watched:
    """What the checks so far say."""

    checks: Sequence[WatchCheck]
    usual_per_minute: float | None    # errors a minute in the hour before the start; None: no logs
    level: int | None                 # errors a minute at most, to be at the usual level; None: no logs
    good_minutes: int                 # the latest good minutes in a row
    steady_since: datetime | None     # the first of them, once there are STEADY
    came_back_at: datetime | None     # the latest check above the level after a good one

    @classmethod
    def of(cls, checks: Sequence[WatchCheck], *, logs: bool, probes: bool) -> Watched:
        before = next((c.errors_before for c in checks if c.errors_before is not None), None)
        usual = before / (USUAL / MINUTE) if before is not None else None
        level = math.ceil(usual) if usual is not None else None

        def errors_ok(check: WatchCheck) -> bool:
            return not logs or (check.errors is not None and level is not None and check.errors <= level)

        def errors_above(check: WatchCheck) -> bool:     # known to be: unread logs are not errors back
            return logs and check.errors is not None and level is not None and check.errors > level

        def good(check: WatchCheck) -> bool:
            return errors_ok(check) and (not probes or check.probes_failing == 0)

        streak = 0
        for check in reversed(checks):
            if not good(check):
                break
            streak += 1
        came_back = None
        seen_good = False
        for check in checks:
            if seen_good and errors_above(check):
                came_back = check.at
            seen_good = seen_good or good(check)
        steady = checks[len(checks) - streak].at if streak >= STEADY else None
        return cls(checks, usual, level, streak, steady, came_back)


def check(ctx: Context, incident: Incident) -> Reply:
    """`/incident watch`: this minute's check of the incident's fix, and the watch's message."""
    watch_for = WatchSettings.of(ctx.config).duration
    span = Span.of(incident, watch_for)
    if span is None:
        raise CommandError(f"#{incident.id} is not mitigated nor resolved: a fix is watched for "
                           f"{_minutes(watch_for)} min after /incident mitigate or resolve.")
    logs, probes = _evidence(ctx, incident)
    if not logs and not probes:
        raise CommandError(f"#{incident.id} has no service with logs or probes to watch"
                           + (f": add them to [services.{incident.service}]." if incident.service else "."))
    now = ctx.now()
    minute = _floor_minute(now)
    if span.since < minute <= span.last_check:
        _check_minute(ctx, incident, minute, logs=logs, probes=probes)
    recovered = None
    with ctx.store.write():
        incident = ctx.store.incident(incident.id) or incident
        checks = [c for c in ctx.store.watch_checks(incident.id) if c.at > span.since]
        watched = Watched.of(checks, logs=bool(logs), probes=bool(probes))
        if watched.steady_since is not None and incident.recovered_at is None:
            recovered = milestones.record(ctx.store, incident.id, "recovered_at", watched.steady_since, {
                "kind": "watch", "errors_per_minute": watched.level, "minutes": STEADY, "logs": bool(logs),
                "probes": bool(probes)})
            incident = recovered or incident
    data = _data(incident, span, watched, now, logs=bool(logs), probes=bool(probes))
    return Reply("watch", {**data, "recovered_now": recovered is not None}, Audience.THREAD,
                 incident_id=incident.id, in_place=f"watch:{incident.id}:{to_iso(span.since)}")


def _evidence(ctx: Context, incident: Incident) -> tuple[str | None, list[Target]]:
    """The service whose logs count (None: it has none), and the probes to run."""
    from commands.probe.runner import Target

    service = ctx.config.services.get(incident.service or "")
    if service is None:
        return None, []
    logs = service.name if LogSettings.of(service).configured else None
    return logs, [Target(service.name, probe) for probe in ProbeSettings.of(service).probes.values()]


def _check_minute(ctx: Context, incident: Incident, minute: datetime, *, logs: str | None,
                  probes: list[Target]) -> None:
    """Reads the logs and runs the probes for the minute ending at `minute`, and keeps what they
    say (once: a second check of the same minute is not kept). Read outside any unit of work: the
    store's lock must not wait on logs and probes."""
    from commands.logs.query import error_count  # /logs' reading and the probing, loaded when a fix is watched
    from commands.probe.runner import OK, run_probes

    earlier = ctx.store.watch_checks(incident.id)
    if any(c.at == minute for c in earlier):
        return
    before = next((c.errors_before for c in earlier if c.errors_before is not None), None)
    if logs is not None and before is None:
        before = error_count(ctx, logs, incident.started_at - USUAL, incident.started_at)
    errors = error_count(ctx, logs, minute - MINUTE, minute) if logs is not None else None
    results = run_probes(probes, ctx.deadline - PROBE_MARGIN_SECONDS) if probes else []
    failing = [result for result in results if result.status != OK]
    ctx.store.add_watch_check(WatchCheck(
        incident.id, minute, errors=errors, errors_before=before, probes_failing=len(failing) if probes else None,
        failing=", ".join(f"{result.target} {result.status}" for result in failing) or None))


def _data(incident: Incident, span: Span, watched: Watched, now: datetime, *, logs: bool,
          probes: bool) -> dict[str, Any]:
    last = watched.checks[-1] if watched.checks else None
    return {
        "incident": incident,
        "since": span.since,
        "until": span.until,
        "over": _floor_minute(now) >= span.last_check,
        "logs": logs,
        "probes": probes,
        "last": last,
        "usual_per_minute": round(watched.usual_per_minute, 1) if watched.usual_per_minute is not None else None,
        "level": watched.level,
        "good_minutes": watched.good_minutes,
        "steady": STEADY,
        "recovered_at": incident.recovered_at,
        "came_back_at": watched.came_back_at,
        "reopen": watched.came_back_at is not None and incident.resolved_at is not None,
    }


def due(ctx: Context) -> Iterator[Duty]:
    """A check a minute of every fix being watched, named by its incident and minute."""
    watch_for = WatchSettings.of(ctx.config).duration
    now = ctx.now()
    minute = _floor_minute(now)
    for incident in ctx.store.watched(now - watch_for - MINUTE):
        span = Span.of(incident, watch_for)
        logs, probes = _evidence(ctx, incident)
        if span is not None and (logs or probes) and span.since < minute <= span.last_check:
            yield Duty(f"watch:{incident.id}:{to_iso(minute)}", f"/incident watch #{incident.id}",
                       incident.announce_channel)


JOBS = (Job("watch", MINUTE, due),)


def _floor_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def _ceil_minute(moment: datetime) -> datetime:
    floor = _floor_minute(moment)
    return floor if floor == moment else floor + MINUTE


def _minutes(span: timedelta) -> int:
    return int(span / MINUTE)
