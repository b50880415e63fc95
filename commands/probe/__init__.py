"""/probe: is it us, the database, Redis or an API?

`/probe api` runs every probe configured for the service at once, `/probe api db` one of them,
`/probe all` every probe of every service; bare `/probe` in an incident channel probes the
incident's service. One line per target (ok, degraded or down, latency, the detail that explains
it), failing and slowest first; about an incident, the run is also a timeline event.

Users name services and targets only; the URLs, DSNs and addresses are the config's
(`[services.NAME.probes.TARGET]`). How probes run concurrently under one deadline each is
`runner.py`; what each kind checks is `kinds/`; the failure classes are `errors.py`.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.args import parse_args
from bot.command import Audience, Command, CommandError, Context, Need, Reply, UsageError
from bot.config import Config
from bot.store import Incident
from commands.probe.settings import PROBE_KINDS, ProbeConfig, ProbeSettings

if TYPE_CHECKING:
    from commands.probe.runner import ProbeResult, Target

SETTINGS = (ProbeSettings,)

ALL = "all"
ENTRY_NAMED = 3             # failing targets the timeline's one line names
REPLY_MARGIN_SECONDS = 1.0  # left of the command's deadline to render and post the answer


@dataclass(frozen=True)
class ProbeArgs:
    service: str | None = None      # None: the incident's service
    target: str | None = None
    incident: int | None = None


def parse(text: str) -> ProbeArgs:
    args = parse_args(text, {})
    if len(args.words) > 2:
        raise UsageError(f"Name one service and at most one of its targets, not {' '.join(args.words)!r}.")
    service = args.words[0] if args.words else None
    target = args.words[1] if len(args.words) == 2 else None
    if service == ALL and target is not None:
        raise UsageError(f"/probe all takes no target; for one target: /probe <service> {target}.")
    return ProbeArgs(service=service, target=target, incident=args.incident)


def run(ctx: Context, args: ProbeArgs) -> Reply:
    from commands.probe.runner import DEGRADED, DOWN, OK, run_probes  # the probing, loaded when it probes

    incident = _incident(ctx, args)
    service = args.service or _incident_service(ctx, incident)
    targets = _targets(ctx, service, args.target)
    incident = ctx.incident_about(incident, [target.service for target in targets], args.incident)
    scope = " ".join(part for part in (service, args.target) if part)
    started = time.monotonic()
    results = run_probes(targets, ctx.deadline - REPLY_MARGIN_SECONDS)
    counts = Counter(result.status for result in results)
    data = {
        "scope": scope,
        "results": results,
        "counts": {status: counts[status] for status in (DOWN, DEGRADED, OK)},
        "checked_at": ctx.now(),
        "took_ms": round((time.monotonic() - started) * 1000),
        "rerun": f"/probe {scope}",
        "incident_id": incident.id if incident else None,
    }
    if incident is None:
        return Reply("probe", data, Audience.CALLER)
    ctx.record(incident, "probe", f"/probe {scope}: {entry_line(results)}",
               {"scope": scope, "counts": data["counts"], "results": results})
    return Reply("probe", data, Audience.THREAD, incident_id=incident.id)


def entry_line(results: list[ProbeResult]) -> str:
    """The timeline's line of a probe: counts by status, the failing targets named ("1 down (web/db), 2 ok")."""
    from commands.probe.runner import DEGRADED, DOWN, OK

    parts = []
    for status in (DOWN, DEGRADED, OK):
        hit = [result for result in results if result.status == status]
        if not hit:
            continue
        named = ", ".join(f"{r.service}/{r.target}" for r in hit[:ENTRY_NAMED])
        named += ", …" if len(hit) > ENTRY_NAMED else ""
        parts.append(f"{len(hit)} {status}" + (f" ({named})" if status != OK else ""))
    return ", ".join(parts) or "nothing probed"


def _incident(ctx: Context, args: ProbeArgs) -> Incident | None:
    """The incident the probe is about: `#N`, else the channel's open one, if any."""
    if args.incident is not None:
        return ctx.incident(args.incident)
    try:
        return ctx.incident(None, required=False)
    except CommandError:
        if args.service is None:
            raise
        return None   # several incidents open here: /probe <service> does not need to pick one


_WITH_PROBES = Need(lambda service: bool(ProbeSettings.of(service).probes), "probes", "no probes",
                    "add [services.{name}.probes.TARGET] to the config")


def _incident_service(ctx: Context, incident: Incident | None) -> str:
    if incident is not None and incident.service:
        return incident.service
    if incident is not None:
        hint = f"/probe {' | '.join([*_probed(ctx.config), ALL])}" if _probed(ctx.config) else "/probe <service>"
        raise CommandError(f"Incident #{incident.id} has no service; name one: {hint}, "
                           "or set it with /incident update --service NAME.")
    return ctx.service(None, "probe", _WITH_PROBES).name


def _targets(ctx: Context, service: str, target: str | None) -> list[Target]:
    from commands.probe.runner import Target

    config = ctx.config
    if service == ALL:
        probed = _probed(config) or [ctx.service(None, "probe", _WITH_PROBES).name]   # says that none has any
        return [Target(name, probe) for name in probed for probe in _probes(config, name).values()]
    probes = ProbeSettings.of(ctx.service(service, "probe", _WITH_PROBES)).probes
    if target is None:
        return [Target(service, probe) for probe in probes.values()]
    if target not in probes:
        raise UsageError(f"{service} has no probe {target!r}; its probes: {', '.join(probes)}.")
    return [Target(service, probes[target])]


def _probes(config: Config, service: str) -> dict[str, ProbeConfig]:
    return ProbeSettings.of(config.services[service]).probes


def _probed(config: Config) -> list[str]:
    return [name for name in config.services if _probes(config, name)]


COMMAND = Command(
    name="probe",
    description="Is it us, the database, Redis or an API? Probe a service's dependencies",
    usage="[<service> [<target>] | all]",
    parse=parse,
    run=run,
    help_data=lambda config: {"kinds": PROBE_KINDS,
                              "probed": {name: _probes(config, name) for name in _probed(config)}},
)
