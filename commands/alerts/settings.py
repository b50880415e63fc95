"""`[alerts]`: where alerts come from (`[alerts.sources.NAME]`), which labels say the service and
the severity, which alerts open an incident, where they are posted, when a group reopens its incident."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from bot.config import CHANNEL_ID, Table, TableSection
from bot.redact import compile_pattern
from bot.store import SEVERITIES

KINDS = ("alertmanager", "grafana", "generic")
DEFAULT_SEVERITY_MAP = (("critical", 1), ("error", 2), ("high", 2), ("warning", 3), ("info", 4))
_SOURCE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class Source:
    """`[alerts.sources.NAME]`: POST /alerts/NAME takes `kind`'s payloads from whoever shows the
    bearer `token`, or HTTP basic auth's `username` and `password`."""

    name: str
    kind: str
    token: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        """What incidents it opens say they came from: "alertmanager:prom"."""
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class Matcher:
    """One table of `open_when`: every label it names must match its pattern, whole (RE2)."""

    patterns: tuple[tuple[str, Any], ...]     # (label, compiled pattern)

    def matches(self, labels: dict[str, str]) -> bool:
        return all(label in labels and pattern.fullmatch(labels[label]) is not None
                   for label, pattern in self.patterns)


@dataclass(frozen=True)
class AlertSettings(TableSection):
    TABLE = "alerts"

    sources: tuple[Source, ...] = ()
    service_label: str = "service"
    severity_label: str = "severity"
    severity_map: tuple[tuple[str, int], ...] = DEFAULT_SEVERITY_MAP
    open_when: tuple[Matcher, ...] | None = None     # None: every firing alert opens one
    channel: str | None = None                       # None: [slack] incident_channel
    reopen_within: timedelta = timedelta(hours=1)
    auto_resolve: bool = False

    @classmethod
    def read(cls, table: Table) -> AlertSettings:
        severity_map = cls.severity_map
        if table.has("severity_map"):
            mapping = table.table("severity_map")
            severity_map = tuple((value.lower(), mapping.integer(value, SEVERITIES[0], SEVERITIES[-1]))
                                 for value in mapping.keys())
            mapping.done()
        return cls(
            sources=_sources(table.table("sources")),
            service_label=table.string("service_label", cls.service_label),
            severity_label=table.string("severity_label", cls.severity_label),
            severity_map=severity_map,
            open_when=_open_when(table) if table.has("open_when") else None,
            channel=table.slack_id("channel", CHANNEL_ID, "channel ID like C0123ABCD"),
            reopen_within=table.duration("reopen_within", cls.reopen_within),
            auto_resolve=table.boolean("auto_resolve", cls.auto_resolve),
        )

    def source(self, name: str) -> Source | None:
        return next((source for source in self.sources if source.name == name), None)

    def severity(self, value: str | None) -> int | None:
        """The SEV a severity label's value maps to (any case); None when it maps to none."""
        return dict(self.severity_map).get(value.lower()) if value else None

    def opens(self, labels: dict[str, str]) -> bool:
        """Whether a firing alert with `labels` opens an incident."""
        return self.open_when is None or any(matcher.matches(labels) for matcher in self.open_when)


def _sources(table: Table) -> tuple[Source, ...]:
    sources = []
    for name in table.keys():
        if not _SOURCE_NAME.match(name):
            table.fail(name, "a source's name is lowercase letters, digits, - and _ (it is the path /alerts/NAME)")
        source = table.table(name)
        kind = source.required_string("kind", f"missing: one of {', '.join(KINDS)}")
        if kind not in KINDS:
            source.fail("kind", f"{kind!r} is not one of {', '.join(KINDS)}")
        token = source.string("token", None, expand_env=True)
        username = source.string("username", None, expand_env=True)
        password = source.string("password", None, expand_env=True)
        if token is not None and (username is not None or password is not None):
            source.fail("token", "a bearer token or a username and password, not both")
        if token is None and (username is None or password is None):
            source.fail("token" if username is None and password is None else ("password" if username else "username"),
                        "every source is authenticated: set token = \"${VAR}\", or username and password")
        source.done()
        sources.append(Source(name, kind, token, username, password))
    return tuple(sources)


def _open_when(table: Table) -> tuple[Matcher, ...]:
    value = table.data["open_when"]
    if not isinstance(value, list) or not all(isinstance(item, dict) and item for item in value):
        table.fail("open_when", 'must be a list of tables of label = "pattern", like [{ severity = "critical|error" }]')
    matchers = []
    for index, item in enumerate(value):
        where = f"item {index + 1}"
        patterns = []
        for label, pattern in item.items():
            if not isinstance(pattern, str) or not pattern:
                table.fail("open_when", f"{where}: {label}: must be a non-empty string (a pattern the label's value "
                                        "matches whole)")
            try:
                patterns.append((label, compile_pattern(pattern)))
            except ValueError as error:
                table.fail("open_when", f"{where}: {label}: {error}")
        matchers.append(Matcher(tuple(patterns)))
    return tuple(matchers)
