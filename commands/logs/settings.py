"""/logs' part of `[services.NAME]`: where a service's logs come from (its sources, each read by a
module of commands/logs/sources/ from its own keys: `logs` and `log_links_outside` for files,
`log_command` for a command; `source` picks one), how they are written (format, time zone), and
which causes never to suggest for it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.config import ServiceSection, Table

LOG_FORMATS = ("auto", "json", "text", "access")


@dataclass(frozen=True)
class LogSettings(ServiceSection):
    sources: dict[str, Any] = field(default_factory=dict)   # source kind -> its settings, in reading order
    log_format: str = "auto"
    log_timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))   # for times written without a zone
    app_paths: tuple[str, ...] = ()
    silence_causes: tuple[str, ...] = ()     # cause ids (node.headers_sent) never suggested here

    @property
    def configured(self) -> bool:
        return bool(self.sources)

    @classmethod
    def read(cls, table: Table) -> LogSettings:
        from commands.logs import causes, sources  # the catalog and the source kinds, when a service is read

        silence_causes = table.strings("silence_causes")
        known = causes.known_ids()
        for cause in silence_causes:
            if cause not in known:
                table.fail("silence_causes", f"{cause!r} is not a known cause id like node.headers_sent "
                                             "(see /logs help for the ids)")
        zone_name = table.string("log_timezone", "UTC") or "UTC"
        try:
            zone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            table.fail("log_timezone", f"unknown time zone {zone_name[:60]!r} (use an IANA name like Europe/Berlin)")
        kinds = sources.kinds()
        found = {name: settings for name, kind in kinds.items() if (settings := kind.read(table)) is not None}
        chosen = table.string("source", None)
        if chosen is not None:
            if chosen not in kinds:
                table.fail("source", f"{chosen[:60]!r} is not one of {', '.join(kinds)}")
            if chosen not in found:
                table.fail("source", f"{chosen!r} needs its settings in this service (see the README's /logs sources)")
            found = {chosen: found[chosen]}
        return cls(
            sources=found, log_format=table.choice("log_format", LOG_FORMATS, "auto"), log_timezone=zone,
            app_paths=table.strings("app_paths"), silence_causes=silence_causes,
        )
