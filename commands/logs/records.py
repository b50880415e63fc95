"""Lines -> records: one log entry with its continuation lines (a stack trace is part of its entry).

Formats: JSON lines, plain text with a header (time, level) on each entry's first line, and
nginx/Apache access logs; detected from a sample, or set by `log_format`. Lines stay bytes until a
record is known to match, so skipped text is never decoded. A JSON entry is shown as its time,
level and message; a plain-string `error`/`err` field (zap, logrus, slog) joins the message, since
it usually holds the cause ("query failed: dial tcp …: connection refused").

Where a record starts: at a header or a JSON line, and at the first line of a stack printed on
its own (`Traceback …`, `panic: …`, `Exception in thread …`, a Node crash site) unless it follows a
warning or error header (it is that message's trace) or a chained-exception phrase. In a log
without headers (a process's stderr), any unindented line starts one too, unless the line before
says it continues: an indented line (Python's final `KeyError: 'x'`, Node's `TypeError` under the
caret), an exception whose message goes on, or a continuation like `Caused by:`.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Any

from commands.logs.reading import Span

MAX_RECORD_LINES = 400               # a longer record keeps its first 300 and last 100 lines
MAX_CONTINUATION = 16 * 1024         # bytes kept of a line that continues a record
_KEEP_HEAD, _KEEP_TAIL = 300, 100

LEVELS = {"trace": 0, "debug": 10, "info": 20, "notice": 25, "deprecated": 30, "warn": 30, "warning": 30,
          "error": 40, "severe": 40, "crit": 50, "critical": 50, "fatal": 50, "alert": 50,
          "emerg": 50, "emergency": 50, "panic": 50}
LEVEL_NAMES = {0: "trace", 10: "debug", 20: "info", 25: "notice", 30: "warn", 40: "error", 50: "fatal"}
ERROR, WARN = 40, 30


class Kind(IntEnum):
    BLANK = 0
    JSON = 1
    HEADER = 2
    STACK = 3            # the first line of a stack trace: Traceback, panic, a Node crash site
    EXCEPTION = 4        # a line naming an exception: TypeError: …, java.lang.IllegalStateException
    CHAIN = 5            # "During handling of the above exception…": the trace goes on
    CONTINUATION = 6     # unindented but never a start: "Caused by:", "goroutine 1 [running]:", "}"
    FRAME = 7            # an indented `at …` / `from …` frame (Java, Node, Ruby)
    INDENTED = 8
    OTHER = 9


_HEADER = re.compile(rb"""(?x)
    \d{4}-\d\d-\d\d[T\x20]\d\d:\d\d                   # ISO 8601, Python logging, Spring, Zookeeper
  | \d{4}/\d\d/\d\d\x20\d\d:\d\d                      # nginx error log, Go's log
  | \[\d{4}-\d\d-\d\d[T\x20]\d\d:\d\d                 # [2026-11-24 14:02:07] Laravel, gunicorn
  | \[\w{3}\x20\w{3}\x20[\x20\d]\d\x20\d\d:\d\d       # [Tue Nov 24 14:02:07.123 2026] Apache
  | \[\d\d-\w{3}-\d{4}\x20\d\d:\d\d                   # [24-Nov-2026 14:02:07 UTC] PHP
  | \w{3}\x20[\x20\d]\d\x20\d\d:\d\d:\d\d             # syslog
  | [DIWEFAU],\x20\[\d{4}-                            # Ruby's Logger
  | \[?(?:TRACE|DEBUG|INFO|NOTICE|WARN(?:ING)?|ERROR|CRITICAL|FATAL|SEVERE)\b[\]:\x20]   # ERROR:root:msg
  | (?:level|lvl|time|ts)=                            # logfmt
  | \(node:\d+\)\x20                                  # (node:123) UnhandledPromiseRejectionWarning
  | PHP\x20(?:Fatal\x20error|Parse\x20error|Warning|Notice|Deprecated|Stack\x20trace):
  | \S+\x20\S+\x20\S+\x20\[\d\d/\w{3}/\d{4}:           # an access log line
""")
_STACK = re.compile(rb"""(?x)
    Traceback\x20\(most\x20recent\x20call\x20last\):
  | panic:\x20 | fatal\x20error:\x20
  | Exception\x20in\x20thread\x20
  | (?:node:internal/|/|[A-Za-z]:\\|file:///)\S*:\d+\s*$          # Node: the crash site
  | Uncaught\x20
  | \S+\.rb:\d+:in\x20                                            # Ruby
""")
_EXCEPTION = re.compile(rb"""(?x)
    (?:[A-Z]\w*)?(?:Error|Exception)(?:\x20\[\w+\])?:\x20           # TypeError: x / Error [ERR_X]: x
  | [a-z][\w$]*(?:\.[\w$]+)+(?:Exception|Error)\b                  # java.lang.IllegalStateException
  | [a-z_]\w*(?:\.\w+)*\.[A-Z]\w*:\x20                              # psycopg2.errors.UndefinedTable: x
  | \[UnhandledPromiseRejection                                   # under Node's crash site
""")
_ERRORISH = re.compile(rb"(?i)error\b|exception\b|\bfatal\b")
_CHAIN = re.compile(rb"During handling of the above exception|The above exception was the direct cause")
_CONTINUATION = re.compile(rb"""(?x)
    (?:Caused\x20by|Suppressed|Wrapped\x20by):
  | \.\.\.\x20\d+\x20(?:more|common\x20frames\x20omitted)
  | goroutine\x20\d+\x20\[ | \[signal\x20 | created\x20by\x20 | exit\x20status\x20\d
  | [\w./*()\[\]-]+\(.*\)\s*$                                      # a Go frame's function line
  | Stack\x20trace: | \#\d+\x20 | \[stacktrace\] | \[previous\x20exception\]
  | [}\])]
""")
_FRAME = re.compile(rb"""(?x)\s+(?:
    at\x20[\w$.<>/-]+\(                         # Java: at com.acme.Foo.bar(Foo.java:12)
  | at\x20(?:.+\x20\()?\S+:\d+:\d+\)?            # Node: at fn (/app/x.js:1:2), at /app/x.js:1:2
  | from\x20\S+:\d+:in\x20                       # Ruby: from /app/x.rb:5:in `run'
)""")


def classify(line: bytes) -> Kind:
    first = line[:1]
    if first in (b" ", b"\t"):
        if not line.strip():
            return Kind.BLANK
        return Kind.FRAME if _FRAME.match(line) else Kind.INDENTED
    if not line or line == b"\r":
        return Kind.BLANK
    if first == b"{":
        return Kind.JSON
    if _HEADER.match(line):
        return Kind.HEADER
    if _STACK.match(line):
        return Kind.STACK
    if _EXCEPTION.match(line):
        return Kind.EXCEPTION
    if _CHAIN.match(line):
        return Kind.CHAIN
    if _CONTINUATION.match(line):
        return Kind.CONTINUATION
    return Kind.OTHER


def starts_record(kind: Kind, before: Kind | None, before_line: bytes = b"", line: bytes = b"", *,
                  headed: bool = False) -> bool:
    """Whether `line`, of `kind`, starts a record, given the last non-blank line before it and its kind.

    `headed`: the log's entries have headers, so a line without one continues the entry before
    (a multi-line message), except a stack printed on its own. After a header below WARNING, a
    stack or a line naming an error is not that message's either: it was printed on its own.
    """
    if kind in (Kind.HEADER, Kind.JSON):
        return True
    if kind not in (Kind.STACK, Kind.EXCEPTION, Kind.OTHER):
        return False
    if before is Kind.HEADER:
        return _below_warning(before_line) and (kind is not Kind.OTHER or bool(_ERRORISH.search(line)))
    if before is Kind.CHAIN:
        return False
    if kind is Kind.STACK:
        return True
    if headed or before is Kind.INDENTED:
        return False
    # an exception's message may go on for lines (psycopg's "LINE 1: …"); "}" ends Node's error object
    return not (kind is Kind.OTHER and before in (Kind.STACK, Kind.EXCEPTION, Kind.CONTINUATION))


def _below_warning(header: bytes) -> bool:
    match = _LEVEL.search(header[:200].decode("utf-8", "replace"))
    return match is None or LEVELS[match.group(1).lower()] < WARN


# -- grouping ---------------------------------------------------------------------------------------


class _Lines:
    """A record's lines while it is assembled, bounded: the first and the last lines are kept."""

    def __init__(self) -> None:
        self.head: list[bytes] = []
        self.tail: list[bytes] = []
        self.dropped = 0

    def append(self, line: bytes) -> None:
        if len(self.head) < _KEEP_HEAD:
            self.head.append(line)
            return
        self.tail.append(line)
        if len(self.tail) > 2 * _KEEP_TAIL:
            self.dropped += len(self.tail) - _KEEP_TAIL
            del self.tail[:-_KEEP_TAIL]

    def lines(self) -> list[bytes]:
        if len(self.tail) > _KEEP_TAIL:
            self.dropped += len(self.tail) - _KEEP_TAIL
            del self.tail[:-_KEEP_TAIL]
        middle = [f"    … {self.dropped:,} lines cut …".encode()] if self.dropped else []
        return self.head + middle + self.tail


class BackwardGrouper:
    """Spans fed newest first (each span's lines in file order) -> records, newest first.

    A line's start-ness depends on the line before it, which for the first lines of a span is in
    the next span fed: those lines are held back until then (or until `finish`).
    """

    def __init__(self, headed: bool) -> None:
        self.headed = headed
        self.held: list[bytes] = []              # the first lines of the last span, undecided
        self.after: list[bytes] = []             # continuation lines after them, newest first
        self.pending_hit = False                 # whether held or after may hold a match

    def feed(self, span: Span, hit: bool = True) -> tuple[list[list[bytes]], bytes | None]:
        """The records completed by the span (newest first), and the earliest start line in it.

        With `hit` false (no line of the span can match) and nothing that may match held back,
        the span's records are not assembled: only its earliest start is found, to know where
        reading is, and the span is split no further than that.
        """
        if not hit and not self.pending_hit:
            return self._skip(span)
        lines = span.lines() + self.held if self.held else span.lines()
        kinds = [classify(line) for line in lines]
        first = next((index for index, kind in enumerate(kinds) if kind is not Kind.BLANK), len(kinds))
        self.held = lines[:first + 1]
        records: list[list[bytes]] = []
        earliest: bytes | None = None
        for index in range(len(lines) - 1, first, -1):
            if self._starts(lines, kinds, index):
                records.append(self._record(lines[index]))
                earliest = lines[index]
            else:
                self.after.append(_clip(lines[index]))
        self._bound_after()
        self.pending_hit = hit or (self.pending_hit and not records)
        return records, earliest

    def _skip(self, span: Span) -> tuple[list[list[bytes]], bytes | None]:
        seen: list[bytes] = []
        kinds: list[Kind] = []
        before: int | None = None
        for line in itertools.chain(span.iter_lines(), self.held):
            kind = classify(line)
            if before is not None and starts_record(kind, kinds[before], seen[before], line, headed=self.headed):
                self.held = seen
                self.after = []
                return [], line
            seen.append(line)
            kinds.append(kind)
            if kind is not Kind.BLANK:
                before = len(seen) - 1
        # no start after the first non-blank line: all of it continues an earlier record
        first = next((i for i, kind in enumerate(kinds) if kind is not Kind.BLANK), len(kinds))
        self.after.extend(_clip(line) for line in reversed(seen[first + 1:]))
        self.held = seen[:first + 1]
        self._bound_after()
        return [], None

    def _starts(self, lines: list[bytes], kinds: list[Kind], index: int) -> bool:
        before = next((j for j in range(index - 1, -1, -1) if kinds[j] is not Kind.BLANK), None)
        if before is None:
            return starts_record(kinds[index], None, headed=self.headed)
        return starts_record(kinds[index], kinds[before], lines[before], lines[index], headed=self.headed)

    def _record(self, start: bytes) -> list[bytes]:
        assembled = _Lines()
        assembled.append(start)
        for line in reversed(self.after):
            assembled.append(line)
        self.after = []
        return assembled.lines()

    def _bound_after(self) -> None:
        if len(self.after) > 2 * MAX_RECORD_LINES:
            # newest first: keep the record's last lines (the front) and its first ones (the end)
            dropped = len(self.after) - MAX_RECORD_LINES
            self.after = (self.after[:_KEEP_TAIL] + [f"    … {dropped:,} lines cut …".encode()]
                          + self.after[-(MAX_RECORD_LINES - _KEEP_TAIL):])

    def finish(self) -> list[list[bytes]]:
        """The records left when the start of the file is reached, newest first."""
        lines, self.held = self.held, []
        records: list[list[bytes]] = []
        kinds = [classify(line) for line in lines]
        for index in range(len(lines) - 1, -1, -1):
            if index == 0 or self._starts(lines, kinds, index):
                records.append(self._record(lines[index]))
            else:
                self.after.append(_clip(lines[index]))
        if self.after:
            records.append(self._record(self.after.pop()))
        return records


def _clip(line: bytes) -> bytes:
    """A continuation line, bounded: a record of 400 lines of a megabyte each must not fill memory."""
    if len(line) <= MAX_CONTINUATION:
        return line
    return line[:MAX_CONTINUATION] + f" …[line cut: {len(line):,} bytes]".encode()


def forward_records(batches: Iterator[list[bytes]], headed: bool) -> Iterator[list[list[bytes]]]:
    """Lists of whole lines in file order -> for each, the records it completed, in file order
    (a list per batch, maybe empty, so that a reader gets control back after every batch)."""
    current: _Lines | None = None
    before: Kind | None = None
    before_line = b""
    for lines in batches:
        completed: list[list[bytes]] = []
        for line in lines:
            kind = classify(line)
            if current is None or starts_record(kind, before, before_line, line, headed=headed):
                if current is not None:
                    completed.append(current.lines())
                current = _Lines()
            current.append(_clip(line) if current.head else line)
            if kind is not Kind.BLANK:
                before, before_line = kind, line
        yield completed
    if current is not None:
        yield [current.lines()]


# -- formats ------------------------------------------------------------------------------------------

_ACCESS = re.compile(rb"""(?x)
    ^(?P<client>\S+)\x20\S+\x20\S+\x20\[(?P<time>[^\]]+)\]\x20
    "(?P<method>[A-Z]+)\x20(?P<path>\S+)(?:\x20[^"]*)?"\x20(?P<status>\d{3})\x20
""")


def detect_format(lines: list[bytes], configured: str = "auto") -> tuple[str, bool]:
    """(json, access or text; whether entries have headers), from a sample of lines.

    The format is what most non-blank lines look like, unless configured. Entries have headers
    when a quarter of the unindented lines are headers or JSON objects (a multi-line message, like
    Spring Boot's APPLICATION FAILED TO START report, has many unindented lines of its own).
    """
    sample = [line for line in lines[-200:] if line.strip()]
    unindented = [line for line in sample if line[:1] not in (b" ", b"\t")]
    headed = sum(1 for line in unindented if classify(line) in (Kind.HEADER, Kind.JSON)) * 4 >= len(unindented) > 0
    if configured != "auto" or not sample:
        return (configured if configured != "auto" else "text"), headed
    access = sum(1 for line in sample if _ACCESS.match(line))
    objects = sum(1 for line in sample if line[:1] == b"{" and _json_object(line) is not None)
    if access * 2 > len(sample):
        return "access", headed
    if objects * 2 > len(sample):
        return "json", headed
    return "text", headed


def holds_access_lines(lines: list[bytes], fmt: str) -> bool:
    """Whether a sample of a log, read as `fmt`, holds HTTP access entries (what --status counts)."""
    if fmt == "access":
        return True
    return fmt == "json" and any(line[:1] == b"{" and (data := _json_object(line)) is not None
                                 and _json_status(data) is not None for line in lines[-200:])


def _json_object(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


@dataclass
class Record:
    """One log entry, decoded. `text` is what is shown: for JSON, the message and its stack."""

    lines: list[str]
    source: str
    fmt: str
    timestamp: datetime | None = None
    level: int | None = None
    message: str = ""
    request_id: str | None = None
    status: int | None = None
    method: str | None = None
    path: str | None = None
    raw: str | None = None              # a JSON entry as written: its other fields are evidence too
    repeats: int = 1                    # occurrences folded into this one while reading forwards,
    first_seen: datetime | None = None  # and the time of the first of them

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def quick_level(first: bytes, fmt: str) -> int | None:
    """A record's level from its first line, read as `fmt`, without decoding the rest."""
    if fmt == "json" and first[:1] == b"{" and (data := _json_object(first)) is not None:
        return _json_level(data)
    if fmt == "access" and (match := _ACCESS.match(first)):
        return _status_level(int(match.group("status")))
    return parse_level(first[:200].decode("utf-8", "replace"), first)


def quick_time(first: bytes, fmt: str) -> datetime | None:
    """A record's time from its first line, read as `fmt`, without decoding the rest."""
    if fmt == "json" and first[:1] == b"{" and (data := _json_object(first)) is not None:
        return _json_time(data)
    if fmt == "access" and (match := _ACCESS.match(first)):
        return _clf_time(match.group("time").decode("ascii", "replace"))
    return parse_time(first[:200].decode("utf-8", "replace"))


def decode(lines: list[bytes], source: str, fmt: str,
           known: tuple[datetime | None, int | None] | None = None) -> Record:
    """The record, read as `fmt` (a line that is not of that format is text); `known` is the
    (time, level) already read from its first line."""
    text_lines = [line.decode("utf-8", "replace").rstrip("\r") for line in lines]
    first = lines[0] if lines else b""
    if fmt == "json" and first[:1] == b"{" and (data := _json_object(first)) is not None:
        return _json_record(data, text_lines, source)
    if fmt == "access" and (match := _ACCESS.match(first)) is not None:
        status = int(match.group("status"))
        return Record(text_lines, source, "access", _clf_time(match.group("time").decode("ascii", "replace")),
                      _status_level(status), message=text_lines[0], status=status,
                      method=match.group("method").decode(), path=match.group("path").decode("utf-8", "replace"))
    head = text_lines[0][:200] if text_lines else ""
    moment, level = known if known is not None else (parse_time(head), parse_level(head, first))
    return Record(text_lines, source, "text", moment, level, message=text_lines[0] if text_lines else "")


def earliest(*moments: datetime | None) -> datetime | None:
    return min((moment for moment in moments if moment is not None), default=None)


def _status_level(status: int) -> int:
    return ERROR if status >= 500 else WARN if status >= 400 else LEVELS["info"]


# -- JSON lines ---------------------------------------------------------------------------------------

_JSON_LEVEL_KEYS = ("level", "levelname", "severity", "lvl", "log.level", "loglevel")
_JSON_MESSAGE_KEYS = ("message", "msg", "@message", "event", "error.message", "err.message")
_JSON_ERROR_KEYS = ("error", "err")        # zap, logrus, slog: the cause, as a plain string
_JSON_TIME_KEYS = ("timestamp", "time", "ts", "@timestamp", "asctime", "datetime", "date", "t")
_JSON_REQUEST_KEYS = ("request_id", "requestId", "req_id", "reqId", "x_request_id", "correlation_id",
                      "correlationId", "trace_id", "http.request_id")
_JSON_STACK_KEYS = ("exception", "exc_info", "exc_text", "stack", "stack_trace", "stacktrace", "traceback",
                    "error.stack", "err.stack", "error.stack_trace", "exception.stacktrace", "backtrace")
_JSON_STATUS_KEYS = ("status", "status_code", "statusCode", "http.status_code", "response.status", "res.statusCode")
_NUMERIC_LEVELS = ((60, 50), (50, 40), (40, 30), (30, 20), (20, 10), (10, 0))   # pino / bunyan


def _lookup(data: dict[str, Any], key: str) -> Any:
    if key in data:
        return data[key]
    value: Any = data
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _first(data: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = _lookup(data, key)
        if value not in (None, ""):
            return value
    return None


def _json_level(data: dict[str, Any]) -> int | None:
    value = _first(data, _JSON_LEVEL_KEYS)
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return next((rank for threshold, rank in _NUMERIC_LEVELS if value >= threshold), 0)
    if isinstance(value, str):
        return LEVELS.get(value.strip().lower())
    level = None
    if _first(data, _JSON_STACK_KEYS) is not None:
        level = ERROR
    status = _json_status(data)
    if status is not None:
        level = _status_level(status)
    return level


def _json_status(data: dict[str, Any]) -> int | None:
    """An HTTP status, written as a number or as digits (nginx's JSON log_format quotes it)."""
    status = _first(data, _JSON_STATUS_KEYS)
    if isinstance(status, str) and status.isdigit():
        status = int(status)
    return status if isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 599 else None


def _json_time(data: dict[str, Any]) -> datetime | None:
    value = _first(data, _JSON_TIME_KEYS)
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        seconds = value / 1000 if value > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        return parse_time(value)
    return None


def _json_record(data: dict[str, Any], text_lines: list[str], source: str) -> Record:
    level = _json_level(data)
    status = _json_status(data)
    method = _string(_first(data, ("method", "http.method", "req.method", "request.method")))
    path = _string(_first(data, ("path", "url", "uri", "http.path", "req.url", "request.path")))
    message = _first(data, _JSON_MESSAGE_KEYS)
    message = message if isinstance(message, str) else json.dumps(message) if message is not None else ""
    error = _first(data, _JSON_ERROR_KEYS)
    if isinstance(error, str) and error.strip() and error not in message:
        message = f"{message}: {error}" if message else error
    if not message and status is not None:
        message = " ".join(str(part) for part in (status, method, path) if part)
    timestamp = _json_time(data)
    head = " ".join(part for part in (
        timestamp.strftime("%Y-%m-%dT%H:%M:%SZ") if timestamp else None,
        LEVEL_NAMES.get(level, "").upper() if level is not None else None,
        message) if part)
    lines = head.split("\n")
    stack = _first(data, _JSON_STACK_KEYS)
    if isinstance(stack, list):
        stack = "\n".join(str(item) for item in stack)
    elif isinstance(stack, dict):
        stack = _first(stack, ("stack", "stacktrace", "trace", "message")) or json.dumps(stack)
    if isinstance(stack, str) and stack.strip():
        lines.extend(stack.rstrip("\n").split("\n"))
    lines.extend(text_lines[1:])
    request_id = _first(data, _JSON_REQUEST_KEYS)
    return Record(lines, source, "json", timestamp, level, message=message,
                  request_id=str(request_id) if request_id is not None else None, status=status, method=method,
                  path=path, raw=text_lines[0])


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# -- time and level from text ----------------------------------------------------------------------

_MONTHS = {name: index for index, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}
_ISO = re.compile(r"(\d{4})[-/](\d\d)[-/](\d\d)[T ](\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?\s?"
                  r"(Z|[+-]\d\d:?\d\d|UTC)?")
_CLF = re.compile(r"(\d\d)/(\w{3})/(\d{4}):(\d\d):(\d\d):(\d\d)(?: ([+-]\d{4}))?")
_APACHE = re.compile(r"\[\w{3} (\w{3}) +(\d{1,2}) (\d\d):(\d\d):(\d\d)(?:\.(\d+))? (\d{4})\]")
_PHP = re.compile(r"\[(\d\d)-(\w{3})-(\d{4}) (\d\d):(\d\d):(\d\d)(?: ([\w/+-]+))?\]")
_SYSLOG = re.compile(r"^(\w{3}) +(\d{1,2}) (\d\d):(\d\d):(\d\d)\b")
_LEVEL = re.compile(r"(?<![\w/-])(trace|debug|info|notice|deprecated|warn(?:ing)?|error|severe|crit(?:ical)?"
                    r"|fatal|alert|emerg(?:ency)?|panic)(?![\w/.-])", re.I)
_RUBY_LEVEL = {b"D": 10, b"I": 20, b"W": 30, b"E": 40, b"F": 50, b"A": 50}


def parse_time(head: str) -> datetime | None:
    """The first timestamp in a line's head, as UTC; a time without a zone is read as UTC."""
    try:
        if match := _ISO.search(head, 0, 80):
            year, month, day, hour, minute, second = map(int, match.group(1, 2, 3, 4, 5, 6))
            micro = int((match.group(7) or "0")[:6].ljust(6, "0"))
            moment = datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)
            return moment - _offset(match.group(8))
        if match := _CLF.search(head, 0, 80):
            return _clf_time(match.group(0))
        if match := _APACHE.search(head, 0, 80):
            month = _MONTHS[match.group(1).lower()]
            micro = int((match.group(6) or "0")[:6].ljust(6, "0"))
            return datetime(int(match.group(7)), month, int(match.group(2)), int(match.group(3)),
                            int(match.group(4)), int(match.group(5)), micro, tzinfo=UTC)
        if match := _PHP.search(head, 0, 80):
            return datetime(int(match.group(3)), _MONTHS[match.group(2).lower()], int(match.group(1)),
                            int(match.group(4)), int(match.group(5)), int(match.group(6)), tzinfo=UTC)
        if match := _SYSLOG.match(head):
            now = datetime.now(UTC)
            moment = datetime(now.year, _MONTHS[match.group(1).lower()], int(match.group(2)), int(match.group(3)),
                              int(match.group(4)), int(match.group(5)), tzinfo=UTC)
            return moment.replace(year=now.year - 1) if moment > now + timedelta(days=1) else moment
    except (ValueError, KeyError):
        return None
    return None


def _clf_time(text: str) -> datetime | None:
    match = _CLF.match(text)
    if not match:
        return None
    try:
        moment = datetime(int(match.group(3)), _MONTHS[match.group(2).lower()], int(match.group(1)),
                          int(match.group(4)), int(match.group(5)), int(match.group(6)), tzinfo=UTC)
    except (ValueError, KeyError):
        return None
    return moment - _offset(match.group(7))


def _offset(zone: str | None) -> timedelta:
    if not zone or zone in ("Z", "UTC"):
        return timedelta(0)
    digits = zone.replace(":", "")
    sign = -1 if digits[0] == "-" else 1
    return sign * timedelta(hours=int(digits[1:3]), minutes=int(digits[3:5]))


def parse_level(head: str, first: bytes) -> int | None:
    """The level named in a line's head; a headless stack start counts as an error."""
    if first[1:4] == b", [" and first[:1] in _RUBY_LEVEL:
        return _RUBY_LEVEL[first[:1]]
    if match := _LEVEL.search(head):
        return LEVELS[match.group(1).lower()]
    if _STACK.match(first) or _EXCEPTION.match(first):
        return ERROR
    return None
