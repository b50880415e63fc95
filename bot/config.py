"""oncall.toml -> typed, validated settings.

The file's shape is a contract (../shared/DESIGN.md): keys are added, never renamed. Every problem
is one line naming the file, the key and what is wrong; an unknown key is an error, so a typo can
never silently disable a probe.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import time, timedelta
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.redact import RedactionSettings
from bot.times import TimeParseError, parse_duration

PROBE_KINDS = ("postgres", "mysql", "redis", "http", "tcp", "host")
DEPLOY_KINDS = ("merges", "commits")
LOG_FORMATS = ("auto", "json", "text", "access")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
_USERGROUP_ID = re.compile(r"^S[A-Z0-9]{2,}$")
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SUMMARY_AT = re.compile(r"^(mon|tue|wed|thu|fri|sat|sun)\s+(\d{1,2}):(\d{2})$")
# A repo is remote when it is a URL ("https://…", "file://…") or scp-like ("git@host:org/repo.git").
_REMOTE_REPO = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*://|[^/:]+:)")
REPO_SCHEMES = ("https", "http", "ssh", "git", "file")
_CAUSE_ID = re.compile(r"^[a-z][a-z0-9]*\.[a-z][a-z0-9_]*$")
_REDACTION_KIND = re.compile(r"^[a-z][a-z0-9_]*$")


class ConfigError(Exception):
    """A bad config, said in one line: `file: key: what is wrong`."""


@dataclass(frozen=True)
class SlackSettings:
    incident_channel: str | None = None
    summary_channel: str | None = None
    summary_weekday: int = 0
    summary_time: time = time(9, 0)


@dataclass(frozen=True)
class TriageSettings:
    deadline: timedelta = timedelta(seconds=15)   # all of /triage's parts together


@dataclass(frozen=True)
class AccessRule:
    """Who may run a command and where; an empty tuple means no restriction on that axis."""

    users: tuple[str, ...] = ()
    usergroups: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()


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


@dataclass(frozen=True)
class ServiceConfig:
    name: str
    repo: str | None = None
    branch: str = "main"
    deploy: str = "merges"
    paths: tuple[str, ...] = ()
    suspect_window: timedelta = timedelta(minutes=60)
    commit_url: str | None = None
    fetch_timeout: timedelta = timedelta(seconds=10)
    logs: tuple[str, ...] = ()
    log_command: tuple[str, ...] = ()
    log_format: str = "auto"
    app_paths: tuple[str, ...] = ()
    silence_causes: tuple[str, ...] = ()     # /logs cause ids (node.headers_sent) never suggested here
    probes: dict[str, ProbeConfig] = field(default_factory=dict)

    @property
    def repo_is_remote(self) -> bool:
        """A remote repo is mirrored before it is read; a local one is read in place."""
        return self.repo is not None and bool(_REMOTE_REPO.match(self.repo))


@dataclass(frozen=True)
class Config:
    source: str = "embedded defaults"
    timezone: ZoneInfo = ZoneInfo("UTC")
    slack: SlackSettings = SlackSettings()
    access: dict[str, AccessRule] = field(default_factory=dict)
    services: dict[str, ServiceConfig] = field(default_factory=dict)
    redaction: RedactionSettings = RedactionSettings()
    triage: TriageSettings = TriageSettings()

    def to_dict(self) -> dict[str, Any]:
        """What `run --json` shows of the config (a help's data): where it came from and its zone, no secrets."""
        return {"source": self.source, "timezone": self.timezone.key}


def load(path: Path, commands: Iterable[str], *, required: bool = False) -> Config:
    """Read and validate `path`; a missing optional file gives the embedded defaults.

    `commands` are the registered command names ("incident"), which `[access]` keys must name.
    """
    if not path.exists():
        if required:
            raise ConfigError(f"{path}: no such file (set ONCALL_CONFIG to the config's path)")
        return Config()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot be read: {error}") from None
    return _parse(_Table(data, "", str(path)), set(commands))


def _parse(root: _Table, commands: set[str]) -> Config:
    zone_name = root.string("timezone", "UTC")
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        root.fail("timezone", f"unknown time zone {zone_name!r} (use an IANA name like Europe/Berlin)")
    slack = _parse_slack(root.table("slack"))
    access = {}
    access_table = root.table("access")
    for key in access_table.keys():
        if not key.startswith("/") or key[1:] not in commands:
            known = ", ".join(f"/{name}" for name in sorted(commands))
            access_table.fail(key, f"not a command; [access] keys are commands: {known}")
        access[key[1:]] = _parse_access(access_table.table(key))
    access_table.done()
    services = {}
    services_table = root.table("services")
    for name in services_table.keys():
        services[name] = _parse_service(name, services_table.table(name))
    services_table.done()
    redaction = _parse_redaction(root.table("redaction"))
    triage_table = root.table("triage")
    triage = TriageSettings(deadline=triage_table.duration("deadline", TriageSettings.deadline))
    if triage.deadline > timedelta(seconds=25):
        triage_table.fail("deadline", "at most 25s: a command's whole answer must come within 30 s")
    triage_table.done()
    root.done()
    return Config(source=root.file, timezone=zone, slack=slack, access=access, services=services,
                  redaction=redaction, triage=triage)


def _parse_slack(table: _Table) -> SlackSettings:
    incident_channel = table.slack_id("incident_channel", _CHANNEL_ID, "channel ID like C0123ABCD")
    summary_channel = table.slack_id("summary_channel", _CHANNEL_ID, "channel ID like C0123ABCD")
    summary_at = table.string("summary_at", "mon 09:00").strip().lower()
    match = _SUMMARY_AT.match(summary_at)
    if not match or int(match.group(2)) > 23 or int(match.group(3)) > 59:
        table.fail("summary_at", f"{summary_at!r} is not a weekday and time like \"mon 09:00\"")
    table.done()
    return SlackSettings(
        incident_channel=incident_channel,
        summary_channel=summary_channel,
        summary_weekday=WEEKDAYS.index(match.group(1)),
        summary_time=time(int(match.group(2)), int(match.group(3))),
    )


def _parse_access(table: _Table) -> AccessRule:
    rule = AccessRule(
        users=table.slack_ids("users", _USER_ID, "user ID like U012AB3CD"),
        usergroups=table.slack_ids("usergroups", _USERGROUP_ID, "user group ID like S0123ABCD"),
        channels=table.slack_ids("channels", _CHANNEL_ID, "channel ID like C0123ABCD"),
    )
    table.done()
    return rule


def _parse_redaction(table: _Table) -> RedactionSettings:
    patterns_table = table.table("patterns")
    patterns = []
    for kind in patterns_table.keys():
        if not _REDACTION_KIND.match(kind):
            patterns_table.fail(kind, "a kind is lowercase letters, digits and _ (it is shown as [redacted:kind])")
        pattern = patterns_table.string(kind, None)
        try:
            compiled = re.compile(pattern)
        except re.error as error:
            patterns_table.fail(kind, f"not a valid regular expression: {error}")
        if compiled.search(""):
            patterns_table.fail(kind, "matches empty text; it must match the secret itself")
        patterns.append((kind, pattern))
    settings = RedactionSettings(patterns=tuple(patterns), emails=table.boolean("emails", False))
    table.done()
    return settings


def _parse_service(name: str, table: _Table) -> ServiceConfig:
    deploy = table.string("deploy", "merges")
    if deploy not in DEPLOY_KINDS and not (deploy.startswith("tags:") and len(deploy) > 5):
        table.fail("deploy", f"{deploy!r} is not one of merges, commits, \"tags:<glob>\"")
    probes_table = table.table("probes")
    probes = {probe: _parse_probe(probe, probes_table.table(probe)) for probe in probes_table.keys()}
    probes_table.done()
    paths = table.strings("paths")
    if any(path.startswith("/") for path in paths):
        table.fail("paths", "paths are relative to the repository's root, without a leading /")
    silence_causes = table.strings("silence_causes")
    for cause in silence_causes:
        if not _CAUSE_ID.match(cause):
            table.fail("silence_causes", f"{cause!r} is not a cause id like node.headers_sent (see /logs help)")
    service = ServiceConfig(
        name=name,
        repo=_parse_repo(table),
        branch=table.string("branch", "main"),
        deploy=deploy,
        paths=paths,
        suspect_window=table.duration("suspect_window", timedelta(minutes=60)),
        commit_url=_parse_commit_url(table),
        fetch_timeout=table.duration("fetch_timeout", timedelta(seconds=10)),
        logs=table.strings("logs"),
        log_command=table.strings("log_command"),
        log_format=table.choice("log_format", LOG_FORMATS, "auto"),
        app_paths=table.strings("app_paths"),
        silence_causes=silence_causes,
        probes=probes,
    )
    table.done()
    return service


def _parse_repo(table: _Table) -> str | None:
    """A remote URL as written, or a local path made absolute (relative to the config file)."""
    repo = table.string("repo", None, expand_env=True)
    if repo is None:
        return None
    if repo.startswith("-") or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*::", repo):
        table.fail("repo", f"{repo!r} is neither a path nor a URL (remote helpers like ext:: are refused)")
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", repo)
    if scheme and scheme.group(1).lower() not in REPO_SCHEMES:
        table.fail("repo", f"{scheme.group(1)}:// is not supported; use one of {', '.join(REPO_SCHEMES)}, "
                           "an scp-like git@host:path, or a local path")
    if _REMOTE_REPO.match(repo):
        return repo
    return os.path.abspath(Path(table.file).parent / Path(repo).expanduser())


def _parse_commit_url(table: _Table) -> str | None:
    url = table.string("commit_url", None)
    if url is not None and (not re.match(r"^https?://", url) or "{sha}" not in url):
        table.fail("commit_url", f"{url!r} is not an http(s) URL with {{sha}} in it, "
                                 "like https://github.com/acme/api/commit/{sha}")
    return url


_PROBE_TARGET_KEY = {"http": "url", "redis": "url", "postgres": "dsn", "mysql": "dsn", "tcp": "address"}
# The optional keys each kind reads; `kind` and `timeout` are for all.
_PROBE_KEYS: dict[str, tuple[str, ...]] = {
    "http": ("connect_timeout", "method", "expect_status", "expect_body", "expect_json", "headers", "ca_file",
             "degraded_ms", "tls_days"),
    "postgres": ("connect_timeout", "degraded_ms", "connections_pct", "query_age", "replica_lag"),
    "mysql": ("connect_timeout", "degraded_ms", "connections_pct"),
    "redis": ("connect_timeout", "ca_file", "degraded_ms", "connections_pct", "memory_pct", "replica_lag"),
    "tcp": ("connect_timeout", "degraded_ms"),
    "host": ("load_per_cpu", "memory_pct", "disk_pct", "files_pct", "mounts"),
}
HTTP_METHODS = ("GET", "HEAD", "POST", "OPTIONS")
MAX_PROBE_TIMEOUT = timedelta(seconds=20)
_URL_SCHEMES = {"http": ("http", "https"), "redis": ("redis", "rediss", "unix"),
                "postgres": ("postgresql", "postgres"), "mysql": ("mysql",)}
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


def _parse_probe(name: str, table: _Table) -> ProbeConfig:
    kind = table.choice("kind", PROBE_KINDS, None)
    if kind is None:
        table.fail("kind", f"missing; one of {', '.join(PROBE_KINDS)}")
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


def _probe_options(table: _Table, timeout: timedelta) -> dict[str, Any]:
    """The optional keys present in the table (the kind check has already refused foreign ones)."""
    options: dict[str, Any] = {}
    present = set(table.data)
    if "connect_timeout" in present:
        options["connect_timeout"] = table.duration("connect_timeout", timeout)
        if options["connect_timeout"] > timeout:
            table.fail("connect_timeout", f"longer than the timeout ({timeout.seconds}s), which bounds the whole probe")
    if "method" in present:
        options["method"] = table.choice("method", HTTP_METHODS, "GET")
    if "expect_status" in present:
        options["expect_status"] = table.integer("expect_status", 100, 599)
    if "expect_body" in present:
        options["expect_body"] = table.string("expect_body", None)
    if "expect_json" in present:
        options["expect_json"] = tuple(_flatten(table, "expect_json", table.table("expect_json").data))
        if not options["expect_json"]:
            table.fail("expect_json", 'must name at least one field, like { status = "ok" }')
    if "headers" in present:
        options["headers"] = _headers(table.table("headers"))
    if "ca_file" in present:
        options["ca_file"] = table.string("ca_file", None, expand_env=True)
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


def _flatten(table: _Table, key: str, data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """`{ checks = { db = "up" } }` and `{ "checks.db" = "up" }` -> [("checks.db", "up")]."""
    fields = []
    for name, value in data.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict):
            fields.extend(_flatten(table, key, value, f"{path}."))
        elif isinstance(value, (str, int, float, bool)):
            fields.append((path, value))
        else:
            table.fail(key, f"{path}: expected a string, number or boolean, not {_type_name(value)}")
    return fields


def _headers(table: _Table) -> tuple[tuple[str, str], ...]:
    headers = []
    for name in table.keys():
        if not _HEADER_NAME.match(name):
            table.fail(name, "is not a valid HTTP header name")
        value = table.string(name, None, expand_env=True)
        if "\n" in value or "\r" in value:
            table.fail(name, "must be one line")
        headers.append((name, value))
    return tuple(headers)


def _check_probe_target(table: _Table, probe: ProbeConfig) -> None:
    """The target's shape. The value is never echoed: it may hold a password from the environment."""
    if probe.kind == "tcp":
        address = re.match(r"^\[?[^\s\]]+\]?:(\d{1,5})$", probe.address)
        if not address:
            table.fail("address", f"{probe.address!r} is not host:port")
        if not _is_port(address[1]):
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
    parts = urlsplit(value)
    if not parts.netloc.rpartition("@")[2] and scheme.lower() != "unix":
        table.fail(key, f"the {scheme}:// URL names no host")
    try:
        port = parts.port
    except ValueError:   # not a number, or over 65535
        port = 0
    if port is not None and not _is_port(port):
        table.fail(key, "the port is not from 1 to 65535")


# libpq's options that take one of a few words; conninfo_to_dict checks option names, not values
_LIBPQ_CHOICES = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "gssencmode": ("disable", "prefer", "require"),
    "channel_binding": ("disable", "prefer", "require"),
    "target_session_attrs": ("any", "read-write", "read-only", "primary", "standby", "prefer-standby"),
}


def _check_libpq_dsn(table: _Table, key: str, dsn: str) -> None:
    """Parsed as libpq will parse it, without connecting (libpq would check the values only then)."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn)
    except ProgrammingError as error:
        table.fail(key, f"the DSN is invalid: {_libpq_complaint(error)}")
    if not all(_is_port(port) for port in str(params.get("port") or "").split(",") if port):
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


def _is_port(port: int | str) -> bool:
    return str(port).isdigit() and 1 <= int(port) <= 65535


class _Table:
    """One TOML table being read: typed getters that fail with the key's full path."""

    def __init__(self, data: Any, path: str, file: str):
        self.file = file
        self.path = path
        if not isinstance(data, dict):
            raise ConfigError(f"{file}: {path}: must be a table, not {_type_name(data)}")
        self.data: dict[str, Any] = data
        self._read: set[str] = set()

    def where(self, key: str) -> str:
        quoted = key if re.match(r"^[A-Za-z0-9_-]+$", key) else f'"{key}"'
        return f"{self.path}.{quoted}" if self.path else quoted

    def fail(self, key: str, problem: str) -> NoReturn:
        raise ConfigError(f"{self.file}: {self.where(key)}: {problem}")

    def keys(self) -> list[str]:
        return list(self.data)

    def _get(self, key: str) -> Any:
        self._read.add(key)
        return self.data.get(key)

    def table(self, key: str) -> _Table:
        value = self._get(key)
        return _Table({} if value is None else value, self.where(key), self.file)

    def string(self, key: str, default: str | None, *, expand_env: bool = False) -> str | None:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            self.fail(key, f"must be a string, not {_type_name(value)}")
        if not value.strip():
            self.fail(key, "must not be empty")
        return self._expand(key, value) if expand_env else value

    def choice(self, key: str, choices: tuple[str, ...], default: str | None) -> str | None:
        value = self.string(key, default)
        if value is not None and value not in choices:
            self.fail(key, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        value = self._get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            self.fail(key, "must be a list of non-empty strings")
        return tuple(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, not {_type_name(value)}")
        return value

    def integer(self, key: str, low: int, high: int) -> int:
        value = self._get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            self.fail(key, f"must be a whole number from {low} to {high}, not {value!r}")
        return value

    def number(self, key: str, low: float, high: float) -> float:
        value = self._get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
            self.fail(key, f"must be a number from {low:g} to {high:g}, not {value!r}")
        return float(value)

    def duration(self, key: str, default: timedelta) -> timedelta:
        value = self.string(key, None)
        if value is None:
            return default
        try:
            parsed = parse_duration(value)
        except TimeParseError as error:
            self.fail(key, str(error))
        if not parsed:
            self.fail(key, "must be longer than zero")
        return parsed

    def slack_id(self, key: str, pattern: re.Pattern[str], what: str) -> str | None:
        value = self.string(key, None)
        if value is not None and not pattern.match(value):
            self.fail(key, f"{value!r} is not a Slack {what}")
        return value

    def slack_ids(self, key: str, pattern: re.Pattern[str], what: str) -> tuple[str, ...]:
        values = self.strings(key)
        for value in values:
            if not pattern.match(value):
                self.fail(key, f"{value!r} is not a Slack {what}")
        return values

    def _expand(self, key: str, value: str) -> str:
        def lookup(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                self.fail(key, f"environment variable {name} is not set")
            return os.environ[name]

        return _ENV_REF.sub(lookup, value)

    def done(self) -> None:
        for key in self.data:
            if key not in self._read:
                known = [k for k in _KNOWN_KEYS.get(_shape(self.path), ()) if k not in self.data]
                hint = difflib.get_close_matches(key, known, n=1)
                suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
                self.fail(key, f"unknown key{suggestion}")


def _shape(path: str) -> str:
    """`services.api.probes.db` -> `services.*.probes.*`, to look up the keys a table may hold."""
    parts = re.findall(r'"[^"]*"|[^.]+', path)
    shape = []
    for index, part in enumerate(parts):
        shape.append("*" if index > 0 and parts[index - 1] in ("services", "probes", "access") else part)
    return ".".join(shape)


_KNOWN_KEYS: dict[str, tuple[str, ...]] = {
    "": ("timezone", "slack", "access", "services", "redaction", "triage"),
    "triage": ("deadline",),
    "redaction": ("patterns", "emails"),
    "slack": ("incident_channel", "summary_channel", "summary_at"),
    "access.*": ("users", "usergroups", "channels"),
    "services.*": tuple(f for f in ServiceConfig.__dataclass_fields__ if f != "name"),
    "services.*.probes.*": tuple(f for f in ProbeConfig.__dataclass_fields__ if f != "name"),
}
_ALL_PROBE_KEYS = {key for keys in _PROBE_KEYS.values() for key in keys}


def _type_name(value: Any) -> str:
    return {dict: "a table", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)
