"""The `files` source: the globs in `logs`, each file with its rotated siblings (app.log, app.log.1,
app.log.2.gz) as one log, newest file first; plain files read backwards, gzip files streamed.
A gzip file whose last change is older than the window is not opened."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from bot.config import Table
from commands.logs.reading import BackwardFile, LogFile, SourcesRead, discover, gzip_chunks
from commands.logs.sources import Backward, Forward, Log, Pushdown, SourceKind


@dataclass(frozen=True)
class FileSettings:
    globs: tuple[str, ...]
    links_outside: bool = False     # log_links_outside: a log may be a symlink out of its directories


@dataclass(frozen=True)
class FileLog:
    name: str
    files: tuple[LogFile, ...]
    pushdown: Pushdown
    stats: SourcesRead

    def parts(self) -> Iterator[Backward | Forward]:
        for log in self.files:
            if not log.compressed:
                yield Backward(log.name, lambda log=log: BackwardFile(log, self.stats))   # type: ignore[misc]
                continue
            since = self.pushdown.since
            if since is not None and (modified := _modified(log)) is not None and modified < since:
                return
            yield Forward(log.name, lambda log=log: gzip_chunks(log, self.stats))        # type: ignore[misc]


def _read(table: Table) -> FileSettings | None:
    globs = table.strings("logs")
    links_outside = table.boolean("log_links_outside", False)
    return FileSettings(globs, links_outside) if globs else None


def _logs(settings: FileSettings, pushdown: Pushdown, stats: SourcesRead, deadline: float) -> list[Log]:
    return [FileLog(files[0].name, tuple(files), pushdown, stats)
            for files in discover(settings.globs, stats, links_outside=settings.links_outside)]


def _modified(log: LogFile) -> datetime | None:
    try:
        return datetime.fromtimestamp(log.path.stat().st_mtime, UTC)
    except OSError:
        return None


SOURCE = SourceKind("files", _read, _logs)
