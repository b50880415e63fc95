"""Matching records -> what the reply shows: folded events with their causes, a request's lines,
an access log's status summary."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from commands.logs import causes
from commands.logs.analysis import analyse, collapsed, fold_key, mask
from commands.logs.records import LEVEL_NAMES, Record, earliest

MAX_SIGNATURES = 1000           # distinct events tracked in one scan; more are counted, not kept
MAX_EVENT_TEXT = 64 * 1024      # characters of one event's text kept for the reply
TOP_PATHS = 10


@dataclass
class Event:
    text: str                           # the newest occurrence, as logged
    excerpt: str                        # the same with framework frames collapsed (what is posted)
    count: int
    first_seen: datetime | None
    last_seen: datetime | None
    cause: causes.Match | None
    level: str | None
    stack: str | None
    exception: str
    frame: str | None                   # the application's frame nearest the error
    source: str
    signature: str


@dataclass
class _Group:
    record: Record
    count: int = 1
    first_seen: datetime | None = None
    last_seen: datetime | None = None


@dataclass
class CauseContext:
    """What filling in a cause needs from the config."""

    service: str
    app_paths: tuple[str, ...] = ()
    silenced: frozenset[str] = frozenset()
    probes: Mapping[str, str] = field(default_factory=dict)     # probe name -> kind


class EventGroups:
    """Records -> events folded by signature; the newest occurrence is the one shown."""

    def __init__(self, app_paths: tuple[str, ...]):
        self.app_paths = app_paths
        self.groups: dict[str, _Group] = {}
        self.ungrouped = 0               # occurrences of signatures past MAX_SIGNATURES, counted only
        self._signatures: dict[tuple[object, ...], str] = {}

    def add(self, record: Record) -> None:
        """One record, which may stand for several (`record.repeats`, folded while read forwards)."""
        signature = self._signature(record)
        moment = record.timestamp
        first = earliest(record.first_seen, moment)
        group = self.groups.get(signature)
        if group is None:
            if len(self.groups) >= MAX_SIGNATURES:
                self.ungrouped += record.repeats
                return
            self.groups[signature] = _Group(record, record.repeats, first, moment)
            return
        group.count += record.repeats
        if moment is not None and (group.last_seen is None or moment > group.last_seen):
            group.last_seen, group.record = moment, record
        group.first_seen = earliest(group.first_seen, first)

    def _signature(self, record: Record) -> str:
        """Repeats of one error differ in their first line's numbers only: analysed once."""
        key = fold_key(record)
        signature = self._signatures.get(key)
        if signature is None:
            if len(self._signatures) >= MAX_SIGNATURES:
                self._signatures.clear()
            signature = self._signatures[key] = analyse(record, self.app_paths).signature
        return signature

    def settled(self, frontier: datetime | None) -> int:
        """How many events are final: newer than anything still unread."""
        if frontier is None:
            return len(self.groups)
        return sum(1 for group in self.groups.values() if group.last_seen is None or group.last_seen >= frontier)

    def events(self, limit: int, context: CauseContext) -> list[Event]:
        newest = sorted(self.groups.values(), key=lambda g: _seconds(g.last_seen), reverse=True)
        return [_event(group, context) for group in newest[:limit]]


def _event(group: _Group, context: CauseContext) -> Event:
    record = group.record
    analysis = analyse(record, context.app_paths)
    frame = analysis.app_frame.label() if analysis.app_frame else None
    evidence = record.content + [record.raw] if record.raw else record.content
    match = causes.match(evidence, analysis.stack, silenced=context.silenced, service=context.service,
                         frame=frame, probes=context.probes)
    return Event(
        text=_capped(record.text), excerpt=_capped(collapsed(record, analysis, context.app_paths)),
        count=group.count, first_seen=group.first_seen, last_seen=group.last_seen, cause=match,
        level=LEVEL_NAMES.get(record.level) if record.level is not None else None, stack=analysis.stack,
        exception=analysis.exception, frame=frame, source=record.source, signature=analysis.signature,
    )


def _seconds(moment: datetime | None) -> float:
    """For sorting by time; an entry without a time sorts as the oldest."""
    return moment.timestamp() if moment is not None else float("-inf")


def _capped(text: str) -> str:
    if len(text) <= MAX_EVENT_TEXT:
        return text
    return text[:MAX_EVENT_TEXT] + f"\n… {len(text) - MAX_EVENT_TEXT:,} more characters"


# -- a request's lines -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestLine:
    at: datetime | None
    source: str
    level: str | None
    text: str


def request_lines(records: list[Record]) -> list[RequestLine]:
    """Every entry of the request, oldest first (entries without a time first, in the order read)."""
    ordered = sorted(enumerate(records), key=lambda item: (_seconds(item[1].timestamp), -item[0]))
    return [RequestLine(r.timestamp, r.source, LEVEL_NAMES.get(r.level) if r.level is not None else None,
                        _capped(r.text)) for _, r in ordered]


# -- an access log's statuses ---------------------------------------------------------------------


@dataclass(frozen=True)
class PathCount:
    path: str
    count: int
    statuses: dict[int, int]


@dataclass(frozen=True)
class StatusSummary:
    statuses: str                       # what was asked: 5xx, 502
    count: int
    by_status: dict[int, int]
    top_paths: list[PathCount]
    first: datetime | None              # the first such response in the window
    last: datetime | None


class StatusCounter:
    def __init__(self, asked: str):
        self.asked = asked
        self.by_status: Counter[int] = Counter()
        self.by_path: dict[str, Counter[int]] = {}
        self.first: datetime | None = None
        self.last: datetime | None = None

    def add(self, record: Record) -> None:
        status = record.status or 0
        self.by_status[status] += record.repeats
        path = f"{record.method or ''} {mask((record.path or '?').split('?', 1)[0])}".strip()
        if path in self.by_path or len(self.by_path) < MAX_SIGNATURES:
            self.by_path.setdefault(path, Counter())[status] += record.repeats
        self.first = earliest(self.first, record.first_seen, record.timestamp)
        if record.timestamp is not None:
            self.last = max(self.last or record.timestamp, record.timestamp)

    def summary(self) -> StatusSummary:
        top = sorted(self.by_path.items(), key=lambda item: (-sum(item[1].values()), item[0]))[:TOP_PATHS]
        return StatusSummary(
            statuses=self.asked, count=sum(self.by_status.values()), by_status=dict(sorted(self.by_status.items())),
            top_paths=[PathCount(path, sum(counts.values()), dict(sorted(counts.items()))) for path, counts in top],
            first=self.first, last=self.last,
        )
