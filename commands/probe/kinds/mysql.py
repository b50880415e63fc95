"""mysql: connect and SELECT 1; Threads_connected against max_connections.

PyMySQL's connect_timeout covers only the TCP connect: a server that accepts and never sends its
greeting hangs it for ever unless read_timeout and write_timeout are set. So the TCP connect is
done here (its own phase), and every later read and write gets the time left.
"""

from __future__ import annotations

import socket
from urllib.parse import unquote, urlsplit

import pymysql
from pymysql.constants import ER

from commands.probe.check import Check, Finding, host_port, percent
from commands.probe.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    ProbeError,
    ServerError,
    TooManyConnections,
    from_os_error,
    timed_out,
)

DEFAULT_PORT = 3306
_AUTH_ERRORS = {ER.ACCESS_DENIED_ERROR, ER.DBACCESS_DENIED_ERROR, 1698}   # 1698: access denied, no password
_CONNECTION_LIMIT_ERRORS = {ER.CON_COUNT_ERROR, ER.TOO_MANY_USER_CONNECTIONS}


def probe(check: Check) -> Finding:
    parts = urlsplit(check.probe.target)
    host, port = parts.hostname or "localhost", parts.port or DEFAULT_PORT
    where = host_port(host, port)
    check.resolve(host, port)
    check.enter("connect", f"connecting to {where}")
    try:
        sock = socket.create_connection((host, port), timeout=check.time_left(connecting=True))
    except OSError as error:
        raise _mapped(error, check, where) from None
    io_timeout = check.time_left()
    conn = pymysql.Connection(
        host=host, port=port, user=unquote(parts.username or ""), password=unquote(parts.password or ""),
        database=unquote(parts.path.lstrip("/")) or None, read_timeout=io_timeout, write_timeout=io_timeout,
        autocommit=True, defer_connect=True)
    try:
        check.enter("read", f"waiting for the greeting and login of {where}")
        conn.connect(sock)
        with conn.cursor() as cursor:
            check.enter("read", f"waiting for SELECT 1 on {where}")
            cursor.execute("SELECT 1")
            cursor.fetchone()
            latency = check.elapsed()
            check.enter("read", f"reading connection statistics on {where}")
            cursor.execute("SELECT @@max_connections, VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS"
                           " WHERE VARIABLE_NAME = 'THREADS_CONNECTED'")
            stats = cursor.fetchone()
            if stats is None:
                raise ServerError(f"{where}: no connection statistics")
            max_connections, threads = stats
    except pymysql.MySQLError as error:
        raise _mapped(error, check, where) from None
    finally:
        if conn.open:
            conn.close()   # says goodbye, so the server does not count an aborted client
        sock.close()
    return _judge(check, latency, int(threads), int(max_connections))


def _judge(check: Check, latency: float, threads: int, max_connections: int) -> Finding:
    used = percent(threads, max_connections)
    warnings = []
    if used >= check.probe.connections_pct:
        warnings.append(f"{threads}/{max_connections} connections in use ({used}%): the pool is nearly exhausted")
    return Finding(latency=latency, facts=["SELECT 1 ok", f"{threads}/{max_connections} connections"],
                   warnings=warnings,
                   metrics={"connections": threads, "max_connections": max_connections, "connections_pct": used})


def _mapped(error: Exception, check: Check, where: str) -> ProbeError:
    if timed_out(error) or "timed out" in str(error):
        return check.timeout()
    code = error.args[0] if isinstance(error, pymysql.MySQLError) and error.args else None
    message = error.args[1] if isinstance(error, pymysql.MySQLError) and len(error.args) > 1 else str(error)
    if code in _AUTH_ERRORS:
        return AuthenticationFailed(f"{where}: login refused: {message}")
    if code in _CONNECTION_LIMIT_ERRORS:
        return TooManyConnections(f"{where}: no connection slot left: the pool is exhausted ({message})")
    cause = from_os_error(error, where)
    if cause is not None:
        return cause
    if isinstance(error, pymysql.OperationalError) and code in (2006, 2013):   # server gone, connection lost
        return ConnectionFailed(f"{where} closed the connection: {message}")
    if isinstance(error, pymysql.MySQLError) and isinstance(code, int) and code < 2000:   # a server error number
        return ServerError(f"{where}: {message}")
    return ConnectionFailed(f"{where}: {message}")
