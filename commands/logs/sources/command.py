"""The `command` source: `log_command`, an argv list run without a shell, its stdout the log (read
forwards, stopped after 20 s or 256 MiB, killed when reading stops)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bot.config import Table
from commands.logs.reading import SourcesRead, command_chunks
from commands.logs.sources import Backward, Forward, Log, Pushdown, SourceKind


@dataclass(frozen=True)
class CommandLog:
    name: str
    argv: tuple[str, ...]
    stats: SourcesRead
    deadline: float

    def parts(self) -> Iterator[Backward | Forward]:
        yield Forward(self.name, lambda: command_chunks(self.argv, self.stats, self.deadline))


def _read(table: Table) -> tuple[str, ...] | None:
    return table.strings("log_command") or None


def _logs(argv: tuple[str, ...], pushdown: Pushdown, stats: SourcesRead, deadline: float) -> list[Log]:
    return [CommandLog(Path(argv[0]).name, argv, stats, deadline)]


SOURCE = SourceKind("command", _read, _logs)
