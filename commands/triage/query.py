"""/triage: the whole 500 checklist at once, and the likely causes ranked.

`/triage [service]` runs, concurrently and under one deadline (`[triage] deadline`, 15 s), the
service's recent deploys, every probe of the service, the log summary with known causes, and this
host's resources. Each part is the feature's own command run as the caller (`/deploys`, `/probe`,
`/logs`), so each answers and records exactly as it does alone; a part still running at the
deadline is reported as timed out. The message, in the incident's thread, is updated in place as
each part lands; at the top stands the verdict (verdicts.py holds the ranking rules).

Also: the impact start the logs show (their first error) offered as a button that corrects the
incident's start, "seen before" when an error's signature was seen in an earlier incident, and
everything found recorded in the incident's timeline.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bot.args import parse_args
from bot.command import Audience, Command, CommandError, Context, Reply, UsageError
from bot.config import Service
from bot.store import Incident, Store
from bot.times import to_iso
from commands.deploys import COMMAND as DEPLOYS
from commands.deploys.settings import DeploySettings
from commands.logs import COMMAND as LOGS
from commands.logs.settings import LogSettings
from commands.probe import COMMAND as PROBE
from commands.probe.check import endpoint
from commands.probe.runner import Target, run_probes
from commands.probe.settings import ProbeConfig, ProbeSettings
from commands.triage.settings import TriageSettings
from commands.triage.verdicts import Endpoint, Verdict, rank

PARTS = ("deploys", "probes", "logs", "host")
RUNNING, DONE, FAILED, TIMED_OUT, SKIPPED = "running", "done", "failed", "timed out", "skipped"
SUSPECTS_IN_DETAIL = 3
IMPACT_OFFER_AFTER = timedelta(minutes=1)   # a start this far from the logs' first error is offered a fix
REPLY_MARGIN_SECONDS = 1.0


@dataclass(frozen=True)
class TriageArgs:
    service: str | None = None
    incident: int | None = None


@dataclass
class Part:
    name: str
    state: str = RUNNING
    note: str | None = None          # why it failed or was skipped
    took_ms: int | None = None
    data: dict[str, Any] | None = None


def parse(text: str) -> TriageArgs:
    args = parse_args(text, {})
    if len(args.words) > 1:
        raise UsageError(f"One service at a time, not {' and '.join(args.words)}.")
    return TriageArgs(service=args.words[0] if args.words else None, incident=args.incident)


def run(ctx: Context, args: TriageArgs) -> Reply:
    incident = ctx.incident(args.incident, required=args.incident is not None)
    service = _service(ctx, args, incident)
    incident = ctx.incident_about(incident, [service.name], args.incident)
    started = time.monotonic()
    allowed = TriageSettings.of(ctx.config).deadline
    deadline = min(ctx.deadline - REPLY_MARGIN_SECONDS, started + allowed.total_seconds())
    parts = {name: Part(name) for name in PARTS}
    audience = Audience.THREAD if incident else Audience.CHANNEL

    def reply(final: bool) -> Reply:
        data = _data(ctx, service, incident, parts, final, time.monotonic() - started)
        return Reply("triage", data, audience, incident_id=incident.id if incident else None)

    ctx.progress(reply(final=False))
    landed: queue.Queue[str] = queue.Queue()
    # The parts are told the incident by #N; without one they must not find the channel's (another service's).
    # The triage is one entry in the timeline, with what its parts found: they record nothing themselves.
    part_ctx = dataclasses.replace(ctx, channel=None, deadline=deadline, progress=lambda partial: None,
                                   records=False)
    for name, work in _work(part_ctx, service, incident).items():
        if not ctx.may_run(_COMMAND_OF[name]):     # a part is its command: [access] applies as to the command
            parts[name].state, parts[name].note = SKIPPED, f"not allowed: you may not run /{_COMMAND_OF[name]}"
            continue
        if work is None:
            parts[name].state, parts[name].note = SKIPPED, _NOT_CONFIGURED[name]
            continue
        threading.Thread(target=_run_part, args=(parts[name], work, landed), name=f"triage-{name}",
                         daemon=True).start()
    while any(part.state == RUNNING for part in parts.values()):
        try:
            landed.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            for part in parts.values():
                if part.state == RUNNING:
                    part.state, part.note = TIMED_OUT, f"no answer within {allowed}"
            break
        ctx.progress(reply(final=False))
    final = reply(final=True)
    if incident is not None:
        _record(ctx, incident, final.data)
        final = dataclasses.replace(final, card=_card(ctx, incident.id))
    return final


_COMMAND_OF = {"deploys": "deploys", "probes": "probe", "logs": "logs", "host": "probe"}
_NOT_CONFIGURED = {"deploys": "no repo configured", "probes": "no probes configured",
                   "logs": "no logs configured", "host": None}


def _service(ctx: Context, args: TriageArgs, incident: Incident | None) -> Service:
    return ctx.service(args.service or (incident.service if incident else None), "triage")


def _work(ctx: Context, service: Service, incident: Incident | None) -> dict[str, Callable[[], dict] | None]:
    """What each part runs, or None when the service has nothing configured for it."""
    about = f"{service.name} #{incident.id}" if incident else service.name

    def deploys() -> dict[str, Any]:
        data = _command(ctx, DEPLOYS, about)
        files = {}
        for deploy in [d for d in data["deploys"] if d.suspect][:SUSPECTS_IN_DETAIL]:
            detail = _command(ctx, DEPLOYS, f"{about} {deploy.sha}")
            files[deploy.sha] = [change.path for change in detail["files"]]
        return {**data, "suspect_files": files}

    def host() -> dict[str, Any]:
        configured = [probe for probe in probes.values() if probe.kind == "host"]
        probe = configured[0] if configured else ProbeConfig(name="host", kind="host")
        return {"results": run_probes([Target(service.name, probe)], ctx.deadline)}

    probes = ProbeSettings.of(service).probes
    return {
        "deploys": deploys if DeploySettings.of(service).repo else None,
        "probes": (lambda: _command(ctx, PROBE, about)) if probes else None,
        "logs": (lambda: _command(ctx, LOGS, about)) if LogSettings.of(service).configured else None,
        "host": host,
    }


def _command(ctx: Context, command: Command, text: str) -> dict[str, Any]:
    return command.run(ctx, command.parse(text)).data


def _run_part(part: Part, work: Callable[[], dict], landed: queue.Queue[str]) -> None:
    started = time.monotonic()
    try:
        part.data = work()
        state, note = DONE, None
    except (UsageError, CommandError) as error:
        state, note = FAILED, str(error)
    except Exception as error:  # a part must never take the triage down with it
        state, note = FAILED, f"{type(error).__name__}: {error}"
    if part.state == RUNNING:     # not already given up on at the deadline
        part.took_ms = round((time.monotonic() - started) * 1000)
        part.state, part.note = state, note
    landed.put(part.name)


def _data(ctx: Context, service: Service, incident: Incident | None, parts: dict[str, Part], final: bool,
          elapsed: float) -> dict[str, Any]:
    deploys, probes, logs, host = (parts[name].data if parts[name].state == DONE else None for name in PARTS)
    errors = logs["events"] if logs else []
    first_error = min((event.first_seen for event in errors if event.first_seen), default=None)
    verdicts = rank(
        deploys=deploys["deploys"] if deploys else [], deploy_files=deploys["suspect_files"] if deploys else {},
        probes=[r for r in probes["results"] if r.kind != "host"] if probes else [],
        host=host["results"] if host else [], errors=errors,
        endpoints={name: Endpoint(*endpoint(probe), name) for name, probe in ProbeSettings.of(service).probes.items()},
        first_error=first_error, started=incident.started_at if incident else None,
        suspect_window=DeploySettings.of(service).suspect_window, incident_id=incident.id if incident else None,
    ) if final or any(part.state == DONE for part in parts.values()) else []
    return {
        "service": service.name,
        "incident": incident,
        "final": final,
        "elapsed_seconds": round(elapsed, 1),
        "deadline_seconds": TriageSettings.of(ctx.config).deadline.total_seconds(),
        "parts": {name: {"state": part.state, "note": part.note, "took_ms": part.took_ms}
                  for name, part in parts.items()},
        "verdicts": verdicts,
        "impact_start": _impact_start(incident, first_error, logs["query"]["since"] if logs else None),
        "seen_before": _seen_before(ctx.store, service.name, incident, errors) if final else [],
        "deploys": deploys, "probes": probes, "logs": logs, "host": host,
    }


def _impact_start(incident: Incident | None, first_error: datetime | None,
                  read_from: datetime | None) -> dict[str, Any] | None:
    """The logs' first error, offered as the incident's start when it is a minute or more off.

    `read_from`: where the logs were read from; a first error that close to it may only be the
    first one read (`earlier_than_read` says so, and from when they were read).
    """
    if first_error is None:
        return None
    offer = None
    if incident is not None and abs(first_error - incident.started_at) >= IMPACT_OFFER_AFTER \
            and (incident.resolved_at is None or first_error <= incident.resolved_at):
        offer = f"/incident update #{incident.id} --started {to_iso(first_error)}"
    cut = read_from is not None and first_error - read_from < IMPACT_OFFER_AFTER
    return {"at": first_error, "set_started": offer, "read_from": read_from, "may_be_earlier": cut}


def _seen_before(store: Store, service: str, incident: Incident | None, errors: list[Any]) -> list[dict[str, Any]]:
    """Earlier incidents in whose triage or logs of this same service one of these errors'
    signatures was recorded."""
    signatures = {event.signature: event for event in errors}
    if not signatures:
        return []
    seen, found = [], set()
    for incident_id, signature in store.earlier_signatures(signatures, service, incident.id if incident else None):
        earlier = store.incident(incident_id)
        if earlier is None or incident_id in found:
            continue
        found.add(incident_id)
        seen.append({
            "incident": earlier, "exception": signatures[signature].exception,
            "time_to_resolve": earlier.time_to_resolve(earlier.started_at) if earlier.resolved_at else None,
        })
    return seen[:3]


def _card(ctx: Context, incident_id: int) -> Reply:
    """The incident's announcement, whose summary line now says the verdict."""
    from commands.incident import card_data  # /incident runs /triage at open: imported when used

    incident = ctx.store.incident(incident_id)
    assert incident is not None
    return Reply("incident_card", card_data(incident, ctx.now()), Audience.ANNOUNCE, incident_id)


def _record(ctx: Context, incident: Incident, data: dict[str, Any]) -> None:
    """One line (the most likely cause), and what every part found in the data."""
    from commands.deploys.query import entry_deploy
    from commands.logs.query import entry_events

    top: Verdict = data["verdicts"][0]
    ctx.store.update_incident(incident.id, verdict=top.summary)
    line = f"most likely {top.summary} (score {top.score})" if top.score else top.summary
    deploys, probes, logs = data["deploys"] or {}, data["probes"] or {}, data["logs"] or {}
    events = logs.get("events", [])
    suspects = [deploy for deploy in deploys.get("deploys", []) if deploy.suspect]
    ctx.record(incident, "triage", f"/triage {data['service']}: {line}", {
        "service": data["service"],
        "verdicts": data["verdicts"],
        "parts": data["parts"],
        "impact_start": data["impact_start"]["at"] if data["impact_start"] else None,
        "signatures": [event.signature for event in events],
        "seen_before": [item["incident"].id for item in data["seen_before"]],
        # What the parts found, in the shapes of their own entries (/deploys', /probe's, /logs').
        "suspects": [deploy.sha for deploy in suspects],
        "suspect_deploys": [entry_deploy(deploy) for deploy in suspects],
        "results": [*probes.get("results", []), *(data["host"] or {}).get("results", [])],
        "events": entry_events(events),
    })
