"""/probe's part of `[services.NAME]`: the targets under `[services.NAME.probes.TARGET]`.

Each kind takes its target key (`url`, `dsn` or `address`) and its own options; a key of another
kind is refused naming the kinds that take it. The target is checked for shape here, never echoed:
it may hold a password from the environment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bot.config import ServiceSection, Table, is_port, type_name

PROBE_KINDS = ("postgres", "mysql", "redis", "http", "tcp", "host")


@dataclass(frozen=True)
class ProbeConfig:
    """One probe target. Hashable, so a probe in flight is found by its settings (commands/probe)."""

    name: str
    kind: str
    url: str | None = field(default=None, repr=False)          # may hold a password from ${VAR}
    dsn: str | None = field(default=None, repr=False)
    address: str | None = None
    timeout: timedelta = timedelta(seconds=2)
    expect_status: int | None = None
    connect_timeout: timedelta | None = None                     # None: the timeout
    method: str = "GET"
    expect_body: str | None = None
    expect_json: tuple[tuple[str, str | int | float | bool], ...] = ()    # (dotted path, value)
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    ca_file: str | None = None
    degraded_ms: int | None = None                               # None: half the timeout
    tls_days: int = 14
    connections_pct: int = 80
    query_age: timedelta = timedelta(minutes=5)
    replica_lag: timedelta = timedelta(seconds=30)
    memory_pct: int = 90
    disk_pct: int = 90
    files_pct: int = 80
    load_per_cpu: float = 2.0
    mounts: tuple[str, ...] = ()
    follow_redirects: str = "host"        # http: within the url's scheme, host and port only; "any": anywhere

    @property
    def target(self) -> str:
        """What a probe of this kind reaches: its url, dsn or address (the config requires it)."""
        value = self.url or self.dsn or self.address
        if value is None:
            raise ValueError(f"a {self.kind} probe has no target")
        return value


@dataclass(frozen=True)
class ProbeSettings(ServiceSection):
    probes: dict[str, ProbeConfig] = field(default_factory=dict)

    @classmethod
    def read(cls, table: Table) -> ProbeSettings:
        probes_table = table.table("probes")
        probes = {name: _probe(name, probes_table.table(name)) for name in probes_table.keys()}
        probes_table.done()
        return cls(probes=probes)


_PROBE_TARGET_KEY = {"http": "url", "redis": "url", "postgres": "dsn", "mysql": "dsn", "tcp": "address"}
# The optional keys each kind reads; `kind` and `timeout` are for all.
_PROBE_KEYS: dict[str, tuple[str, ...]] = {
    "http": ("connect_timeout", "method", "expect_status", "expect_body", "expect_json", "headers", "ca_file",
             "degraded_ms", "tls_days", "follow_redirects"),
    "postgres": ("connect_timeout", "degraded_ms", "connections_pct", "query_age", "replica_lag"),
    "mysql": ("connect_timeout", "degraded_ms", "connections_pct"),
    "redis": ("connect_timeout", "ca_file", "degraded_ms", "connections_pct", "memory_pct", "replica_lag"),
    "tcp": ("connect_timeout", "degraded_ms"),
    "host": ("load_per_cpu", "memory_pct", "disk_pct", "files_pct", "mounts"),
}
_ALL_PROBE_KEYS = {key for keys in _PROBE_KEYS.values() for key in keys}
HTTP_METHODS = ("GET", "HEAD", "POST", "OPTIONS")
REDIRECTS = ("host", "any")
MAX_PROBE_TIMEOUT = timedelta(seconds=20)
_URL_SCHEMES = {"http": ("http", "https"), "redis": ("redis", "rediss", "unix"),
                "postgres": ("postgresql", "postgres"), "mysql": ("mysql",)}
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


def _probe(name: str, table: Table) -> ProbeConfig:
    if not table.has("kind"):
        table.fail("kind", f"missing; one of {', '.join(PROBE_KINDS)}")
    kind = table.choice("kind", PROBE_KINDS, "")
    table.known(*_PROBE_KEYS[kind])
    target_key = _PROBE_TARGET_KEY.get(kind)
    values: dict[str, Any] = {}
    for key in ("url", "dsn", "address"):
        if key == target_key:
            values[key] = table.string(key, None, expand_env=True)
            if values[key] is None:
                table.fail(key, f"missing; a {kind} probe needs {key}")
        elif key in table.data:
            table.fail(key, f"not used by a {kind} probe" + (f" (it takes {target_key})" if target_key else ""))
    for key in table.data:
        if key in _ALL_PROBE_KEYS and key not in _PROBE_KEYS[kind]:
            *others, last = [k for k, keys in _PROBE_KEYS.items() if key in keys]
            takers = f"{', '.join(others)} and {last}" if others else last
            table.fail(key, f"only {takers} probes take {key}, not {kind}")
    timeout = table.duration("timeout", timedelta(seconds=2))
    if timeout > MAX_PROBE_TIMEOUT:
        table.fail("timeout", f"at most {MAX_PROBE_TIMEOUT.seconds}s: a probe answers in chat")
    values.update(_probe_options(table, timeout))
    probe = ProbeConfig(name=name, kind=kind, timeout=timeout, **values)
    table.done()
    _check_probe_target(table, probe)
    return probe


def _probe_options(table: Table, timeout: timedelta) -> dict[str, Any]:
    """The optional keys present in the table (the kind check has already refused foreign ones)."""
    options: dict[str, Any] = {}
    present = set(table.data)
    if "connect_timeout" in present:
        options["connect_timeout"] = table.duration("connect_timeout", timeout)
        if options["connect_timeout"] > timeout:
            table.fail("connect_timeout", f"longer than the timeout ({timeout.seconds}s), which bounds the whole probe")
    if "method" in present:
        options["method"] = table.choice("method", HTTP_METHODS, "GET")
    if "follow_redirects" in present:
        options["follow_redirects"] = table.choice("follow_redirects", REDIRECTS, "host")
    if "expect_status" in present:
        options["expect_status"] = table.integer("expect_status", 100, 599)
    if "expect_body" in present:
        options["expect_body"] = table.required_string("expect_body", "must not be empty")
    if "expect_json" in present:
        options["expect_json"] = tuple(_flatten(table, "expect_json", table.table("expect_json").data))
        if not options["expect_json"]:
            table.fail("expect_json", 'must name at least one field, like { status = "ok" }')
    if "headers" in present:
        options["headers"] = _headers(table.table("headers"))
    if "ca_file" in present:
        options["ca_file"] = table.required_string("ca_file", "must not be empty", expand_env=True)
        if not Path(options["ca_file"]).is_file():
            table.fail("ca_file", f"{options['ca_file']!r} is not a file")
    if "degraded_ms" in present:
        timeout_ms = int(timeout.total_seconds() * 1000)
        options["degraded_ms"] = table.integer("degraded_ms", 1, timeout_ms - 1)
    for key, low, high in (("tls_days", 1, 365), ("connections_pct", 1, 100), ("memory_pct", 1, 100),
                           ("disk_pct", 1, 100), ("files_pct", 1, 100)):
        if key in present:
            options[key] = table.integer(key, low, high)
    for key in ("query_age", "replica_lag"):
        if key in present:
            options[key] = table.duration(key, timedelta(0))
    if "load_per_cpu" in present:
        options["load_per_cpu"] = table.number("load_per_cpu", 0.01, 1000)
    if "mounts" in present:
        options["mounts"] = table.strings("mounts")
        for mount in options["mounts"]:
            if not mount.startswith("/"):
                table.fail("mounts", f"{mount!r} is not an absolute path")
    if options.get("method") == "HEAD":
        for key in ("expect_body", "expect_json"):
            if key in options:
                table.fail(key, "a HEAD response has no body; use GET to check it")
    return options


def _flatten(table: Table, key: str, data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """`{ checks = { db = "up" } }` and `{ "checks.db" = "up" }` -> [("checks.db", "up")]."""
    fields = []
    for name, value in data.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict):
            fields.extend(_flatten(table, key, value, f"{path}."))
        elif isinstance(value, (str, int, float, bool)):
            fields.append((path, value))
        else:
            table.fail(key, f"{path}: expected a string, number or boolean, not {type_name(value)}")
    return fields


def _headers(table: Table) -> tuple[tuple[str, str], ...]:
    headers = []
    for name in table.keys():
        if not _HEADER_NAME.match(name):
            table.fail(name, "is not a valid HTTP header name")
        value = table.required_string(name, "must not be empty", expand_env=True)
        if "\n" in value or "\r" in value:
            table.fail(name, "must be one line")
        headers.append((name, value))
    return tuple(headers)


def _check_probe_target(table: Table, probe: ProbeConfig) -> None:
    """The target's shape. The value is never echoed: it may hold a password from the environment."""
    if probe.kind == "tcp":
        address = re.match(r"^\[?[^\s\]]+\]?:(\d{1,5})$", probe.target)
        if not address:
            table.fail("address", f"{probe.address!r} is not host:port")
        if not is_port(address[1]):
            table.fail("address", f"port {address[1]} is not from 1 to 65535")
        return
    if probe.kind == "host":
        return
    key = _PROBE_TARGET_KEY[probe.kind]
    value = getattr(probe, key)
    schemes = _URL_SCHEMES[probe.kind]
    scheme, separator, _ = value.partition("://")
    is_libpq_keywords = probe.kind == "postgres" and not separator and "=" in value   # host=… dbname=…
    if not is_libpq_keywords and (not separator or scheme.lower() not in schemes):
        table.fail(key, f"must be a {' or '.join(s + '://' for s in schemes)} URL")
    if probe.kind == "postgres":
        _check_libpq_dsn(table, key, value)
        return
    if probe.ca_file and scheme.lower() not in ("https", "rediss"):
        table.fail("ca_file", f"a CA is for TLS: the {key} must be https:// or rediss://")
    try:
        parts = urlsplit(value)
    except ValueError as error:      # http://[::1/ : an IPv6 address left open
        table.fail(key, f"not a valid URL: {error}")
    if not parts.netloc.rpartition("@")[2] and scheme.lower() != "unix":
        table.fail(key, f"the {scheme}:// URL names no host")
    try:
        port = parts.port
    except ValueError:   # not a number, or over 65535
        port = 0
    if port is not None and not is_port(port):
        table.fail(key, "the port is not from 1 to 65535")


# libpq's options that take one of a few words; conninfo_to_dict checks option names, not values
_LIBPQ_CHOICES = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "gssencmode": ("disable", "prefer", "require"),
    "channel_binding": ("disable", "prefer", "require"),
    "target_session_attrs": ("any", "read-write", "read-only", "primary", "standby", "prefer-standby"),
}


def _check_libpq_dsn(table: Table, key: str, dsn: str) -> None:
    """Parsed as libpq will parse it, without connecting (libpq would check the values only then)."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn)
    except ProgrammingError as error:
        table.fail(key, f"the DSN is invalid: {_libpq_complaint(error)}")
    if not all(is_port(port) for port in str(params.get("port") or "").split(",") if port):
        table.fail(key, "the port is not from 1 to 65535")
    for option, choices in _LIBPQ_CHOICES.items():
        if option in params and params[option] not in choices:
            table.fail(key, f"the DSN is invalid: {option} must be one of {', '.join(choices)}")


def _libpq_complaint(error: Exception) -> str:
    """libpq's words, without the part of the DSN it quotes (a value, or the whole URI with its password),
    unless that part is the name of an option."""
    text = str(error).strip().splitlines()[0]
    if re.match(r"invalid (?:connection option|URI query parameter)", text):
        return text
    return re.sub(r'"([^"]*)"', lambda quoted: quoted[0] if len(quoted[1]) < 2 else '"…"', text)   # keeps "=", "]"
