"""/logs: the last errors of a service with their stack traces, folded, with their likely cause.

`/logs api` reads the service's configured logs (files, rotated and gzipped siblings, a command's
output) from the newest entry back, groups multi-line entries, folds repeats by signature, and
names the likely cause from the catalog (causes.toml). `--grep`, `--level`, `--since` narrow it;
`--request-id` follows one request across the files; `--status 5xx` sums up an access log.
Inside an incident channel a bare `/logs` is about the incident's service, from a little before it
started; the answer goes to the incident's thread and into its timeline. Secrets are redacted by
the frame on the way out (bot.redact).

When no source could be read at all (globs matching nothing, missing files, a directory or a
FIFO, a log_command that does not run), the command fails naming each source and why, rather than
answering that there are no errors; when some could, the others are notes. Entries later than now
are said to be in the future (a log written in local time, read as UTC). However the command
ends, the scan is closed, so a log_command still running is killed.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from bot.args import Option, number, parse_args
from bot.command import Audience, CommandError, Context, Need, Reply, UsageError
from bot.config import Config
from bot.redact import excerpt
from bot.store import Incident
from bot.times import TimeParseError, parse_since
from commands import milestones
from commands.logs import causes, report, sources
from commands.logs.reading import SourcesRead
from commands.logs.records import ERROR, LEVEL_NAMES, LEVELS, Dialect
from commands.logs.report import CauseContext, EventGroups, StatusCounter, request_lines
from commands.logs.search import (
    Bound,
    Query,
    RegexError,
    Scan,
    UserRegex,
    log_stream,
    pushdown,
    required_literal,
    to_bytes,
)
from commands.logs.settings import LogSettings
from commands.probe.settings import ProbeSettings

DEFAULT_EVENTS = 5
MAX_EVENTS = 20
INCIDENT_LEAD = timedelta(minutes=10)      # an incident's errors start a little before it was opened
INCIDENT_TAIL = timedelta(minutes=10)
STATUS_WINDOW = timedelta(hours=1)         # --status without a window: the last hour
REQUEST_SPREAD = timedelta(minutes=10)     # a request's entries lie within this of each other
COUNT_WINDOW = timedelta(minutes=10)       # once the last errors are found, repeats are counted this far
COUNT_BYTES = 4 * 1024 * 1024              # back from the newest, or at most this much more is read
DEFAULT_BOUND = Bound(age=timedelta(hours=24), bytes=256 * 1024 * 1024)   # without a window, read at most
#                                          the log's last 24 h or 256 MiB, whichever comes first
MAX_REQUEST_ENTRIES = 200
DEADLINE_MARGIN_SECONDS = 3                # stop reading this long before the command's deadline,
DEADLINE_MARGIN_SHARE = 0.2                # or this share of the time left, when that is less
TIMELINE_EXCERPT = 4000
ENTRY_NAMED = 3          # kinds of error the timeline's one line names (the most frequent)
ENTRY_NAME = 60          # characters of each
DETECTED_EXCERPT = 200                     # of the first error, in the detected milestone's event
_STATUS = re.compile(r"^([1-5])(xx|\d\d)$", re.I)
_OPTIONS = {"since": Option.WORDS, "grep": Option.WORDS, "level": Option.VALUE, "last": Option.VALUE,
            "request-id": Option.VALUE, "status": Option.VALUE}


@dataclass(frozen=True)
class LogsArgs:
    service: str | None = None
    incident: int | None = None
    since: str | None = None
    grep: str | None = None
    regex: UserRegex | None = None
    level: int | None = None
    last: int = DEFAULT_EVENTS
    request_id: str | None = None
    status: tuple[int, int] | None = None
    status_text: str | None = None


def parse(text: str) -> LogsArgs:
    args = parse_args(text, _OPTIONS)
    if len(args.words) > 1:
        raise UsageError(f"One service at a time, not {' and '.join(args.words)}.")
    options = args.options
    grep = str(options["grep"]) if "grep" in options else None
    regex = None
    if grep is not None and (found := re.fullmatch(r"/(.+)/(i?)", grep, re.S)):
        try:
            regex = UserRegex(found.group(1), ignore_case=bool(found.group(2)))
        except RegexError as error:
            raise UsageError(f"--grep {grep}: not a valid regular expression ({error}).") from None
        grep = None
    level = None
    if "level" in options:
        name = str(options["level"]).lower()
        if name not in LEVELS:
            raise UsageError(f"--level {options['level']}: one of debug, info, warn, error, fatal.")
        level = LEVELS[name]
    last = DEFAULT_EVENTS
    if "last" in options:
        value = str(options["last"])
        if number(value) is None or not 1 <= int(value) <= MAX_EVENTS:
            raise UsageError(f"--last takes a number from 1 to {MAX_EVENTS}, not {value!r}.")
        last = int(value)
    status = None
    if "status" in options:
        found = _STATUS.match(str(options["status"]))
        if not found:
            raise UsageError(f"--status {options['status']}: write a class like 5xx or a status like 502.")
        low = int(found.group(1) + ("00" if found.group(2).lower() == "xx" else found.group(2)))
        status = (low, low + 99) if found.group(2).lower() == "xx" else (low, low)
    if status and "request-id" in options:
        raise UsageError("--status and --request-id are two different views; ask one at a time.")
    return LogsArgs(
        service=args.words[0] if args.words else None, incident=args.incident,
        since=str(options["since"]) if "since" in options else None, grep=grep, regex=regex, level=level,
        last=last, request_id=str(options["request-id"]) if "request-id" in options else None,
        status=status, status_text=str(options["status"]).lower() if status else None,
    )


def run(ctx: Context, args: LogsArgs) -> Reply:
    incident = ctx.incident(args.incident, required=args.incident is not None)
    if incident is not None and args.incident is None and args.service and incident.service \
            and args.service != incident.service:
        incident = None         # another service's logs asked in this incident's channel: not about it
    service = _service(ctx, args, incident)
    now = ctx.now()
    since, until, window = _window(ctx, args, incident, now)
    mode = ("request" if args.request_id else "status" if args.status else "grep" if args.grep or args.regex
            else "errors")
    query = Query(
        min_level=args.level if args.level is not None else ERROR if mode == "errors" else None,
        grep=to_bytes(args.grep) if args.grep else None, pattern=args.regex, pattern_literal=_literal(args.regex),
        request_id=to_bytes(args.request_id) if args.request_id else None, statuses=args.status,
        since=since, until=until,
    )
    stats = SourcesRead()
    deadline = _deadline(ctx)
    logs, streams = _streams(service, query, stats, deadline, now)
    probes = ProbeSettings.of(ctx.config.services[service.name]).probes
    context = CauseContext(service.name, service.app_paths, frozenset(service.silence_causes),
                           {name: probe.kind for name, probe in probes.items()})
    data: dict[str, Any] = {
        "service": service.name, "mode": mode,
        "incident": {"id": incident.id, "title": incident.title} if incident else None,
        "query": {"level": LEVEL_NAMES.get(query.min_level) if query.min_level is not None else None,
                  "grep": args.grep, "regex": args.regex.text if args.regex else None,
                  "regex_flags": "i" if args.regex and args.regex.ignore_case else "",
                  "request_id": args.request_id, "status": args.status_text, "since": since, "until": until,
                  "window": window, "last": args.last},
        "events": [], "distinct": 0, "ungrouped": 0, "lines": [], "status": None,
    }
    bound = DEFAULT_BOUND if since is None else None
    with Scan(streams, query, deadline, stats, now, bound) as scan:
        if mode == "request":
            _collect_request(scan, data, context)
        elif mode == "status":
            _collect_status(scan, data, args, context)
        else:
            _show(_fold(scan, args.last, context.app_paths, whole_window=since is not None), args.last, context,
                  data)
    if not stats.read and not scan.timed_out:
        raise CommandError(f"Could not read any log of {service.name}: {'; '.join(stats.unreadable)}. "
                           f"Check its sources ({', '.join(service.sources)}) in [services.{service.name}].")
    data["read"] = {"bytes": stats.bytes_read, "back_to": scan.reached,
                    "complete": scan.complete and not stats.not_read and not stats.unreadable,
                    "timed_out": scan.timed_out, "bounded": scan.bounded,
                    "bound": {"hours": int(DEFAULT_BOUND.age.total_seconds() // 3600),
                              "megabytes": DEFAULT_BOUND.bytes >> 20}}
    data["sources"] = [log.name for log in logs]
    data["access_logs"] = sorted(stats.with_access_lines)
    data["ahead"] = ({"seconds": round(max(scan.ahead.values()).total_seconds() / 60) * 60,
                      "sources": sorted(scan.ahead)} if scan.ahead else None)
    data["notes"] = stats.notes
    if incident is None or (incident.service and incident.service != service.name):
        return Reply("logs", data, Audience.CALLER)     # only what is about its service goes into an incident
    detect(ctx, incident)
    _record(ctx, incident, data)
    return Reply("logs", data, Audience.THREAD, incident_id=incident.id)


def _deadline(ctx: Context) -> float:
    left = ctx.deadline - time.monotonic()
    return ctx.deadline - min(DEADLINE_MARGIN_SECONDS, DEADLINE_MARGIN_SHARE * left)


def _streams(service: LogSettings, query: Query, stats: SourcesRead, deadline: float,
             now: datetime) -> tuple[list[Any], list[Any]]:
    """The service's logs, and their records' streams, as `query` reads them."""
    kinds = sources.kinds()
    logs = [log for name, settings in service.sources.items()
            for log in kinds[name].logs(settings, pushdown(query), stats, deadline)]
    dialect = Dialect(fmt=service.log_format, zone=service.log_timezone, now=now)
    return logs, [log_stream(log, dialect, query, stats, deadline) for log in logs]


@dataclass(frozen=True)
class FirstError:
    """The earliest error of a service's logs in a window: when, and its first line (redacted, cut)."""

    service: str
    at: datetime
    message: str

    @property
    def source(self) -> dict[str, Any]:
        """What the detected milestone's timeline event says it came from."""
        return {"kind": "logs", "service": self.service, "error": self.message}


def first_error(ctx: Context, service: str | None, since: datetime, until: datetime) -> FirstError | None:
    """The earliest error (or worse) that `service`'s logs hold from `since` to `until`, read to the
    window's start within the command's deadline; None when there is none, no log could be read, or
    the service has no logs configured."""
    configured = ctx.config.services.get(service or "")
    if service is None or configured is None or not LogSettings.of(configured).configured or since >= until:
        return None
    settings = LogSettings.of(configured)
    query = Query(min_level=ERROR, since=since, until=until)
    stats = SourcesRead()
    deadline = _deadline(ctx)
    _, streams = _streams(settings, query, stats, deadline, ctx.now())
    earliest: tuple[datetime, Any] | None = None
    with Scan(streams, query, deadline, stats, ctx.now()) as scan:
        for found in scan:
            moment = (found.first_seen or found.timestamp) if found is not None else None
            if moment is not None and since <= moment <= until and (earliest is None or moment < earliest[0]):
                earliest = (moment, found)
    if earliest is None:
        return None
    moment, found = earliest
    line = found.message or (found.lines[0] if found.lines else "")
    return FirstError(service, moment, excerpt(line, DETECTED_EXCERPT))


def error_count(ctx: Context, service: str, since: datetime, until: datetime) -> int | None:
    """How many errors (or worse) `service`'s logs hold from `since` until before `until`, repeats
    included; None when it has no logs, none could be read, or the reading ran out of time."""
    configured = ctx.config.services.get(service)
    if configured is None or not LogSettings.of(configured).configured:
        return None
    query = Query(min_level=ERROR, since=since, until=until)
    stats = SourcesRead()
    deadline = _deadline(ctx)
    _, streams = _streams(LogSettings.of(configured), query, stats, deadline, ctx.now())
    count = 0
    with Scan(streams, query, deadline, stats, ctx.now()) as scan:
        for found in scan:
            moment = found.timestamp if found is not None else None
            if found is not None and moment is not None and since <= moment < until:
                count += found.repeats
    if not stats.read or scan.timed_out:
        return None
    return count


def detect(ctx: Context, incident: Incident) -> Incident | None:
    """Records when `incident` was detected from its service's first error between its start and
    its opening, unless it was already detected (an alert, a person) or that window is empty (it was
    opened as it started): an error from before the start is no evidence about this incident."""
    if incident.detected_at is not None:
        return None
    found = first_error(ctx, incident.service, incident.started_at, incident.opened_at)
    if found is None:
        return None
    return milestones.record(ctx.store, incident.id, "detected_at", found.at, found.source)


_WITH_LOGS = Need(lambda service: LogSettings.of(service).configured, "logs", "no logs",
                  "set logs or log_command in [services.{name}]")


def _service(ctx: Context, args: LogsArgs, incident: Incident | None) -> LogSettings:
    return LogSettings.of(ctx.service(args.service or (incident.service if incident else None), "logs", _WITH_LOGS))


def _window(ctx: Context, args: LogsArgs, incident: Incident | None,
            now: datetime) -> tuple[datetime | None, datetime | None, str | None]:
    """(since, until, where they come from: typed | incident | status) — none: read back until enough."""
    if args.since is not None:
        return _since(args.since, ctx, now), None, "typed"
    if incident is not None and args.request_id is None:    # a request id is looked for in the whole log
        until = incident.resolved_at + INCIDENT_TAIL if incident.resolved_at else None
        return incident.started_at - INCIDENT_LEAD, until, "incident"
    if args.status is not None:
        return now - STATUS_WINDOW, None, "status"
    return None, None, None


def _since(text: str, ctx: Context, now: datetime) -> datetime:
    try:
        return parse_since(text, now, ctx.config.timezone)
    except TimeParseError as error:
        raise UsageError(f"--since: {error}.") from None


def _literal(regex: UserRegex | None) -> bytes | None:
    if regex is None or regex.ignore_case:
        return None
    literal = required_literal(regex.text)
    return to_bytes(literal) if literal else None


def _fold(scan: Scan, limit: int, app_paths: tuple[str, ...], *, whole_window: bool) -> EventGroups:
    """Read until `limit` events are settled, then a little further back so that their counts mean
    something (or, with a window, to its start: the counts cover it)."""
    folder = EventGroups(app_paths)
    found_at: int | None = None                 # bytes read when `limit` events were settled
    horizon: datetime | None = None
    for record in scan:
        if record is not None:
            folder.add(record)
        if whole_window:
            continue
        if found_at is None and folder.settled(scan.frontier) >= limit:
            found_at = scan.stats.bytes_read
            newest = max((group.last_seen for group in folder.groups.values() if group.last_seen), default=None)
            horizon = newest - COUNT_WINDOW if newest else None
        if found_at is not None and (scan.stats.bytes_read - found_at >= COUNT_BYTES or scan.frontier is None
                                     or (horizon is not None and scan.frontier < horizon)):
            break
    return folder


def _collect_request(scan: Scan, data: dict[str, Any], context: CauseContext) -> None:
    found = []
    for record in scan:
        if record is not None:
            found.append(record)
            if len(found) >= MAX_REQUEST_ENTRIES:
                scan.stats.notes.append(f"only the newest {MAX_REQUEST_ENTRIES} entries of the request are shown")
                break
        oldest = min((r.timestamp for r in found if r.timestamp), default=None)
        if oldest is not None and scan.frontier is not None and scan.frontier < oldest - REQUEST_SPREAD:
            break
    data["lines"] = request_lines(found)
    folder = EventGroups(context.app_paths)
    for record in found:
        if record.level is not None and record.level >= ERROR:
            folder.add(record)
    _show(folder, MAX_EVENTS, context, data)


def _collect_status(scan: Scan, data: dict[str, Any], args: LogsArgs, context: CauseContext) -> None:
    counter = StatusCounter(args.status_text or "")
    folder = EventGroups(context.app_paths)
    for record in scan:
        if record is not None:
            counter.add(record)
            folder.add(record)
    data["status"] = counter.summary()
    _show(folder, args.last, context, data)


def _show(groups: EventGroups, limit: int, context: CauseContext, data: dict[str, Any]) -> None:
    """The reply's events: the `limit` newest kinds, how many kinds in all, and how many occurrences
    were only counted (past MAX_SIGNATURES kinds)."""
    data["events"] = groups.events(limit, context)
    data["distinct"] = len(groups.groups)
    data["ungrouped"], data["max_kinds"] = groups.ungrouped, report.MAX_SIGNATURES


def entry_events(events: list[report.Event]) -> list[dict[str, Any]]:
    """Errors as a timeline entry's data keeps them (/logs', /triage's)."""
    return [{"exception": excerpt(event.exception, ENTRY_NAME * 4), "excerpt": excerpt(event.excerpt, TIMELINE_EXCERPT),
             "count": event.count, "signature": event.signature, "first_seen": event.first_seen,
             "last_seen": event.last_seen, "cause": asdict(event.cause) if event.cause else None} for event in events]


def _record(ctx: Context, incident: Incident, data: dict[str, Any]) -> None:
    """One line in the incident's timeline (the kinds of errors, the most frequent first); what was
    asked and what came back in its data."""
    events = sorted(data["events"], key=lambda event: -event.count)
    named = ", ".join(f"{excerpt(event.exception, ENTRY_NAME)} ×{event.count}" for event in events[:ENTRY_NAMED])
    found = (f"{len(events)} kind{'s' if len(events) != 1 else ''} of error — {named}"
             f"{', …' if len(events) > ENTRY_NAMED else ''}") if events else "nothing matched"
    causes_found: dict[str, dict[str, Any]] = {}
    for event in events:
        if event.cause:
            cause = causes_found.setdefault(event.cause.id, {"id": event.cause.id, "title": event.cause.title,
                                                             "count": 0})
            cause["count"] += event.count
    ctx.record(incident, "logs", f"/logs {data['service']}: {found}", {
        "service": data["service"], "mode": data["mode"], "query": data["query"],
        "events": entry_events(data["events"]),
        "causes": list(causes_found.values()),
        "status": data["status"], "request_lines": len(data["lines"]),
    })


def help_data(config: Config) -> dict[str, Any]:
    return {"default_events": DEFAULT_EVENTS, "max_events": MAX_EVENTS,
            "incident_lead": int(INCIDENT_LEAD.total_seconds() // 60), "causes": causes.catalog()}
