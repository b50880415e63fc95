"""Why a probe says "down": one exception class per failure a person on call tells apart.

ProbeError
 ├── InvalidTarget           the URL or DSN itself cannot work: the driver refuses one of its options
 ├── DnsFailure              the host name does not resolve
 ├── ConnectionRefused       nothing listens on that port
 ├── ConnectionFailed        unreachable, reset, closed before answering, a protocol it cannot speak
 ├── Timeout                 no answer within the probe's one deadline; says in which phase
 │    ├── ConnectTimeout       resolving, connecting, TLS handshake, logging in
 │    └── ReadTimeout          waiting for the answer, reading the body
 ├── TlsError                the certificate is not trusted, expired, for another name; handshake failed
 ├── AuthenticationFailed    wrong password, unknown user, no access
 ├── TooManyConnections      the server refuses new connections: a pool is exhausted (a named 500 cause)
 ├── ServerError             the server answered with an error of its own (no such database, loading …)
 ├── WrongStatus             HTTP: not the expected status
 ├── BodyMismatch            HTTP: the body lacks the expected text or JSON field
 └── ProbeCrashed            a bug in the probe itself; logged, never raised past the command

Each kind maps its driver's low-level errors to the most specific class (`from_os_error` does the
part they share: errors of the socket and TLS layers). Messages are for people: short, and never
carrying a password (the runner scrubs them once more).
"""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Phase:
    """Where a probe is: `step` picks the Timeout class, `doing` completes "timed out … while …"."""

    step: str       # connect | read
    doing: str      # "connecting to db.internal:5432"


class ProbeError(Exception):
    """A probe's target is down; the message is the detail shown to people."""


class InvalidTarget(ProbeError):
    pass


class DnsFailure(ProbeError):
    pass


class ConnectionRefused(ProbeError):
    pass


class ConnectionFailed(ProbeError):
    pass


class Timeout(ProbeError):
    def __init__(self, seconds: float, phase: Phase):
        super().__init__(f"timed out after {_seconds(seconds)} while {phase.doing}")
        self.seconds = seconds
        self.phase = phase

    @staticmethod
    def during(phase: Phase, seconds: float) -> Timeout:
        return (ConnectTimeout if phase.step == "connect" else ReadTimeout)(seconds, phase)


class ConnectTimeout(Timeout):
    pass


class ReadTimeout(Timeout):
    pass


class TlsError(ProbeError):
    pass


class AuthenticationFailed(ProbeError):
    pass


class TooManyConnections(ProbeError):
    pass


class ServerError(ProbeError):
    pass


class WrongStatus(ProbeError):
    pass


class BodyMismatch(ProbeError):
    pass


class ProbeCrashed(ProbeError):
    pass


def causes(error: BaseException) -> Iterator[BaseException]:
    """The error and what it was raised from or during, outermost first (drivers wrap socket errors)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def from_os_error(error: BaseException, where: str) -> ProbeError | None:
    """The ProbeError for a socket or TLS error found in `error`'s chain; None when there is none.

    Timeouts are left to the caller, which knows the phase.
    """
    for cause in causes(error):
        if isinstance(cause, socket.gaierror):
            return DnsFailure(f"cannot resolve {where}: {cause.strerror or cause}")
        if isinstance(cause, ConnectionRefusedError):
            return ConnectionRefused(f"{where} refused the connection (nothing listening?)")
        if isinstance(cause, ssl.SSLCertVerificationError):
            return TlsError(f"TLS certificate of {where} not accepted: {cause.verify_message or cause.reason}")
        if isinstance(cause, ssl.SSLError):
            return TlsError(f"TLS handshake with {where} failed: {cause.reason or cause}")
        if isinstance(cause, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
            return ConnectionFailed(f"{where} closed the connection")
        if isinstance(cause, OSError) and not isinstance(cause, TimeoutError) and cause.errno in _UNREACHABLE:
            return ConnectionFailed(f"cannot reach {where}: {cause.strerror}")
    return None


def timed_out(error: BaseException) -> bool:
    return any(isinstance(cause, TimeoutError) for cause in causes(error))


_UNREACHABLE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EHOSTDOWN, errno.ENETDOWN, errno.EADDRNOTAVAIL}


def _seconds(seconds: float) -> str:
    return f"{seconds:.1f} s".replace(".0 s", " s")
