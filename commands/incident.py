"""/incident: open, acknowledge, update, resolve and reopen incidents; their status, list, timeline.

Every change is written, with its timeline event, in one immediate transaction that re-reads the
incident first, so two people pressing Acknowledge at once ack it once, and a double-submitted
open opens one incident.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from bot.args import Option, number, parse_args, readable, user
from bot.command import Audience, Command, CommandError, Context, FormError, Reply, Upload, UsageError
from bot.redact import excerpt, redact
from bot.store import ACKNOWLEDGED, OPEN, RESOLVED, SEVERITIES, Incident
from bot.times import TimeParseError, parse_when
from commands import milestones, postmortem, reminders, watch
from commands.milestones import MILESTONES
from commands.triage import duties_at_open
from commands.triage.settings import TriageSettings

DEFAULT_SEVERITY = 3
FORM_TITLE_MAX = 150                     # the open form's title field
NEEDS_A_TITLE = "An incident needs a title: /incident open <title>."
DOUBLE_SUBMIT_WINDOW = timedelta(minutes=1)
RECENT_LIMIT = 15
FUTURE_SLACK = timedelta(seconds=5)      # "now" typed a moment after the clock was read
# Coordination: who leads and who talks, action items, the postmortem, and the reminders' buttons and duties.
COORDINATION = ("lead", "comms", "followup", "postmortem", "snooze", "remind")
# Milestones: a mitigation said by a person, and the check of a fix being watched.
MILESTONE_ACTIONS = ("mitigate", "watch")
ACTIONS = ("open", "ack", "update", "resolve", "close", "reopen", "status", "list", "timeline", *COORDINATION,
           *MILESTONE_ACTIONS)
MAX_FOLLOWUP = 500      # characters of a follow-up's text


_CORRECTABLE = {milestone.option: milestone for milestone in MILESTONES if milestone.option}   # option -> it
_MILESTONE_OPTIONS = {option: Option.WORDS for option in _CORRECTABLE}
_OPTIONS = {
    "open": {"sev": Option.VALUE, "service": Option.VALUE, "started": Option.WORDS},
    "update": {"sev": Option.VALUE, "service": Option.VALUE, **_MILESTONE_OPTIONS, "cause": Option.VALUE},
    "resolve": {"cause": Option.VALUE},
    "timeline": {"mine": Option.FLAG, "people": Option.FLAG},
}
_LEADING_REF = re.compile(r"\s*(#\d+)(?=\s|$)")
_CAUSE = re.compile(r"^deploy:(\S+)$", re.I)
_HEX = re.compile(r"^[0-9a-f]{4,64}$", re.I)


@dataclass(frozen=True)
class IncidentArgs:
    action: str
    incident: int | None = None
    text: str = ""
    severity: int | None = None
    service: str | None = None
    times: dict[str, str] = field(default_factory=dict)   # milestone option -> WHEN as typed
    cause: str | None = None                              # the deploy's ref as typed (a sha or a tag)
    only: frozenset[str] = frozenset()                    # timeline filters: "mine", "people"
    user: str | None = None                               # the Slack user named (a lead, an owner)
    number: int | None = None                             # the follow-up marked done
    done: bool = False                                    # postmortem done, followup done N


def parse(text: str) -> IncidentArgs:
    # `/incident #12 resolve …` names the incident before the action; `/incident resolve #12 …` after it.
    leading = _LEADING_REF.match(text)
    ref, text = (leading.group(1), text[leading.end():]) if leading else ("", text)
    action, remainder = (text.split(maxsplit=1) + ["", ""])[:2]
    action = action.lower()
    rest = f"{ref} {remainder}" if ref else remainder
    if not action:
        raise UsageError("Say what to do: " + ", ".join(ACTIONS) + ".")
    if action not in ACTIONS:
        close = difflib.get_close_matches(action, ACTIONS, n=1)
        meant = f"Did you mean {close[0]}? " if close else ""
        raise UsageError(f"Unknown action {action!r}. {meant}One of " + ", ".join(ACTIONS) + ".")
    action = "resolve" if action == "close" else action
    if action in COORDINATION:
        return _parse_coordination(action, rest)
    args = parse_args(rest, _OPTIONS.get(action, {}), incident_refs=action != "open", prose=True)
    severity = None
    if "sev" in args.options:
        severity = number(str(args.options["sev"]).upper().removeprefix("SEV"))
        if severity not in SEVERITIES:
            raise UsageError(f"--sev must be 1, 2, 3 or 4 (1 is the worst), not {args.options['sev']!r}.")
    cause = None
    if "cause" in args.options:
        typed = _CAUSE.match(str(args.options["cause"]))
        if not typed:
            raise UsageError(f"--cause is deploy:<sha or tag> (the deploy that caused it), "
                             f"not {args.options['cause']!r}.")
        cause = typed.group(1).lower() if _HEX.match(typed.group(1)) else typed.group(1)
    parsed = IncidentArgs(
        action=action, incident=args.incident, text=readable(args.text), severity=severity,
        service=args.options.get("service"), cause=cause, only=frozenset(args.flags),
        times={option: str(args.options[option]) for option in _CORRECTABLE if option in args.options},
    )
    if action not in ("open", "list") and parsed.incident is None and parsed.text.isdigit():
        raise UsageError(f"Did you mean #{parsed.text}? An incident is named with #, like "
                         f"/incident {action} #{parsed.text}.")
    if action == "update" and not (parsed.text or severity or parsed.service or parsed.times or cause):
        raise UsageError("Say what changed: /incident update <note> [--sev N] [--service S] [--started WHEN] "
                         "[--detected WHEN] [--acked WHEN] [--mitigated WHEN] [--resolved WHEN] "
                         "[--cause deploy:<sha>].")
    if action == "list" and parsed.text not in ("", "open", "recent"):
        raise UsageError(f"list takes open or recent, not {parsed.text!r}.")
    if action in ("status", "watch") and parsed.text:
        raise UsageError(f"{action} takes only an incident number, like #12.")
    if action == "timeline" and parsed.text:
        raise UsageError("timeline takes an incident number (#12), --mine (your entries) and --people "
                         "(people's entries, not the bot's findings).")
    return parsed


def _parse_coordination(action: str, rest: str) -> IncidentArgs:
    args = parse_args(rest, {}, prose=True)
    words = args.words
    if action in ("lead", "comms"):
        if len(words) > 1:
            raise UsageError(f"{action} takes one person: /incident {action} @name (alone: you).")
        return IncidentArgs(action, args.incident, user=_user(words[0]) if words else None)
    if action == "followup":
        if words[:1] == ["done"] and len(words) == 2:
            done = number(words[1].lstrip("#"))
            if not done:
                raise UsageError("followup done takes the follow-up's number, like /incident followup done 2.")
            return IncidentArgs(action, args.incident, number=done, done=True)
        owner = user(words[-1]) if words else None
        text = readable(args.text.rsplit(None, 1)[0] if owner and len(words) > 1 else "" if owner else args.text)
        if not text.strip():
            raise UsageError("Say what is to be done: /incident followup <text> [@owner].")
        if len(text) > MAX_FOLLOWUP:
            raise UsageError(f"A follow-up is at most {MAX_FOLLOWUP} characters; link to the details.")
        return IncidentArgs(action, args.incident, text=" ".join(text.split()), user=owner)
    if action == "postmortem":
        if words and words[0] == "done":
            return IncidentArgs(action, args.incident, text=readable(" ".join(words[1:])), done=True)
        if words:
            raise UsageError("postmortem takes an incident number, or done [link] once it is written.")
        return IncidentArgs(action, args.incident)
    if len(words) != 1 or words[0] not in reminders.KINDS:
        raise UsageError(f"{action} takes the kind of reminder: " + ", ".join(reminders.KINDS) + ".")
    return IncidentArgs(action, args.incident, text=words[0])


def _user(word: str) -> str:
    found = user(word)
    if found is None:
        raise UsageError(f"{word[:40]!r} is not a Slack user: mention them (@name, picked from Slack's list), "
                         "or give their user ID like U012AB3CD.")
    return found


def run(ctx: Context, args: IncidentArgs) -> Reply:
    return _ACTIONS[args.action](ctx, args)


# -- actions -----------------------------------------------------------------------------------


def _open(ctx: Context, args: IncidentArgs) -> Reply:
    if not args.text.strip():
        if ctx.forms:     # Slack: the form asks for the title, and the rest
            return _open_form(ctx, args)
        raise UsageError(NEEDS_A_TITLE)
    now = ctx.now()
    service = _service(ctx, args.service)
    started = _when(ctx, "started", args.times["started"], now) if "started" in args.times else now
    # One line (a line break would fake the card's lines), redacted as it is stored, so a double submit is found.
    title = redact(" ".join(args.text.split()))
    from commands.logs.query import first_error  # /logs' reading, loaded when an incident opens

    detected = first_error(ctx, service, started, now)    # read before the unit: the store's lock must not wait on logs
    with ctx.store.write():
        twin = _double_submit(ctx, title, now)
        if twin is not None:
            return Reply("incident_already_open", {"incident": twin}, incident_id=twin.id)
        incident_id = ctx.store.insert_incident(
            title=title, severity=args.severity or DEFAULT_SEVERITY, service=service, status=OPEN,
            opened_by=ctx.user, opened_at=now, started_at=started, channel=ctx.channel,
            announce_channel=ctx.config.slack.incident_channel or ctx.channel,
        )
        quote = ctx.quote
        ctx.store.add_event(incident_id, at=now, user=ctx.user, kind="opened", text=title,
                            data={"severity": args.severity or DEFAULT_SEVERITY, "service": service,
                                  "started_at": started, **({"quote": quote} if quote else {})})
        if args.user is not None:     # the form's lead, handed as /incident lead hands it
            _hand(ctx, _reread(ctx, incident_id), "lead", args.user, now)
        if detected is not None:
            milestones.record(ctx.store, incident_id, "detected_at", detected.at, detected.source)
        incident = _reread(ctx, incident_id)
    then = (Reply("incident_quote", {"incident": incident, "quote": quote, "user": ctx.user}, Audience.THREAD,
                  incident_id=incident_id),) if quote else ()
    duties = duties_at_open(ctx.config, incident) if TriageSettings.of(ctx.config).on_open else ()
    return Reply("incident_card", card_data(incident, now), Audience.ANNOUNCE, incident_id=incident_id,
                 then=then, duties=duties)


def _open_form(ctx: Context, args: IncidentArgs) -> Reply:
    """The form `/incident open` without a title answers with, what was typed filled in; a message
    the incident is declared from is quoted, and its first line is the title offered."""
    offered = ctx.quote.text.strip().split("\n", 1)[0] if ctx.quote and ctx.quote.text.strip() else ""
    return Reply("incident_open_form", {
        "title": excerpt(offered, FORM_TITLE_MAX), "title_max": FORM_TITLE_MAX, "severities": SEVERITIES,
        "severity": args.severity or DEFAULT_SEVERITY, "services": sorted(ctx.config.services),
        "service": args.service, "started": args.times.get("started", ""), "quote": ctx.quote,
    }, Audience.FORM)


def form(ctx: Context, values: dict[str, str]) -> IncidentArgs:
    """The submitted open form -> the arguments of `/incident open`, every field checked as the
    command checks it; FormError names each field at fault."""
    title = " ".join((values.get("title") or "").split())
    severity = number(values.get("severity") or str(DEFAULT_SEVERITY))
    service = values.get("service") or None
    started = (values.get("started") or "").strip()
    lead = user(values["lead"]) if values.get("lead") else None
    errors: dict[str, str] = {}
    if values.get("lead") and lead is None:
        errors["lead"] = "Pick the lead from the list of people."
    if not title:
        errors["title"] = NEEDS_A_TITLE.split(":")[0] + "."
    elif len(title) > FORM_TITLE_MAX:
        errors["title"] = f"At most {FORM_TITLE_MAX} characters."
    if severity not in SEVERITIES:
        errors["severity"] = "SEV1, SEV2, SEV3 or SEV4."
    for field_name, check in (("service", lambda: _service(ctx, service)),
                              ("started", lambda: started and _when(ctx, "started", started, ctx.now()))):
        try:
            check()
        except (UsageError, CommandError) as error:
            errors[field_name] = str(error).removeprefix("--started: ").removeprefix("--started ")
    if errors:
        raise FormError(errors)
    return IncidentArgs(action="open", text=title, severity=severity, service=service,
                        times={"started": started} if started else {}, user=lead)


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
    cause = _cause(ctx, ctx.incident(args.incident), args.service, args.cause) if args.cause else None
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
        for column, moment in _corrected_times(ctx, incident, args.times, now).items():
            if moment != getattr(incident, column):
                fields[column] = moment
                changes.append({"field": column, "old": getattr(incident, column), "new": moment})
        if cause is not None and cause != incident.cause:
            fields["cause"] = cause
            changes.append({"field": "cause", "old": incident.cause, "new": cause})
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
    cause = _cause(ctx, ctx.incident(args.incident), args.service, args.cause) if args.cause else None
    now = ctx.now()
    with ctx.store.write():
        incident = ctx.incident(args.incident)
        if incident.status == RESOLVED:
            return _notice(incident, "already_resolved")
        fields = {"cause": cause} if cause else {}
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
    data.update(lead=incident.lead, comms=incident.comms, followups=ctx.store.followups(incident.id))
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
    data["events"] = [event for event in ctx.store.events(incident.id)
                      if ("mine" not in args.only or event.user == ctx.user)
                      and ("people" not in args.only or not event.by_bot)]
    data["only"] = sorted(args.only)
    return Reply("incident_timeline", data, Audience.THREAD, incident_id=incident.id)


# -- coordination: roles, follow-ups, the postmortem, reminders -----------------------------------


def _lead(ctx: Context, args: IncidentArgs) -> Reply:
    return _assign(ctx, args, "lead")


def _comms(ctx: Context, args: IncidentArgs) -> Reply:
    return _assign(ctx, args, "comms")


def _assign(ctx: Context, args: IncidentArgs, role: str) -> Reply:
    """`role` ("lead" or "comms") to the user named, else to the caller; a handoff is a timeline event."""
    now = ctx.now()
    who = args.user or ctx.user
    with ctx.store.write():
        incident = ctx.incident(args.incident)
        change = _hand(ctx, incident, role, who, now)
        if change is None:
            return _notice(incident, "already_in_role", role=role, user=who)
        return _changed(ctx, incident.id, "updated", now, changes=[change])


def _hand(ctx: Context, incident: Incident, role: str, who: str, now: datetime) -> dict[str, Any] | None:
    """`role` of `incident` to `who`, with its timeline entry (a handoff); the change, or None when
    `who` has it already. Inside the caller's unit of work."""
    old = getattr(incident, role)
    if old == who:
        return None
    ctx.store.update_incident(incident.id, **{role: who})
    change = {"field": role, "old": old, "new": who}
    ctx.store.add_event(incident.id, at=now, user=ctx.user, kind=role, data=change)
    return change


def _followup(ctx: Context, args: IncidentArgs) -> Reply:
    now = ctx.now()
    with ctx.store.write():
        incident = _open_or_last_resolved(ctx, args.incident)
        if args.number is not None:
            item = ctx.store.followup_done(incident.id, args.number, by=ctx.user, at=now)
            if item is None:
                count = len(ctx.store.followups(incident.id))
                raise CommandError(f"#{incident.id} has no follow-up {args.number}"
                                   + (f"; they are numbered 1 to {count}." if count else "; it has none."))
            ctx.store.add_event(incident.id, at=now, user=ctx.user, kind="followup_done", text=item.text,
                                data={"number": item.number})
        else:
            item = ctx.store.add_followup(incident.id, text=args.text, owner=args.user, by=ctx.user, at=now)
            ctx.store.add_event(incident.id, at=now, user=ctx.user, kind="followup", text=item.text,
                                data={"number": item.number, "owner": item.owner})
        return Reply("incident_followup", {"incident": incident, "followup": item, "user": ctx.user,
                                           "followups": ctx.store.followups(incident.id)},
                     Audience.THREAD, incident_id=incident.id)


def _postmortem(ctx: Context, args: IncidentArgs) -> Reply:
    """The draft, uploaded to the thread as postmortem-N.md; `done [link]` records it written."""
    now = ctx.now()
    if args.done:
        with ctx.store.write():
            incident = _open_or_last_resolved(ctx, args.incident)
            if incident.postmortem_at is not None:
                return _notice(incident, "postmortem_written")
            ctx.store.update_incident(incident.id, postmortem_at=now)
            ctx.store.add_event(incident.id, at=now, user=ctx.user, kind="postmortem", text=args.text or None)
            return _changed(ctx, incident.id, "postmortem", now, note=args.text, refresh=False)
    incident = _open_or_last_resolved(ctx, args.incident)
    filename = postmortem.filename(incident)
    return Reply("incident_postmortem", {"incident": incident, "filename": filename},
                 Audience.THREAD, incident_id=incident.id,
                 files=(Upload(filename, f"Postmortem draft of #{incident.id}", template="postmortem",
                               data=postmortem.draft(ctx, incident)),))


def _snooze(ctx: Context, args: IncidentArgs) -> Reply:
    return reminders.snooze(ctx, args.incident, args.text)


def _remind(ctx: Context, args: IncidentArgs) -> Reply:
    return reminders.remind(ctx, args.incident, args.text)


def lead_ask(incident: Incident) -> Reply:
    """Asks in the incident's thread who leads it, with a Claim lead button (for incidents nobody
    opened by hand: an alert's)."""
    return Reply("incident_lead_ask", {"incident": incident}, Audience.THREAD, incident_id=incident.id)


def _open_or_last_resolved(ctx: Context, ref: int | None) -> Incident:
    """`#N`, else the channel's open incident, else the one resolved last in it: follow-ups and the
    postmortem come after the resolve."""
    if ref is not None:
        return ctx.incident(ref)
    return ctx.incident(None, required=False) or _last_resolved(ctx, None)


# -- milestones: mitigate ---------------------------------------------------------------------


def _mitigate(ctx: Context, args: IncidentArgs) -> Reply:
    now = ctx.now()
    with ctx.store.write():
        incident = _must_be_open(ctx.incident(args.incident))
        if incident.mitigated_at is not None:
            return _notice(incident, "already_mitigated")
        ctx.store.update_incident(incident.id, mitigated_at=now)
        ctx.store.add_event(incident.id, at=now, user=ctx.user, kind="mitigated", text=args.text or None,
                            data={"source": {"kind": "person"}})
        return _changed(ctx, incident.id, "mitigated", now, note=args.text)


def _watch(ctx: Context, args: IncidentArgs) -> Reply:
    # A fix is watched after the resolve too: the channel's incident may be resolved already.
    reply = watch.check(ctx, _open_or_last_resolved(ctx, args.incident))
    if not reply.data["recovered_now"]:
        return reply
    card = Reply("incident_card", card_data(reply.data["incident"], ctx.now()), Audience.ANNOUNCE, reply.incident_id)
    return replace(reply, card=card)


_ACTIONS = {"open": _open, "ack": _ack, "update": _update, "resolve": _resolve, "reopen": _reopen,
            "status": _status, "list": _list, "timeline": _timeline,
            "lead": _lead, "comms": _comms, "followup": _followup, "postmortem": _postmortem,
            "snooze": _snooze, "remind": _remind,
            "mitigate": _mitigate, "watch": _watch}


# -- helpers ----------------------------------------------------------------------------------


def card_data(incident: Incident, now: datetime) -> dict[str, Any]:
    """What the announcement (and every view of one incident) shows, durations in seconds:
    `time_to_resolve` once resolved (else None), `ongoing_for` while it is not."""
    since_start = incident.time_to_resolve(now)
    return {
        "incident": incident,
        "time_to_resolve": since_start if incident.resolved_at else None,
        "ongoing_for": None if incident.resolved_at else since_start,
        "time_to_acknowledge": incident.time_to_acknowledge,
        "time_to_detect": incident.time_to_detect,
        "time_to_mitigate": incident.time_to_mitigate,
    }


def _reread(ctx: Context, incident_id: int) -> Incident:
    """The incident as just written (incidents are never deleted)."""
    incident = ctx.store.incident(incident_id)
    assert incident is not None
    return incident


def _changed(ctx: Context, incident_id: int, what: str, now: datetime, *, note: str = "",
             changes: list[dict[str, Any]] | None = None, refresh: bool = True) -> Reply:
    card = card_data(_reread(ctx, incident_id), now)
    data = {**card, "event": what, "user": ctx.user, "at": now, "note": note or None, "changes": changes or []}
    return Reply("incident_event", data, Audience.THREAD, incident_id=incident_id,
                 card=Reply("incident_card", card, Audience.ANNOUNCE, incident_id) if refresh else None)


def _notice(incident: Incident, why: str, **more: Any) -> Reply:
    return Reply("incident_notice", {"incident": incident, "why": why, **more}, incident_id=incident.id)


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
    """The service named, checked against the config (without any configured, any name is kept)."""
    if name is None or not ctx.config.services:
        return name
    return ctx.service(name, "incident").name


def _cause(ctx: Context, incident: Incident, service_named: str | None, ref: str) -> str:
    """`deploy:<full sha>` of the deploy `ref` names in the service's repository (the
    service being set by this same update, else the incident's; every repository without one).
    Read before the write transaction: git may take seconds, the store's lock must not."""
    service = _service(ctx, service_named) if service_named is not None else incident.service
    if service is not None and service not in ctx.config.services:
        service = None      # a service named before it was configured: check every repository
    from commands.deploys.query import find_deploy  # git, loaded when a cause is named

    return f"deploy:{find_deploy(ctx, service, ref).sha}"


def _when(ctx: Context, option: str, text: str, now: datetime) -> datetime:
    try:
        moment = parse_when(text, now, ctx.config.timezone)
    except TimeParseError as error:
        raise UsageError(f"--{option}: {error}.") from None
    if moment > now + FUTURE_SLACK:
        raise UsageError(f"--{option} {text}: {_local(ctx, moment)} is in the future.")
    return moment


def _corrected_times(ctx: Context, incident: Incident, typed: dict[str, str], now: datetime) -> dict[str, datetime]:
    """The milestones `typed` corrects (column -> time), each checked against the incident's others."""
    times: dict[str, datetime | None] = {m.field: getattr(incident, m.field) for m in MILESTONES}
    corrected: dict[str, datetime] = {}
    options = {milestone.field: option for option, milestone in _CORRECTABLE.items()}
    for option, milestone in _CORRECTABLE.items():
        if option not in typed:
            continue
        if milestone.reached_by and times[milestone.field] is None:
            raise UsageError(f"--{option}: #{incident.id} is not {_past(milestone.field)} yet; "
                             f"/incident {milestone.reached_by} #{incident.id} first.")
        corrected[milestone.field] = times[milestone.field] = _when(ctx, option, typed[option], now)
    for later in MILESTONES:
        for column in later.not_before:
            moment, bound = times[later.field], times[column]
            if moment is None or bound is None or moment >= bound:
                continue
            if later.field in corrected:
                option = options[later.field]
                raise UsageError(f"--{option} {typed[option]}: {_local(ctx, moment)} is before the "
                                 f"incident was {_past(column)} ({_local(ctx, bound)}).")
            if column in corrected:
                option = options[column]
                raise UsageError(f"--{option} {typed[option]}: {_local(ctx, bound)} is after the "
                                 f"incident was {_past(later.field)} ({_local(ctx, moment)}).")
    return corrected


def _past(column: str) -> str:
    return column.removesuffix("_at")


def _local(ctx: Context, moment: datetime) -> str:
    return moment.astimezone(ctx.config.timezone).strftime("%Y-%m-%d %H:%M %Z")


COMMAND = Command(
    name="incident",
    description="Open, acknowledge, update and resolve incidents",
    usage="open <title> [--sev 1-4] [--service S] [--started WHEN] | ack | update <note> [--sev N] [--service S] "
          "[--started|--detected|--acked|--mitigated|--resolved WHEN] [--cause deploy:<sha>] | "
          "resolve [note] [--cause deploy:<sha>] | reopen | status | list [open|recent] | "
          "timeline [--mine] [--people] | lead [@user] | comms [@user] | followup <text> [@owner] | followup done N | "
          "postmortem [done [link]] | mitigate [note] | watch | help   (#N first picks an incident)",
    parse=parse,
    run=run,
    help_data=lambda config: {"default_severity": DEFAULT_SEVERITY, "recent_limit": RECENT_LIMIT,
                              "reminders": reminders.ReminderSettings.of(config), "kinds": reminders.KINDS,
                              "snooze": reminders.SNOOZE.total_seconds(),
                              "watch_minutes": int(watch.WatchSettings.of(config).duration / watch.MINUTE),
                              "steady": watch.STEADY},
    mentions=True,
    form=form,
)
