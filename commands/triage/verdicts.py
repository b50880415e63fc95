"""The verdict: the likely causes of an incident ranked, each with its evidence.

The ranking rules (scores out of 100; the README repeats them):

- deploy — a suspect deploy (in the service's suspect window before the incident started): 50.
  +35 when a file it changed appears in the stack frames of an error in the logs;
  +10 scaled by how close before the first error (or the start) it landed.
  So a suspect whose files are in the traceback ranks above one whose files are not.
- dependency — a probe that is down: 70, degraded: 45; +20 when the errors name it: a line of an
  error mentions the probe's host (not a loopback one, which says nothing), its host:port, its
  port as written in the config (`:5432`, `port 5432`), or its name when that is more than a
  common word (`orders-db`, or `service.target`); the evidence quotes that line. Pool exhaustion
  (connections near the maximum, or refused for lack of slots): 80, +10 when the errors name it.
- known_cause — an error of the logs with a known cause, unless it names a failing dependency
  (then it is that dependency's evidence): 55, +1 per 5 occurrences up to +15.
- resource — this host's CPU, memory, disk or open files past their thresholds: 50 (down: 65).
- none — when nothing scores 40 or more, a single verdict says there is no evidence, and what was
  checked; it never guesses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from bot.times import format_duration
from commands.probe.errors import TooManyConnections
from commands.probe.runner import DOWN, OK, ProbeResult

if TYPE_CHECKING:
    from commands.deploys.history import Deploy
    from commands.logs.report import Event

DEPLOY, DEPENDENCY, RESOURCE, KNOWN_CAUSE, NONE = "deploy", "dependency", "resource", "known_cause", "none"
EVIDENCE_THRESHOLD = 40
QUOTE_CHARS = 160
_SOURCE_PATH = re.compile(r"[\w./\\-]*\w\.(?:py|js|mjs|cjs|jsx|ts|tsx|java|kt|scala|php|go|rb|rs|cs|ex|exs)\b")
_LOOPBACK = re.compile(r"^(?:localhost|127\.\d+\.\d+\.\d+|::1|0\.0\.0\.0|::)$", re.I)
# Before a `:port`, something that can be a host (a name, an IPv4 address, a bracketed IPv6 one): not a clock's hours.
_HOST_BEFORE_PORT = r"(?:(?<![\w.-])[A-Za-z][\w.-]*|(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}|\])"


@dataclass(frozen=True)
class Verdict:
    kind: str
    summary: str
    evidence: str
    score: int
    since: datetime | None = None             # when the errors that support it began
    action: tuple[str, str] | None = None     # (button label, the command it runs)


@dataclass(frozen=True)
class Endpoint:
    """What an error line must mention to name a probe."""

    host: str | None                          # where it connects
    port: int | None                          # as written in its config (None: implied, or a socket)
    name: str                                 # the probe's name


def rank(*, deploys: Sequence[Deploy], deploy_files: dict[str, list[str]], probes: Sequence[ProbeResult],
         host: Sequence[ProbeResult], errors: Sequence[Event], endpoints: dict[str, Endpoint],
         first_error: datetime | None, started: datetime | None, suspect_window: timedelta,
         incident_id: int | None) -> list[Verdict]:
    """Every verdict the parts support, best first; or the one `none` verdict.

    `endpoints`: each probe's (by its target name) host, port and name.
    """
    frames = {path for event in errors for path in frame_paths(event.text)}
    failing = [result for result in probes if result.status != OK]
    named = {result.target: naming_line(errors, endpoints[result.target])
             for result in failing if result.target in endpoints}
    explained = {id(event) for found in named.values() if found for event in found[0]}
    verdicts = [
        *_deploy_verdicts(deploys, deploy_files, frames, first_error or started, suspect_window, incident_id),
        *_dependency_verdicts(failing, named),
        *_resource_verdicts(host),
        *_known_cause_verdicts([event for event in errors if id(event) not in explained]),
    ]
    verdicts.sort(key=lambda verdict: verdict.score, reverse=True)
    if not verdicts or verdicts[0].score < EVIDENCE_THRESHOLD:
        return [Verdict(NONE, "No evidence points to a cause yet", _nothing_found(deploys, probes, host, errors), 0)]
    return verdicts


def naming_line(errors: Sequence[Event], endpoint: Endpoint) -> tuple[list[Event], str] | None:
    """The errors that mention `endpoint` (its host, host:port, port or name), and the first line
    that does, quoted; None when no error does."""
    mention = _mention(endpoint)
    if mention is None:
        return None
    naming: list[Event] = []
    quoted = ""
    for event in sorted(errors, key=lambda e: (e.first_seen is None, e.first_seen or datetime.min)):
        for line in event.text.splitlines():
            if found := mention.search(line):
                naming.append(event)
                quoted = quoted or _quote(line.strip(), found.start() - (len(line) - len(line.lstrip())))
                break
    return (naming, quoted) if naming else None


def _mention(endpoint: Endpoint) -> re.Pattern[str] | None:
    forms = []
    host = (endpoint.host or "").strip("[]")
    if host and not host.startswith("/"):
        if not _LOOPBACK.match(host):
            forms.append(rf"(?<![\w.-]){re.escape(host)}(?![\w-]|\.\w)")
    if endpoint.port is not None:     # after any host: its own, or another that the same port says is it
        forms.append(rf"{_HOST_BEFORE_PORT}:{endpoint.port}(?![\d:])")
        forms.append(rf"\bport\b\W{{0,3}}{endpoint.port}(?!\d)")
    if re.search(r"[-_.]", endpoint.name):
        forms.append(rf"(?<![\w.-]){re.escape(endpoint.name)}(?![\w-])")
    return re.compile("|".join(forms), re.I) if forms else None


def _quote(line: str, at: int) -> str:
    """`line` cut to QUOTE_CHARS around position `at`."""
    if len(line) <= QUOTE_CHARS:
        return line
    start = max(0, min(at - QUOTE_CHARS // 3, len(line) - QUOTE_CHARS))
    cut = line[start:start + QUOTE_CHARS]
    return ("…" if start else "") + cut + ("…" if start + QUOTE_CHARS < len(line) else "")


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


def _deploy_verdicts(deploys: Sequence[Deploy], deploy_files: dict[str, list[str]], frames: set[str],
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


def _dependency_verdicts(failing: Sequence[ProbeResult],
                         named: dict[str, tuple[list[Event], str] | None]) -> list[Verdict]:
    """`named`: for each failing probe the errors name, those errors and the line that names it."""
    verdicts = []
    for result in failing:
        naming = named.get(result.target)
        exhausted = result.error == TooManyConnections.__name__ or ("connections" in result.detail
                                                              and "exhausted" in result.detail)
        if exhausted:
            used, most = result.metrics.get("connections"), result.metrics.get("max_connections")
            numbers = f": {used}/{most} connections" if used is not None and most else ""
            summary = f"{_kind_name(result.kind)} pool exhausted{numbers}"
            score = 80 + (10 if naming else 0)
        else:
            summary = f"{_kind_name(result.kind)} ({result.service} {result.target}) is {result.status}"
            score = (70 if result.status == DOWN else 45) + (20 if naming else 0)
        evidence = result.detail + (f" — the logs name it: “{naming[1]}”" if naming else "")
        since = min((e.first_seen for e in naming[0] if e.first_seen), default=None) if naming else None
        verdicts.append(Verdict(DEPENDENCY, summary, evidence, score, since=since,
                                action=("Probe again", f"/probe {result.service}")))
    return verdicts


def _resource_verdicts(host: Sequence[ProbeResult]) -> list[Verdict]:
    return [Verdict(RESOURCE, f"This host: {re.split(r'; | · ', result.detail)[0]}", result.detail,
                    65 if result.status == DOWN else 50) for result in host if result.status != OK]


def _known_cause_verdicts(errors: Sequence[Event]) -> list[Verdict]:
    verdicts = []
    for event in errors:
        if event.cause is None:
            continue
        score = 55 + min(15, event.count // 5)
        seen = f" ×{event.count}" if event.count > 1 else ""
        verdicts.append(Verdict(KNOWN_CAUSE, f"{event.cause.title} ({event.cause.id}){seen}",
                                f"{event.cause.evidence} — next: {event.cause.next_step}", score,
                                since=event.first_seen))
    return verdicts


def _kind_name(kind: str) -> str:
    return {"postgres": "Postgres", "mysql": "MySQL", "redis": "Redis", "http": "HTTP", "tcp": "TCP"}.get(kind, kind)


def _nothing_found(deploys: Sequence[Deploy], probes: Sequence[ProbeResult], host: Sequence[ProbeResult],
                   errors: Sequence[Event]) -> str:
    checked = [
        f"{sum(1 for d in deploys if d.suspect)} suspect deploys",
        f"{len(probes)} probes, {sum(1 for r in probes if r.status != 'ok')} not ok",
        f"host {'ok' if all(r.status == 'ok' for r in host) else 'strained'}",
        f"{len(errors)} kinds of error in the logs, {sum(1 for e in errors if e.cause)} with a known cause",
    ]
    return "Checked: " + "; ".join(checked) + "."
