"""The verdict: the likely causes of an incident ranked, each with its evidence.

The ranking rules (scores out of 100; the README repeats them):

- deploy — a suspect deploy (in the service's suspect window before the incident started): 50.
  +35 when a file it changed appears in the stack frames of an error in the logs;
  +10 scaled by how close before the first error (or the start) it landed.
  So a suspect whose files are in the traceback ranks above one whose files are not.
- dependency — a probe that is down: 70, degraded: 45; +20 when the errors name it (a known cause
  of that kind of dependency, like "could not connect to server" for Postgres). Pool exhaustion
  (connections near the maximum, or refused for lack of slots): 80, +10 when the errors name it.
- known_cause — an error of the logs with a known cause not already counted for a dependency:
  55, +1 per 5 occurrences up to +15.
- resource — this host's CPU, memory, disk or open files past their thresholds: 50 (down: 65).
- none — when nothing scores 40 or more, a single verdict says there is no evidence, and what was
  checked; it never guesses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bot.times import format_duration

DEPLOY, DEPENDENCY, RESOURCE, KNOWN_CAUSE, NONE = "deploy", "dependency", "resource", "known_cause", "none"
EVIDENCE_THRESHOLD = 40
_SOURCE_PATH = re.compile(r"[\w./\\-]*\w\.(?:py|js|mjs|cjs|jsx|ts|tsx|java|kt|scala|php|go|rb|rs|cs|ex|exs)\b")
_CAUSE_KINDS_EXTRA = {"infra.upstream_nginx": ("http", "tcp")}


@dataclass(frozen=True)
class Verdict:
    kind: str
    summary: str
    evidence: str
    score: int
    since: datetime | None = None             # when the errors that support it began
    action: tuple[str, str] | None = None     # (button label, the command it runs)


def rank(*, deploys: Sequence[Any], deploy_files: dict[str, list[str]], probes: Sequence[Any],
         host: Sequence[Any], errors: Sequence[Any], cause_kinds: dict[str, tuple[str, ...]],
         first_error: datetime | None, started: datetime | None, suspect_window: timedelta,
         incident_id: int | None) -> list[Verdict]:
    """Every verdict the parts support, best first; or the one `none` verdict."""
    def kinds_of(event: Any) -> tuple[str, ...]:
        return cause_kinds.get(event.cause.id, ()) + _CAUSE_KINDS_EXTRA.get(event.cause.id, ()) if event.cause else ()

    frames = {path for event in errors for path in frame_paths(event.text)}
    failing = [result for result in probes if result.status != "ok"]
    naming = {kind: min((e.first_seen for e in errors if kind in kinds_of(e) and e.first_seen), default=None)
              for kind in {kind for event in errors for kind in kinds_of(event)}}
    explained = {event.cause.id for event in errors if set(kinds_of(event)) & {r.kind for r in failing}}
    verdicts = [
        *_deploy_verdicts(deploys, deploy_files, frames, first_error or started, suspect_window, incident_id),
        *_dependency_verdicts(failing, naming),
        *_resource_verdicts(host),
        *_known_cause_verdicts(errors, explained),
    ]
    verdicts.sort(key=lambda verdict: verdict.score, reverse=True)
    if not verdicts or verdicts[0].score < EVIDENCE_THRESHOLD:
        return [Verdict(NONE, "No evidence points to a cause yet", _nothing_found(deploys, probes, host, errors), 0)]
    return verdicts


def frame_paths(stack: str) -> set[str]:
    """Source file paths in a stack trace, as written ("/srv/app/src/acme/views.py", "Order.java")."""
    return {match.group(0).replace("\\", "/").lstrip("./") for match in _SOURCE_PATH.finditer(stack)}


def touches(changed: str, frames: Iterable[str]) -> bool:
    """Whether a changed file is one of the frames' files (by path suffix; by name for frames that
    give only a file name, as Java's do)."""
    changed = _renamed_to(changed).lstrip("/")
    name = changed.rsplit("/", 1)[-1]
    return any(frame.endswith("/" + changed) or frame == changed or ("/" not in frame and frame == name)
               for frame in frames)


def _renamed_to(path: str) -> str:
    """git's "src/{old => new}.py" and "old => new" forms name the file after the rename."""
    if "{" in path and " => " in path:
        return re.sub(r"\{[^{}]* => ([^{}]*)\}", r"\1", path).replace("//", "/")
    return path.split(" => ")[-1]


def _deploy_verdicts(deploys: Sequence[Any], deploy_files: dict[str, list[str]], frames: set[str],
                     anchor: datetime | None, window: timedelta, incident_id: int | None) -> list[Verdict]:
    verdicts = []
    for deploy in (d for d in deploys if d.suspect):
        score = 50
        touched = next((_renamed_to(path) for path in deploy_files.get(deploy.sha, []) if touches(path, frames)), None)
        if touched:
            score += 35
        before = ""
        if anchor is not None and deploy.when <= anchor:
            gap = anchor - deploy.when
            score += round(10 * max(0.0, 1 - gap / window))
            before = f", {format_duration(gap.total_seconds())} before the first error"
        evidence = f"deploy {deploy.short_sha} by {deploy.author}{before}: {deploy.subject}"
        if touched:
            evidence += f" — the traceback's frames are in a file it changed ({touched})"
        action = None
        if incident_id is not None:
            action = (f"Resolve: caused by {deploy.short_sha}",
                      f"/incident resolve #{incident_id} --cause deploy:{deploy.sha}")
        verdicts.append(Verdict(DEPLOY, f"Deploy {deploy.short_sha} ({deploy.service})", evidence, min(score, 95),
                                action=action))
    return verdicts


def _dependency_verdicts(failing: Sequence[Any], naming: dict[str, datetime | None]) -> list[Verdict]:
    """`naming`: the dependency kinds the errors name, with when those errors began."""
    verdicts = []
    for result in failing:
        named = result.kind in naming
        exhausted = result.error == "TooManyConnections" or ("connections" in result.detail
                                                              and "exhausted" in result.detail)
        if exhausted:
            used, most = result.metrics.get("connections"), result.metrics.get("max_connections")
            numbers = f": {used}/{most} connections" if used is not None and most else ""
            summary = f"{_kind_name(result.kind)} pool exhausted{numbers}"
            score = 80 + (10 if named else 0)
        else:
            summary = f"{_kind_name(result.kind)} ({result.service} {result.target}) is {result.status}"
            score = (70 if result.status == "down" else 45) + (20 if named else 0)
        evidence = result.detail + (" — and the errors in the logs name it" if named else "")
        verdicts.append(Verdict(DEPENDENCY, summary, evidence, score, since=naming.get(result.kind),
                                action=("Probe again", f"/probe {result.service}")))
    return verdicts


def _resource_verdicts(host: Sequence[Any]) -> list[Verdict]:
    return [Verdict(RESOURCE, f"This host: {result.detail.split(';')[0]}", result.detail,
                    65 if result.status == "down" else 50) for result in host if result.status != "ok"]


def _known_cause_verdicts(errors: Sequence[Any], explained: set[str]) -> list[Verdict]:
    verdicts = []
    for event in errors:
        if event.cause is None or event.cause.id in explained:
            continue
        score = 55 + min(15, event.count // 5)
        seen = f" ×{event.count}" if event.count > 1 else ""
        verdicts.append(Verdict(KNOWN_CAUSE, f"{event.cause.title} ({event.cause.id}){seen}",
                                f"{event.cause.evidence} — next: {event.cause.next_step}", score,
                                since=event.first_seen))
    return verdicts


def _kind_name(kind: str) -> str:
    return {"postgres": "Postgres", "mysql": "MySQL", "redis": "Redis", "http": "HTTP", "tcp": "TCP"}.get(kind, kind)


def _nothing_found(deploys: Sequence[Any], probes: Sequence[Any], host: Sequence[Any], errors: Sequence[Any]) -> str:
    checked = [
        f"{sum(1 for d in deploys if d.suspect)} suspect deploys",
        f"{len(probes)} probes, {sum(1 for r in probes if r.status != 'ok')} not ok",
        f"host {'ok' if all(r.status == 'ok' for r in host) else 'strained'}",
        f"{len(errors)} kinds of error in the logs, {sum(1 for e in errors if e.cause)} with a known cause",
    ]
    return "Checked: " + "; ".join(checked) + "."
