"""oncall.toml -> typed, validated settings: the frame's own sections, and each feature's.

The file's shape is a contract (../shared/DESIGN.md): keys are added, never renamed. Every problem
is one line naming the file, the key and what is wrong; an unknown key is an error, so a typo can
never silently disable a probe.

The frame reads `timezone`, `[slack]`, `[access]` and `[redaction]`. Everything else belongs to a
feature: a feature declares `Section`s (commands.sections() finds them) and `load` hands each one
its table: a `ServiceSection` reads its keys of every `[services.NAME]`, a `TableSection` its own
top-level table (`[triage]`). A key no section read is unknown, and the error suggests the nearest
key that was asked for, so features never list their keys twice.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import time, timedelta
from pathlib import Path
from typing import Any, ClassVar, NoReturn, Self, overload
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.redact import RedactionSettings, compile_pattern
from bot.times import TimeParseError, parse_duration

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_CONFIG_BYTES = 1 << 20
MAX_DEPTH = 16          # tables and arrays within each other; the deepest real key (expect_json) needs a few
MAX_MESSAGE = 300       # characters of a config error: one line, however long the value it quotes

_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
USERGROUP_ID = re.compile(r"^S[A-Z0-9]{2,}$")
CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SUMMARY_AT = re.compile(r"^(mon|tue|wed|thu|fri|sat|sun)\s+(\d{1,2}):(\d{2})$")
_REDACTION_KIND = re.compile(r"^[a-z][a-z0-9_]*$")


class ConfigError(Exception):
    """A bad config, said in one line: `file: key: what is wrong`."""


class Section:
    """A feature's settings: a frozen dataclass whose fields all have defaults (the embedded
    defaults, used when the file does not set them or there is no file)."""

    @classmethod
    def read(cls, table: Table) -> Self:
        """The settings from `table`; every key read through `table`'s getters, problems via `table.fail`."""
        raise NotImplementedError


@dataclass(frozen=True)
class ServiceSection(Section):
    """A feature's part of `[services.NAME]`: `Settings.of(service)` is that service's, `name` its name
    (so a feature passes its own view of a service around)."""

    name: str = ""

    @classmethod
    def of(cls, service: Service) -> Self:
        found = service.parts.get(cls)
        return found if isinstance(found, cls) else cls(name=service.name)


class TableSection(Section):
    """A feature's own top-level table (`TABLE`); `Settings.of(config)` is the configured one."""

    TABLE: ClassVar[str]

    @classmethod
    def of(cls, config: Config) -> Self:
        found = config.parts.get(cls)
        return found if isinstance(found, cls) else cls()


@dataclass(frozen=True)
class SlackSettings:
    incident_channel: str | None = None
    summary_channel: str | None = None
    summary_weekday: int = 0
    summary_time: time = time(9, 0)
    outbox_retention: timedelta = timedelta(days=30)    # sent messages are forgotten after this


@dataclass(frozen=True)
class AccessRule:
    """Who may run a command and where; an empty tuple means no restriction on that axis."""

    users: tuple[str, ...] = ()
    usergroups: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()


@dataclass(frozen=True)
class Service:
    """`[services.NAME]`: its name, and each feature's part of it (`Settings.of(service)`)."""

    name: str
    parts: Mapping[type[ServiceSection], ServiceSection] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    source: str = "embedded defaults"
    timezone: ZoneInfo = ZoneInfo("UTC")
    slack: SlackSettings = SlackSettings()
    access: dict[str, AccessRule] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    redaction: RedactionSettings = RedactionSettings()
    parts: Mapping[type[TableSection], TableSection] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """What `run --json` shows of the config (a help's data): where it came from and its zone, no secrets."""
        return {"source": self.source, "timezone": self.timezone.key}


def load(path: Path, commands: Iterable[str], sections: Iterable[type[Section]], *,
         required: bool = False) -> Config:
    """Read and validate `path`; a missing optional file gives the embedded defaults.

    `commands` are the registered command names ("incident"), which `[access]` keys must name;
    `sections` the features' settings (commands.sections()).
    """
    if not path.exists():
        if required:
            raise ConfigError(f"{path}: no such file (set ONCALL_CONFIG to the config's path)")
        return Config()
    try:
        data = tomllib.loads(_read(path))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    except RecursionError:
        raise ConfigError(f"{path}: tables or arrays nested too deeply") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot be read: {error}") from None
    if _depth(data) > MAX_DEPTH:
        raise ConfigError(f"{path}: tables or arrays nested more than {MAX_DEPTH} deep")
    return _parse(Table(data, "", str(path)), set(commands), tuple(sections))


def _read(path: Path) -> str:
    """A regular file's text, at most MAX_CONFIG_BYTES: never a device, a FIFO or a directory, whose
    reading would never end (/dev/zero) or never start (a FIFO nobody writes)."""
    if not stat.S_ISREG(path.stat().st_mode):
        raise ConfigError(f"{path}: not a regular file")
    with path.open("rb") as file:
        data = file.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES // 1024} KB; a config is a few KB")
    return data.decode("utf-8")


def _depth(data: Any) -> int:
    """How deep tables and arrays nest (without recursion: the data may be deeper than Python's stack)."""
    deepest, pending = 0, [(data, 0)]
    while pending:
        value, depth = pending.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            break
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        pending.extend((child, depth + 1) for child in children)
    return deepest


def _parse(root: Table, commands: set[str], sections: tuple[type[Section], ...]) -> Config:
    zone_name = root.string("timezone", "UTC")
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
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
    service_sections = [section for section in sections if issubclass(section, ServiceSection)]
    services = {}
    services_table = root.table("services")
    for name in services_table.keys():
        table = services_table.table(name)
        services[name] = Service(name, {section: replace(section.read(table), name=name)
                                        for section in service_sections})
        table.done()
    services_table.done()
    redaction = _parse_redaction(root.table("redaction"))
    parts: dict[type[TableSection], TableSection] = {}
    for section in sections:
        if issubclass(section, TableSection):
            table = root.table(section.TABLE)
            parts[section] = section.read(table)
            table.done()
    root.done()
    return Config(source=root.file, timezone=zone, slack=slack, access=access, services=services,
                  redaction=redaction, parts=parts)


def _parse_slack(table: Table) -> SlackSettings:
    incident_channel = table.slack_id("incident_channel", CHANNEL_ID, "channel ID like C0123ABCD")
    summary_channel = table.slack_id("summary_channel", CHANNEL_ID, "channel ID like C0123ABCD")
    summary_at = table.string("summary_at", "mon 09:00").strip().lower()
    match = _SUMMARY_AT.match(summary_at)
    if not match or int(match.group(2)) > 23 or int(match.group(3)) > 59:
        table.fail("summary_at", f"{summary_at!r} is not a weekday and time like \"mon 09:00\"")
    outbox_retention = table.duration("outbox_retention", timedelta(days=30))
    table.done()
    return SlackSettings(
        outbox_retention=outbox_retention,
        incident_channel=incident_channel,
        summary_channel=summary_channel,
        summary_weekday=WEEKDAYS.index(match.group(1)),
        summary_time=time(int(match.group(2)), int(match.group(3))),
    )


def _parse_access(table: Table) -> AccessRule:
    rule = AccessRule(
        users=table.slack_ids("users", _USER_ID, "user ID like U012AB3CD"),
        usergroups=table.slack_ids("usergroups", USERGROUP_ID, "user group ID like S0123ABCD"),
        channels=table.slack_ids("channels", CHANNEL_ID, "channel ID like C0123ABCD"),
    )
    table.done()
    return rule


def _parse_redaction(table: Table) -> RedactionSettings:
    patterns_table = table.table("patterns")
    patterns = []
    for kind in patterns_table.keys():
        if not _REDACTION_KIND.match(kind):
            patterns_table.fail(kind, "a kind is lowercase letters, digits and _ (it is shown as [redacted:kind])")
        pattern = patterns_table.required_string(kind, "must not be empty")
        try:
            compiled = compile_pattern(pattern)
        except ValueError as error:
            patterns_table.fail(kind, str(error))
        if compiled.search(""):
            patterns_table.fail(kind, "matches empty text; it must match the secret itself")
        patterns.append((kind, pattern))
    settings = RedactionSettings(patterns=tuple(patterns), emails=table.boolean("emails", False))
    table.done()
    return settings


def is_port(port: int | str) -> bool:
    return str(port).isdigit() and 1 <= int(port) <= 65535


class Table:
    """One TOML table being read: typed getters that fail with the key's full path.

    Every key a getter asks for is remembered, present or not: `done()` calls the keys nobody
    asked for unknown, and suggests the nearest asked-for (or `known`) one.
    """

    def __init__(self, data: Any, path: str, file: str):
        self.file = file
        self.path = path
        if not isinstance(data, dict):
            raise ConfigError(f"{file}: {path}: must be a table, not {type_name(data)}")
        self.data: dict[str, Any] = data
        self._asked: set[str] = set()

    def where(self, key: str) -> str:
        quoted = key if re.match(r"^[A-Za-z0-9_-]+$", key) else f'"{key}"'
        return f"{self.path}.{quoted}" if self.path else quoted

    def fail(self, key: str, problem: str) -> NoReturn:
        """One line, however long the value it quotes."""
        message = " ".join(f"{self.file}: {self.where(key)}: {problem}".split())
        raise ConfigError(message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE - 1] + "…")

    def keys(self) -> list[str]:
        return list(self.data)

    def has(self, key: str) -> bool:
        self._asked.add(key)
        return key in self.data

    def known(self, *keys: str) -> None:
        """Keys this table may hold that were not read (another kind's options): named in suggestions."""
        self._asked.update(keys)

    def _get(self, key: str) -> Any:
        self._asked.add(key)
        return self.data.get(key)

    def table(self, key: str) -> Table:
        value = self._get(key)
        return Table({} if value is None else value, self.where(key), self.file)

    @overload
    def string(self, key: str, default: str, *, expand_env: bool = False) -> str: ...

    @overload
    def string(self, key: str, default: None, *, expand_env: bool = False) -> str | None: ...

    def string(self, key: str, default: str | None, *, expand_env: bool = False) -> str | None:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            self.fail(key, f"must be a string, not {type_name(value)}")
        if not value.strip():
            self.fail(key, "must not be empty")
        return self._expand(key, value) if expand_env else value

    def required_string(self, key: str, problem: str, *, expand_env: bool = False) -> str:
        value = self.string(key, None, expand_env=expand_env)
        if value is None:
            self.fail(key, problem)
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.string(key, default)
        if value not in choices:
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
            self.fail(key, f"must be true or false, not {type_name(value)}")
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
            if key not in self._asked:
                hint = difflib.get_close_matches(key, sorted(self._asked - set(self.data)), n=1)
                suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
                self.fail(key, f"unknown key{suggestion}")


def type_name(value: Any) -> str:
    return {dict: "a table", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)
