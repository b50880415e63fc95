"""/logs' part of `[services.NAME]`: where a service's logs are, how they are written (format, time
zone), which causes never to suggest for it, and whether a log file may be a link out of the
directories its globs name."""

from __future__ import annotations

from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.config import ServiceSection, Table
from commands.logs import causes

LOG_FORMATS = ("auto", "json", "text", "access")


@dataclass(frozen=True)
class LogSettings(ServiceSection):
    logs: tuple[str, ...] = ()
    log_command: tuple[str, ...] = ()
    log_format: str = "auto"
    app_paths: tuple[str, ...] = ()
    silence_causes: tuple[str, ...] = ()     # cause ids (node.headers_sent) never suggested here
    log_timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))   # for times written without a zone
    log_links_outside: bool = False          # a log file may be a symlink out of the directories the globs name

    @property
    def configured(self) -> bool:
        return bool(self.logs or self.log_command)

    @classmethod
    def read(cls, table: Table) -> LogSettings:
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
        return cls(
            log_timezone=zone, log_links_outside=table.boolean("log_links_outside", False),
            logs=table.strings("logs"),
            log_command=table.strings("log_command"),
            log_format=table.choice("log_format", LOG_FORMATS, "auto"),
            app_paths=table.strings("app_paths"),
            silence_causes=silence_causes,
        )
