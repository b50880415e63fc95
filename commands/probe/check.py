"""What a probe function gets (a `Check`: settings, deadline, phase) and returns (a `Finding`)."""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from commands.probe.errors import DnsFailure, Phase, Timeout
from commands.probe.settings import ProbeConfig

# Drivers get the time left plus this, so that on a hang the runner's deadline fires first and
# names the phase; the driver's own timeout then ends the abandoned thread just after.
GRACE_SECONDS = 0.25


@dataclass
class Finding:
    """What a probe that got an answer found; any warning makes it degraded."""

    latency: float | None                  # seconds until the target answered; None: not a latency probe
    facts: list[str]
    warnings: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


class Check:
    """One run of one probe: its settings, its deadlines, and the phase it is in (for timeouts).

    The probe's `timeout` is its total deadline; connecting (resolving, TCP, TLS, logging in) must
    also be done by `connect_timeout`, when that is shorter.
    """

    def __init__(self, probe: ProbeConfig, started: float, deadline: float):
        self.probe = probe
        self.started = started
        self.deadline = deadline
        connect_timeout = (probe.connect_timeout or probe.timeout).total_seconds()
        self.connect_deadline = min(started + connect_timeout, deadline)
        self.phase = Phase("connect", "starting")

    def enter(self, step: str, doing: str) -> None:
        self.phase = Phase(step, doing)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def limit(self) -> float:
        """When the current phase runs out of time."""
        return self.connect_deadline if self.phase.step == "connect" else self.deadline

    def time_left(self, *, connecting: bool = False) -> float:
        """The timeout to give a driver call made now (to connect, or for the rest of the probe)."""
        until = self.connect_deadline if connecting else self.deadline
        return max(0.0, until - time.monotonic()) + GRACE_SECONDS

    def timeout(self, at: float | None = None) -> Timeout:
        """The Timeout of the current phase, reached at `at` (default: the phase's limit)."""
        return Timeout.during(self.phase, max(0.0, (self.limit() if at is None else at) - self.started))

    def expired(self) -> bool:
        return time.monotonic() >= self.limit()

    def resolve(self, host: str, port: int) -> None:
        """Resolve `host` on its own, so that a DNS failure or hang is named as one."""
        if not host or host.startswith("/") or _is_ip(host):
            return
        self.enter("connect", f"resolving {host}")
        try:
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as error:
            raise DnsFailure(f"cannot resolve {host}: {error.strerror or error}") from None


def endpoint(probe: ProbeConfig) -> tuple[str | None, int | None]:
    """The host a probe connects to, and the port its config writes (None when implied, or for a
    socket or a probe that connects nowhere)."""
    if probe.address:
        host, _, written = probe.address.rpartition(":")
        return host.strip("[]"), int(written) if written.isdigit() else None
    if probe.kind == "postgres" and probe.dsn:
        import psycopg  # only for a postgres probe's endpoint: libpq parses its DSN
        from psycopg.conninfo import conninfo_to_dict

        try:
            params = conninfo_to_dict(probe.dsn)
        except psycopg.ProgrammingError:
            return None, None
        server, written_port = str(params.get("host") or ""), str(params.get("port") or "")
        if "," in server or server.startswith("/"):
            return None, None
        return server or None, int(written_port) if written_port.isdigit() else None
    target = probe.url or probe.dsn
    if not target:
        return None, None
    parts = urlsplit(target)
    try:
        return parts.hostname, parts.port
    except ValueError:
        return parts.hostname, None


def host_port(host: str, port: int | str) -> str:
    """`db:5432`, `[::1]:6379`: an IPv6 address in brackets, as in a URL."""
    host = host.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def percent(used: float, limit: float) -> int:
    return round(used * 100 / limit) if limit else 0
