"""One module per probe kind, each with `probe(check) -> Finding` that raises a ProbeError when down."""

from __future__ import annotations

from collections.abc import Callable

from commands.probe.check import Check, Finding
from commands.probe.kinds import host, http, mysql, postgres, redis, tcp

KINDS: dict[str, Callable[[Check], Finding]] = {
    "http": http.probe, "postgres": postgres.probe, "mysql": mysql.probe, "redis": redis.probe,
    "tcp": tcp.probe, "host": host.probe,
}
