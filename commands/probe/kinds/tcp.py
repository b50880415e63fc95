"""tcp: connect to host:port, nothing more."""

from __future__ import annotations

import socket

from commands.probe.check import Check, Finding, host_port
from commands.probe.errors import ConnectionFailed, ProbeError, from_os_error, timed_out


def probe(check: Check) -> Finding:
    host, port = split_address(check.probe.target)
    where = host_port(host, port)
    check.resolve(host, port)
    check.enter("connect", f"connecting to {where}")
    try:
        socket.create_connection((host, port), timeout=check.time_left(connecting=True)).close()
    except OSError as error:
        raise _mapped(error, check, where) from None
    return Finding(latency=check.elapsed(), facts=[f"{where} accepts connections"])


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _mapped(error: OSError, check: Check, where: str) -> ProbeError:
    if timed_out(error):
        return check.timeout()
    return from_os_error(error, where) or ConnectionFailed(f"cannot connect to {where}: {error.strerror or error}")
