"""/logs' part of `[services.NAME]`: where a service's logs are, how they are written, which causes
never to suggest for it."""

from __future__ import annotations

from dataclasses import dataclass

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
        return cls(
            logs=table.strings("logs"),
            log_command=table.strings("log_command"),
            log_format=table.choice("log_format", LOG_FORMATS, "auto"),
            app_paths=table.strings("app_paths"),
            silence_causes=silence_causes,
        )
