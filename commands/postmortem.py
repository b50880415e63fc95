"""The postmortem draft of an incident (`/incident postmortem`, `oncall-bot postmortem N`): what the
bot knows, as the data of templates/postmortem.j2 (Markdown).

People's entries of the timeline are kept as they wrote them; the bot's own (what /deploys, /probe,
/logs and /triage recorded) are summarised from their data: the suspect deploys, each probe target's
failure and recovery, the log errors' causes with their counts, the triage verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.command import Context
from bot.store import BOT_KINDS, Event, Incident
from commands.milestones import MILESTONES

# What the bot's commands record; every other kind of entry is a person's. A /triage entry keeps
# what its parts found under their entries' keys (ARCHITECTURE.md: timeline entries).
FINDINGS = BOT_KINDS
PROBE_OK = "ok"


@dataclass(frozen=True)
class ProbeCourse:
    """One probe target over the incident: when it was first seen failing, and seen up again after."""

    target: str
    failed_at: datetime
    status: str                      # the first failing status (down, degraded)
    recovered_at: datetime | None


@dataclass(frozen=True)
class LogCause:
    """An error /logs found, by its cause (or, with none known, its excerpt): the most occurrences one
    reading counted, and when it was seen first and last."""

    what: str
    count: int
    first_seen: str | None
    last_seen: str | None


def filename(incident: Incident) -> str:
    return f"postmortem-{incident.id}.md"


def draft(ctx: Context, incident: Incident) -> dict[str, Any]:
    now = ctx.now()
    events = ctx.store.events(incident.id)
    milestones = [{"name": milestone.field.removesuffix("_at"), "at": getattr(incident, milestone.field),
                   "after": (getattr(incident, milestone.field) - incident.started_at).total_seconds()}
                  for milestone in MILESTONES if getattr(incident, milestone.field) is not None]
    return {
        "incident": incident,
        "written_at": now,
        "milestones": milestones,
        "impact": incident.time_to_resolve(now),
        "time_to_acknowledge": incident.time_to_acknowledge,
        "entries": [event for event in events if event.kind not in FINDINGS],
        "suspects": _suspects(events),
        "probes": _probes(events),
        "causes": _causes(events),
        "verdicts": [event for event in events if event.kind == "triage"],
        "followups": ctx.store.followups(incident.id),
    }


def _suspects(events: list[Event]) -> list[str]:
    """The deploys /deploys or /triage named as suspects, each once, as first named."""
    found: list[str] = []
    for event in events:
        if event.kind in ("deploys", "triage"):
            found += [sha for sha in event.data.get("suspects") or [] if isinstance(sha, str) and sha not in found]
    return found


def _probes(events: list[Event]) -> list[ProbeCourse]:
    """For each target a probe saw failing: when first, and when it was first seen up again after."""
    courses: dict[str, dict[str, Any]] = {}
    for event in events:
        if event.kind not in ("probe", "triage"):
            continue
        for result in event.data.get("results") or []:
            if not isinstance(result, dict):
                continue
            target = "/".join(str(part) for part in (result.get("service"), result.get("target")) if part)
            status = result.get("status")
            course = courses.get(target)
            if status != PROBE_OK and course is None:
                courses[target] = {"target": target, "failed_at": event.at, "status": status, "recovered_at": None}
            elif status == PROBE_OK and course is not None and course["recovered_at"] is None:
                course["recovered_at"] = event.at
    return [ProbeCourse(**course) for course in courses.values()]


def _causes(events: list[Event]) -> list[LogCause]:
    """The errors /logs or /triage read, by cause, most frequent first (readings overlap: the largest count is kept)."""
    causes: dict[str, LogCause] = {}
    for event in events:
        if event.kind not in ("logs", "triage"):
            continue
        for error in event.data.get("events") or []:
            if not isinstance(error, dict):
                continue
            cause = error.get("cause")
            known: dict[str, Any] = cause if isinstance(cause, dict) else {}
            what = str(known.get("title") or known.get("id") or error.get("excerpt") or "?")
            count = int(error.get("count") or 1)
            seen = causes.get(what)
            if seen is None or count > seen.count:
                first_seen = error.get("first_seen") or (seen.first_seen if seen else None)
                causes[what] = LogCause(what, count, first_seen, error.get("last_seen"))
    return sorted(causes.values(), key=lambda cause: -cause.count)
