"""Runs the probes of a request at once, each held to one deadline whatever its driver does.

Each probe runs on a thread of its own (a "flight"), so the threads of a request are exactly as
many as its probes: 20 targets, 5 of them hanging, take one timeout, not five, and never wait
for a shared executor's free worker. The asking thread waits for the flights until their limits:
the connect deadline while a flight is connecting, its total deadline after. A flight still
running past its limit is reported as timed out, in the phase it was in, and abandoned.

Abandoned work cannot pile up: a target has at most one flight at a time. A request that asks for
a target already in flight joins that flight (and its deadline) instead of starting another, so
a hanging target holds one thread however often people ask. Each driver's own timeouts are set
to the time left (plus a little grace, so the deadline is reported here first), which ends the
abandoned thread soon after; the flight threads are daemons, so none of them delays an exit.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bot.redact import excerpt
from commands.probe.check import Check, Finding
from commands.probe.errors import ProbeCrashed, ProbeError, Timeout
from commands.probe.kinds import kind
from commands.probe.redact import guard_driver_logs, redact, secrets_of
from commands.probe.settings import ProbeConfig

OK, DEGRADED, DOWN = "ok", "degraded", "down"
STATUS_ORDER = {DOWN: 0, DEGRADED: 1, OK: 2}
MAX_DETAIL_CHARS = 400

log = logging.getLogger(__name__)
guard_driver_logs()


@dataclass(frozen=True)
class Target:
    service: str
    probe: ProbeConfig

    @property
    def label(self) -> str:
        return f"{self.service}.{self.probe.name}"


@dataclass(frozen=True)
class ProbeResult:
    service: str
    target: str
    kind: str
    status: str                     # ok | degraded | down
    latency_ms: int                 # until the answer; for a failure, until it failed
    detail: str                     # what explains the status, passwords removed
    error: str | None = None        # the ProbeError class when down ("ConnectTimeout")
    metrics: dict[str, Any] = field(default_factory=dict)


def run_probes(targets: Iterable[Target], deadline: float) -> list[ProbeResult]:
    """Probe every target at once; none waits past its own timeout or `deadline` (monotonic).

    Results come failing first, then slowest first.
    """
    flights = [_board(target, deadline) for target in targets]
    verdicts: dict[_Flight, ProbeResult] = {}
    while pending := [flight for flight in flights if flight not in verdicts]:
        now = time.monotonic()
        for flight in pending:
            if flight.done.is_set() or now >= flight.limit(deadline):
                verdicts[flight] = flight.result(deadline)
        # Sleep until the next limit (a phase may move on meanwhile, and so its limit) or that flight's end.
        if pending := [flight for flight in pending if flight not in verdicts]:
            first = min(pending, key=lambda flight: flight.limit(deadline))
            first.done.wait(max(0.0, first.limit(deadline) - time.monotonic()))
    results = [verdicts[flight] for flight in flights]
    for result in results:
        if result.status != OK:
            log.info("probe %s.%s is %s: %s", result.service, result.target, result.status, result.detail)
    return sorted(results, key=lambda r: (STATUS_ORDER[r.status], -r.latency_ms, r.service, r.target))


class _Flight:
    def __init__(self, target: Target, deadline: float):
        started = time.monotonic()
        self.target = target
        self.check = Check(target.probe, started, min(started + target.probe.timeout.total_seconds(), deadline))
        self.secrets = secrets_of(target.probe)   # known before the drivers log anything
        self.done = threading.Event()
        self.outcome: Finding | ProbeError | None = None
        self.ended: float | None = None

    def fly(self) -> None:
        try:
            self.outcome = kind(self.target.probe.kind)(self.check)
        except ProbeError as error:
            self.outcome = error
        except Exception as error:
            self.outcome = self._crashed(error)
        finally:
            self.ended = time.monotonic()
            self.done.set()
            with _flights_lock:
                if _flights.get(self.target) is self:
                    del _flights[self.target]

    def _crashed(self, error: Exception) -> ProbeCrashed:
        log.warning("probe %s crashed: %s", self.target.label,
                    redact(f"{type(error).__name__}: {error}", self.secrets),
                    extra={"traceback": redact("".join(traceback.format_exception(error)), self.secrets)})
        return ProbeCrashed(f"the probe itself failed ({type(error).__name__}); the bot's log has the details")

    def limit(self, deadline: float) -> float:
        """When the asker gives up on this flight: its phase's limit, or the asker's own `deadline`."""
        return min(self.check.limit(), deadline)

    def result(self, deadline: float) -> ProbeResult:
        """What the flight found or, still in the air, the timeout of the phase it is stuck in."""
        probe = self.target.probe
        outcome = self.outcome if self.done.is_set() else self.check.timeout(self.limit(deadline))
        took = (self.ended or time.monotonic()) - self.check.started
        if isinstance(outcome, Finding):
            status, detail = _judge(probe, outcome)
            latency = took if outcome.latency is None else outcome.latency
            error_name, metrics = None, outcome.metrics
        else:
            status, detail, error_name, metrics = DOWN, str(outcome), type(outcome).__name__, {}
            latency = outcome.seconds if isinstance(outcome, Timeout) else took
        detail = excerpt(redact(detail, self.secrets), MAX_DETAIL_CHARS)   # the target's secrets, then all, then cut
        return ProbeResult(service=self.target.service, target=probe.name, kind=probe.kind, status=status,
                           latency_ms=round(latency * 1000), detail=detail, error=error_name, metrics=metrics)


def _judge(probe: ProbeConfig, finding: Finding) -> tuple[str, str]:
    """ok or degraded, and the detail: what made it degraded first, then what was seen."""
    warnings = list(finding.warnings)
    if finding.latency is not None:
        slow_ms = probe.degraded_ms or probe.timeout.total_seconds() * 1000 / 2
        if finding.latency * 1000 >= slow_ms:
            warnings.insert(0, f"slow: {finding.latency * 1000:.0f} ms (warning at {slow_ms:.0f} ms)")
    return (DEGRADED if warnings else OK), " · ".join([*warnings, *finding.facts])


_flights: dict[Target, _Flight] = {}
_flights_lock = threading.Lock()


def _board(target: Target, deadline: float) -> _Flight:
    """The target's flight in the air, or a new one."""
    with _flights_lock:
        flight = _flights.get(target)
        if flight is None:
            flight = _Flight(target, deadline)
            _flights[target] = flight
            # The copied context carries the request id into the flight's log lines.
            context = contextvars.copy_context()
            thread = threading.Thread(target=context.run, args=(flight.fly,), name=f"probe {target.label}",
                                      daemon=True)
            try:
                thread.start()
            except RuntimeError as error:   # the process is out of threads: say so, on this line only
                flight.outcome = ProbeCrashed(f"could not start the probe: {error}")
                flight.ended = time.monotonic()
                flight.done.set()
                del _flights[target]
        return flight


def flights_in_the_air() -> list[Target]:
    with _flights_lock:
        return list(_flights)
