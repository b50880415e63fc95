"""/incident: open, acknowledge, update, resolve and reopen incidents; their status, list, timeline.

Every change is written, with its timeline event, in one immediate transaction that re-reads the
incident first, so two people pressing Acknowledge at once ack it once, and a double-submitted
open opens one incident.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bot.args import Option, parse_args
from bot.command import Audience, Command, CommandError, Context, Reply, UsageError
from bot.store import ACKNOWLEDGED, OPEN, RESOLVED, SEVERITIES, Incident
from bot.times import TimeParseError, parse_when

DEFAULT_SEVERITY = 3
DOUBLE_SUBMIT_WINDOW = timedelta(minutes=1)
RECENT_LIMIT = 15
ACTIONS = ("open", "ack", "update", "resolve", "close", "reopen", "status", "list", "timeline")
_OPTIONS = {
    "open": {"sev": Option.VALUE, "service": Option.VALUE, "started": Option.WORDS},
    "update": {"sev": Option.VALUE, "service": Option.VALUE, "started": Option.WORDS, "cause": Option.VALUE},
    "resolve": {"cause": Option.VALUE},
}
_CAUSE = re.compile(r"^deploy:[0-9a-f]{7,40}$")


@dataclass(frozen=True)
class IncidentArgs:
    action: str
    incident: int | None = None
    text: str = ""
    severity: int | None = None
    service: str | None = None
    started: str | None = None
    cause: str | None = None


def parse(text: str) -> IncidentArgs:
    match = re.match(r"\s*(\S*)(.*)", text, re.S)
    action, rest = match.group(1).lower(), match.group(2)
    if not action:
        raise UsageError("Say what to do: " + ", ".join(ACTIONS) + ".")
    if action not in ACTIONS:
        raise UsageError(f"Unknown action {action!r}; one of " + ", ".join(ACTIONS) + ".")
    action = "resolve" if action == "close" else action
    args = parse_args(rest, _OPTIONS.get(action, {}), incident_refs=action != "open")
    severity = None
    if "sev" in args.options:
        value = str(args.options["sev"]).upper().removeprefix("SEV")
        if not value.isdigit() or int(value) not in SEVERITIES:
            raise UsageError(f"--sev must be 1, 2, 3 or 4 (1 is the worst), not {args.options['sev']!r}.")
        severity = int(value)
    cause = args.options.get("cause")
    if cause is not None:
        cause = str(cause).lower()
        if not _CAUSE.match(cause):
            raise UsageError(f"--cause is deploy:<sha> (the commit that caused it), not {args.options['cause']!r}.")
    parsed = IncidentArgs(
        action=action, incident=args.incident, text=args.text, severity=severity,
        service=args.options.get("service"), started=args.options.get("started"), cause=cause,
    )
    if action == "open" and not parsed.text:
        raise UsageError("An incident needs a title: /incident open <title>.")
    if action == "update" and not (parsed.text or severity or parsed.service or parsed.started or cause):
        raise UsageError("Say what changed: /incident update <note> [--sev N] [--service S] [--started WHEN] "
                         "[--cause deploy:<sha>].")
    if action == "list" and parsed.text not in ("", "open", "recent"):
        raise UsageError(f"list takes open or recent, not {parsed.text!r}.")
    if action in ("status", "timeline") and parsed.text:
        raise UsageError(f"{action} takes only an incident number, like #12.")
    return parsed


def run(ctx: Context, args: IncidentArgs) -> Reply:
    return _ACTIONS[args.action](ctx, args)


# -- actions -----------------------------------------------------------------------------------


def _open(ctx: Context, args: IncidentArgs) -> Reply:
    now = ctx.now()
    service = _service(ctx, args.service)
    started = _started(ctx, args.started, now, resolved_at=None) if args.started else now
    title = " ".join(args.text.split()) if "\n" not in args.text else args.text.strip()
    with ctx.store.write():
        twin = _double_submit(ctx, title, now)
        if twin is not None:
            return Reply("incident_already_open", {"incident": twin}, incident_id=twin.id)
        incident_id = ctx.store.insert_incident(
            title=title, severity=args.severity or DEFAULT_SEVERITY, service=service, status=OPEN,
            opened_by=ctx.user, opened_at=now, started_at=started, channel=ctx.channel,
            announce_channel=ctx.config.slack.incident_channel or ctx.channel,
        )
        ctx.store.add_event(incident_id, at=now, user=ctx.user, kind="opened", text=title,
                            data={"severity": args.severity or DEFAULT_SEVERITY, "service": service,
                                  "started_at": started})
        incident = ctx.store.incident(incident_id)
    return Reply("incident_card", card_data(incident, now), Audience.ANNOUNCE, incident_id=incident_id)


def _ack(ctx: Context, args: IncidentArgs) -> Reply:
    now = ctx.now()
    with ctx.store.write():
        incident = _must_be_open(ctx.incident(args.incident))
        if incident.status == ACKNOWLEDGED:
            return _notice(incident, "already_acknowledged")
        ctx.store.update_incident(incident.id, status=ACKNOWLEDGED, acknowledged_at=now, acknowledged_by=ctx.user)
        ctx.store.add_event(incident.id, at=now, user=ctx.user, kind="acknowledged", text=args.text or None)
        return _changed(ctx, incident.id, "acknowledged", now, note=args.text)


def _update(ctx: Context, args: IncidentArgs) -> Reply:
    now = ctx.now()
    with ctx.store.write():
        incident = ctx.incident(args.incident)
        changes: list[dict[str, Any]] = []
        fields: dict[str, Any] = {}
        if args.severity is not None and args.severity != incident.severity:
            fields["severity"] = args.severity
            changes.append({"field": "severity", "old": incident.severity, "new": args.severity})
        if args.service is not None:
            service = _service(ctx, args.service)
            if service != incident.service:
                fields["service"] = service
                changes.append({"field": "service", "old": incident.service, "new": service})
        if args.started is not None:
            started = _started(ctx, args.started, now, resolved_at=incident.resolved_at)
            if started != incident.started_at:
                fields["started_at"] = started
                changes.append({"field": "started_at", "old": incident.started_at, "new": started})
        if args.cause is not None and args.cause != incident.cause:
            fields["cause"] = args.cause
            changes.append({"field": "cause", "old": incident.cause, "new": args.cause})
        if fields:
            ctx.store.update_incident(incident.id, **fields)
        for change in changes:
            ctx.store.add_event(incident.id, at=now, user=ctx.user, kind=change["field"], data=change)
        if args.text:
            ctx.store.add_event(incident.id, at=now, user=ctx.user, kind="update", text=args.text)
        if not changes and not args.text:
            return _notice(incident, "nothing_changed")
        return _changed(ctx, incident.id, "updated", now, note=args.text, changes=changes,
                        refresh=bool(changes))


def _resolve(ctx: Context, args: IncidentArgs) -> Reply:
    now = ctx.now()
    with ctx.store.write():
        incident = ctx.incident(args.incident)
        if incident.status == RESOLVED:
            return _notice(incident, "already_resolved")
        fields = {"cause": args.cause} if args.cause else {}
        ctx.store.update_incident(incident.id, status=RESOLVED, resolved_at=now, resolved_by=ctx.user,
                                  resolution=args.text or None, **fields)
        ctx.store.add_event(incident.id, at=now, user=ctx.user, kind="resolved", text=args.text or None,
                            data=fields)
        return _changed(ctx, incident.id, "resolved", now, note=args.text)


def _reopen(ctx: Context, args: IncidentArgs) -> Reply:
    now = ctx.now()
    with ctx.store.write():
        incident = _last_resolved(ctx, args.incident)
        if incident.status != RESOLVED:
            return _notice(incident, "not_resolved")
        ctx.store.update_incident(
            incident.id, status=ACKNOWLEDGED if incident.acknowledged_at else OPEN,
            resolved_at=None, resolved_by=None, resolution=None, reopened=incident.reopened + 1)
        ctx.store.add_event(incident.id, at=now, user=ctx.user, kind="reopened", text=args.text or None,
                            data={"was_resolved_at": incident.resolved_at, "resolution": incident.resolution})
        return _changed(ctx, incident.id, "reopened", now, note=args.text)


def _status(ctx: Context, args: IncidentArgs) -> Reply:
    incident = ctx.incident(args.incident)
    data = card_data(incident, ctx.now())
    data["events"] = ctx.store.events(incident.id)[-5:]
    return Reply("incident_status", data, Audience.THREAD, incident_id=incident.id)


def _list(ctx: Context, args: IncidentArgs) -> Reply:
    now = ctx.now()
    if args.text == "recent":
        incidents = ctx.store.recent_incidents(RECENT_LIMIT)
    else:
        incidents = ctx.store.open_incidents()
    return Reply("incident_list", {
        "which": args.text or "open",
        "incidents": [card_data(incident, now) for incident in incidents],
    })


def _timeline(ctx: Context, args: IncidentArgs) -> Reply:
    incident = ctx.incident(args.incident)
    data = card_data(incident, ctx.now())
    data["events"] = ctx.store.events(incident.id)
    return Reply("incident_timeline", data, Audience.THREAD, incident_id=incident.id)


_ACTIONS = {"open": _open, "ack": _ack, "update": _update, "resolve": _resolve, "reopen": _reopen,
            "status": _status, "list": _list, "timeline": _timeline}


# -- helpers ----------------------------------------------------------------------------------


def card_data(incident: Incident, now: datetime) -> dict[str, Any]:
    """What the announcement (and every view of one incident) shows, durations in seconds:
    `time_to_resolve` once resolved (else None), `ongoing_for` while it is not."""
    since_start = ((incident.resolved_at or now) - incident.started_at).total_seconds()
    return {
        "incident": incident,
        "time_to_resolve": since_start if incident.resolved_at else None,
        "ongoing_for": None if incident.resolved_at else since_start,
        "time_to_acknowledge": ((incident.acknowledged_at - incident.opened_at).total_seconds()
                                if incident.acknowledged_at else None),
    }


def _changed(ctx: Context, incident_id: int, what: str, now: datetime, *, note: str = "",
             changes: list[dict[str, Any]] | None = None, refresh: bool = True) -> Reply:
    card = card_data(ctx.store.incident(incident_id), now)
    data = {**card, "event": what, "user": ctx.user, "at": now, "note": note or None, "changes": changes or []}
    return Reply("incident_event", data, Audience.THREAD, incident_id=incident_id,
                 card=Reply("incident_card", card, Audience.ANNOUNCE, incident_id) if refresh else None)


def _notice(incident: Incident, why: str) -> Reply:
    return Reply("incident_notice", {"incident": incident, "why": why}, incident_id=incident.id)


def _must_be_open(incident: Incident) -> Incident:
    if incident.status == RESOLVED:
        raise CommandError(f"#{incident.id} is resolved; reopen it first: /incident reopen #{incident.id}")
    return incident


def _last_resolved(ctx: Context, ref: int | None) -> Incident:
    if ref is not None:
        return ctx.incident(ref)
    resolved = ctx.store.last_resolved(ctx.channel) if ctx.channel else []
    if not resolved:
        raise CommandError("No resolved incident in this channel; name one with #N.", ctx.store.last_resolved(limit=5))
    return resolved[0]


def _double_submit(ctx: Context, title: str, now: datetime) -> Incident | None:
    return ctx.store.open_twin(ctx.user, title, now - DOUBLE_SUBMIT_WINDOW)


def _service(ctx: Context, name: str | None) -> str | None:
    if name is None or not ctx.config.services:
        return name
    if name not in ctx.config.services:
        raise UsageError(f"Unknown service {name!r}; configured: {', '.join(ctx.config.services)}.")
    return name


def _started(ctx: Context, text: str, now: datetime, *, resolved_at: datetime | None) -> datetime:
    try:
        started = parse_when(text, now, ctx.config.timezone)
    except TimeParseError as error:
        raise UsageError(f"--started: {error}.") from None
    local = started.astimezone(ctx.config.timezone).strftime("%Y-%m-%d %H:%M %Z")
    if started > now + timedelta(seconds=5):
        raise UsageError(f"--started {text}: {local} is in the future.")
    if resolved_at is not None and started > resolved_at:
        raise UsageError(f"--started {text}: {local} is after the incident was resolved.")
    return started


COMMAND = Command(
    name="incident",
    description="Open, acknowledge, update and resolve incidents",
    usage="open <title> [--sev 1-4] [--service S] [--started WHEN] | ack | update <note> | resolve [note] "
          "[--cause deploy:<sha>] | reopen | status | list [open|recent] | timeline | help   (#N picks an incident)",
    parse=parse,
    run=run,
    help_data=lambda config: {"default_severity": DEFAULT_SEVERITY, "recent_limit": RECENT_LIMIT},
)
