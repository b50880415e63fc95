"""redis: PING; memory against maxmemory, clients against maxclients, evicted keys, role and replication.

redis-py retries a timed-out command by default (with backoff: a 2 s socket timeout became 26 s),
so the connection is built with no retry at all, and timeouts no longer than the time left.
Settings in the URL's query cannot loosen them: ours are applied last.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.retry import Retry

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

DEFAULT_PORT = 6379


def probe(check: Check) -> Finding:
    settings = check.probe
    options = parse_url(settings.url)
    where = options.get("path") or host_port(options.get("host", "localhost"), options.get("port", DEFAULT_PORT))
    if "host" in options:
        check.resolve(options["host"], options.get("port", DEFAULT_PORT))
    options.update(socket_timeout=check.time_left(), socket_connect_timeout=check.time_left(connecting=True),
                   retry=Retry(NoBackoff(), 0),
                   retry_on_error=[], health_check_interval=0, max_connections=1)
    if settings.ca_file:   # the config allows it with rediss:// only
        options["ssl_ca_certs"] = settings.ca_file
    pool = redis.ConnectionPool(**options)
    client = redis.Redis(connection_pool=pool)
    try:
        check.enter("connect", f"connecting and logging in to {where}")
        pool.release(pool.get_connection())
        check.enter("read", f"waiting for PING on {where}")
        client.ping()
        latency = check.elapsed()
        check.enter("read", f"reading INFO on {where}")
        info = client.info()
    except redis.RedisError as error:
        raise _mapped(error, check, where) from None
    finally:
        pool.disconnect()
    return _judge(check, latency, info)


def _judge(check: Check, latency: float, info: dict[str, Any]) -> Finding:
    settings = check.probe
    facts, warnings = ["PING ok"], []
    used_memory, max_memory = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
    memory_pct = percent(used_memory, max_memory) if max_memory else None
    if memory_pct is None:
        facts.append(f"memory {_size(used_memory)} (no maxmemory)")
    else:
        facts.append(f"memory {_size(used_memory)} of {_size(max_memory)} ({memory_pct}%)")
        if memory_pct >= settings.memory_pct:
            warnings.append(f"memory {memory_pct}% of maxmemory ({info.get('maxmemory_policy', '?')})")
    clients, max_clients = int(info.get("connected_clients", 0)), int(info.get("maxclients", 0))
    clients_pct = percent(clients, max_clients) if max_clients else None
    facts.append(f"{clients}/{max_clients} clients" if max_clients else f"{clients} clients")
    if clients_pct is not None and clients_pct >= settings.connections_pct:
        warnings.append(f"{clients}/{max_clients} clients connected ({clients_pct}%)")
    evicted = int(info.get("evicted_keys", 0))
    facts.append(f"{evicted} evicted keys since start")
    role = info.get("role", "master")
    replica_lag = None
    if role == "slave":
        link = info.get("master_link_status", "down")
        replica_lag = info.get("master_last_io_seconds_ago")
        facts.append(f"replica of {info.get('master_host')}:{info.get('master_port')}, link {link}")
        if link != "up":
            warnings.append("replica: the link to its master is down")
        elif replica_lag is not None and replica_lag >= settings.replica_lag.total_seconds():
            warnings.append(f"replica: no word from its master for {replica_lag} s")
    else:
        facts.append(f"master, {info.get('connected_slaves', 0)} replicas")
    return Finding(latency=latency, facts=facts, warnings=warnings, metrics={
        "used_memory": used_memory, "maxmemory": max_memory, "memory_pct": memory_pct,
        "connected_clients": clients, "maxclients": max_clients, "evicted_keys": evicted, "role": role,
        "replica_lag_seconds": replica_lag})


def _mapped(error: redis.RedisError, check: Check, where: str) -> ProbeError:
    if isinstance(error, redis.TimeoutError) or timed_out(error):
        return check.timeout()
    if isinstance(error, redis.AuthenticationError):
        return AuthenticationFailed(f"{where}: login refused: {error}")
    if "max number of clients" in str(error):
        return TooManyConnections(f"{where}: no connection slot left: max number of clients reached")
    if isinstance(error, redis.BusyLoadingError):
        return ServerError(f"{where}: still loading its dataset into memory")
    if isinstance(error, redis.ResponseError):
        return ServerError(f"{where}: {error}")
    return from_os_error(error, where) or ConnectionFailed(f"{where}: {error}")


def _size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"
