"""postgres: connect and SELECT 1; connections in use against max_connections, the longest running
query, and replication lag on a replica.

libpq (and psycopg after it) raises a connect_timeout under 2 s to 2 s, so a 1 s probe of a server
that accepts and never answers is reported by the runner at 1 s while this thread ends at 2 s.
Queries get a server-side statement_timeout of the time left.
"""

from __future__ import annotations

import math
import re

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict

from bot.times import format_duration
from commands.probe.check import Check, Finding, host_port, percent
from commands.probe.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    ConnectionRefused,
    DnsFailure,
    InvalidTarget,
    ProbeError,
    ServerError,
    TlsError,
    TooManyConnections,
)

LIBPQ_MIN_CONNECT_TIMEOUT = 2
APPLICATION_NAME = "oncall-bot probe"

_STATS = """
SELECT
  (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend') AS connections,
  current_setting('max_connections')::int AS max_connections,
  (SELECT EXTRACT(EPOCH FROM max(clock_timestamp() - query_start))::float FROM pg_stat_activity
    WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid()) AS longest_query,
  pg_is_in_recovery() AS replica,
  CASE WHEN NOT pg_is_in_recovery() THEN NULL
       WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0.0
       ELSE EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float END AS replica_lag
"""

# libpq refusing an option of the DSN before it connects ("invalid sslmode value"): the config's error, not TLS
_INVALID_OPTION = re.compile(r"invalid \w+ value|invalid port number|invalid integer value|invalid connection option|"
                             r"invalid URI")

# libpq's and the server's words for failures that carry no SQLSTATE (they happen while connecting)
_MESSAGES: list[tuple[re.Pattern[str], type[ProbeError], str]] = [
    (re.compile(r"password authentication failed|authentication failed|role \"[^\"]*\" does not exist|"
                r"no pg_hba\.conf entry|password is required|permission denied for database", re.I),
     AuthenticationFailed, "login refused"),
    (re.compile(r"too many clients|remaining connection slots are reserved|too many connections", re.I),
     TooManyConnections, "no connection slot left: the pool is exhausted"),
    (re.compile(r"connection refused", re.I), ConnectionRefused, "refused the connection (nothing listening?)"),
    (re.compile(r"failed to resolve host|could not translate host name", re.I), DnsFailure, "cannot resolve the host"),
    (re.compile(r"SSL|certificate", re.I), TlsError, "TLS failed"),
    (re.compile(r"does not exist|starting up|shutting down|in recovery mode|not accepting connections", re.I),
     ServerError, "the server refused"),
]


def probe(check: Check) -> Finding:
    settings = check.probe
    try:
        params = conninfo_to_dict(settings.target)
    except psycopg.ProgrammingError as error:
        raise InvalidTarget(f"the DSN is invalid: {str(error).strip()}") from None
    host, port = str(params.get("host") or "local socket"), params.get("port") or 5432
    where = host_port(host, port) if not host.startswith("/") else host
    if "," not in host and str(port).isdigit():   # a list of hosts is libpq's to try in turn
        check.resolve(host, int(port))
    check.enter("connect", f"connecting and logging in to {where}")
    try:
        connect_timeout = max(LIBPQ_MIN_CONNECT_TIMEOUT, math.ceil(check.time_left(connecting=True)))
        with psycopg.connect(settings.target, autocommit=True, application_name=APPLICATION_NAME,
                             connect_timeout=connect_timeout) as conn:
            check.enter("read", f"waiting for SELECT 1 on {where}")
            statement_ms = max(1, int(check.time_left() * 1000))
            conn.execute("SELECT 1, set_config('statement_timeout', %s, false)", [str(statement_ms)]).fetchone()
            latency = check.elapsed()
            check.enter("read", f"reading connection statistics on {where}")
            stats = conn.execute(_STATS).fetchone()
            if stats is None:
                raise ServerError(f"{where}: no connection statistics")
            connections, max_connections, longest_query, replica, replica_lag = stats
    except pg_errors.ConnectionTimeout:
        raise check.timeout() from None
    except pg_errors.QueryCanceled:
        raise check.timeout() from None
    except psycopg.Error as error:
        raise _mapped(error, where) from None
    return _judge(check, latency, connections, max_connections, longest_query, replica, replica_lag)


def _judge(check: Check, latency: float, connections: int, max_connections: int, longest_query: float | None,
           replica: bool, replica_lag: float | None) -> Finding:
    settings = check.probe
    used = percent(connections, max_connections)
    facts = ["SELECT 1 ok", f"{connections}/{max_connections} connections"]
    warnings = []
    if used >= settings.connections_pct:
        warnings.append(f"{connections}/{max_connections} connections in use ({used}%): the pool is nearly exhausted")
    if longest_query is not None:
        facts.append(f"longest query running {format_duration(longest_query)}")
        if longest_query >= settings.query_age.total_seconds():
            warnings.append(f"a query has been running for {format_duration(longest_query)}")
    if replica:
        facts.append(f"replica, {format_duration(replica_lag or 0)} behind")
        if replica_lag is not None and replica_lag >= settings.replica_lag.total_seconds():
            warnings.append(f"replica {format_duration(replica_lag)} behind the primary")
    else:
        facts.append("primary")
    return Finding(latency=latency, facts=facts, warnings=warnings, metrics={
        "connections": connections, "max_connections": max_connections, "connections_pct": used,
        "longest_query_seconds": longest_query, "replica": replica, "replica_lag_seconds": replica_lag})


def _mapped(error: psycopg.Error, where: str) -> ProbeError:
    if error.sqlstate == "53300":
        return TooManyConnections(f"{where}: no connection slot left: the pool is exhausted")
    if error.sqlstate in ("28000", "28P01"):
        return AuthenticationFailed(f"{where}: login refused: {_server_words(error)}")
    text = str(error)
    if error.sqlstate is None and _INVALID_OPTION.search(text):
        return InvalidTarget(f"the DSN is invalid: {_server_words(error)}")
    for pattern, error_class, summary in _MESSAGES:
        if pattern.search(text):
            return error_class(f"{where}: {summary}: {_server_words(error)}")
    return ConnectionFailed(f"{where}: {_server_words(error)}")


def _server_words(error: psycopg.Error) -> str:
    """The useful line of libpq's message, without its "connection to server at … failed:" preamble."""
    text = str(error).split("\n")[0]
    text = re.sub(r'^connection (?:failed|is bad): |connection to server at "[^"]*"(, port \d+)? failed: ', "", text)
    return re.sub(r"^FATAL:\s+", "", text).strip()
