"""Log sources: where a service's log lines come from, behind one small interface.

A source kind is one module in this package that defines `SOURCE = SourceKind(...)`:

- `read(table)`: its settings from `[services.NAME]` (typed getters, one-line errors), or None when
  the service does not use it;
- `logs(settings, pushdown, stats, deadline)`: the service's logs, each a `Log` whose `parts()`
  come newest first, each part read either backwards (`Backward`: spans of whole lines, newest
  first, as a file read from its end) or forwards (`Forward`: chunks of bytes oldest first, as a
  stream, a gzip file or a command's output).

The scan (search.py) merges the logs by time, gates and groups their lines, and folds what
matches; it knows nothing of where lines come from. A source that can search on its side uses the
`Pushdown`: the window (`since`, `until`) and literals one of which every matching entry holds (a
grep, a request id); it may return more than matches, never less. A source that cannot be read
raises `SourceError` (one line naming it); one that yields nothing is said to be empty.

`source = "name"` in `[services.NAME]` picks one kind; without it, every kind whose settings the
service has is read (`logs` files and a `log_command` together). A new backend (Loki, CloudWatch)
is a module here and that one setting: nothing in the scan, the command or the frame changes.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, Protocol

from bot.config import Table
from commands.logs.reading import SourceError, SourcesRead, Span

__all__ = ["Backward", "Forward", "Log", "Pushdown", "SourceError", "SourceKind", "SourcesRead", "kinds"]


@dataclass(frozen=True)
class Pushdown:
    """What a query lets a source skip: entries outside the window, entries holding none of the
    literals (empty: any entry may match)."""

    since: datetime | None = None
    until: datetime | None = None
    literals: tuple[bytes, ...] = ()


class BackwardReader(Protocol):
    """An open part read from its end: spans newest first (a span is used up before the next)."""

    def spans(self) -> Iterator[Span]: ...

    def matched(self) -> None:
        """The last span held a match: read small spans again (matches come in clusters)."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class Backward:
    name: str                                   # what the reply calls it: app.log
    open: Callable[[], BackwardReader]          # may raise SourceError


@dataclass(frozen=True)
class Forward:
    name: str
    chunks: Callable[[], Generator[bytes, None, None]]   # closing the generator stops the source


class Log(Protocol):
    """One log of a source: what the reply names it, and its parts, newest first, opened lazily."""

    @property
    def name(self) -> str: ...

    def parts(self) -> Iterator[Backward | Forward]: ...


@dataclass(frozen=True)
class SourceKind:
    name: str
    read: Callable[[Table], Any]                                        # settings, or None: not used
    logs: Callable[[Any, Pushdown, SourcesRead, float], list[Log]]


@cache
def kinds() -> dict[str, SourceKind]:
    """Every module of this package with a SOURCE, by name."""
    found = {}
    for module in pkgutil.iter_modules(__path__):
        kind = getattr(importlib.import_module(f"{__name__}.{module.name}"), "SOURCE", None)
        if isinstance(kind, SourceKind):
            found[kind.name] = kind
    return dict(sorted(found.items()))
