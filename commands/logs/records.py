"""Lines -> records: one log entry with its continuation lines (a stack trace is part of its entry).

A log's `Dialect` is told once from a sample of its lines: the carrier's prefixes around each line
(prefixes.py; grouping and matching read a line without them, the reply shows it as written), the
format (JSON lines, plain text with a header on each entry's first line, nginx/Apache access logs;
or `log_format`), whether entries have headers, and how to read times (the service's
`log_timezone` for times without a zone; the command's clock for syslog's missing year). Lines stay
bytes until a record is known to match, so skipped text is never decoded. A JSON entry is shown as
its time, level and message; a plain-string `error`/`err` field (zap, logrus, slog) joins the
message, since it usually holds the cause ("query failed: dial tcp …: connection refused").

Where a record starts: at a header or a JSON line, and at the first line of a stack printed on
its own (`Traceback …`, `panic: …`, `Exception in thread …`, a Node crash site) unless it follows a
warning or error header, or a bare message naming an error (it is that message's trace), or a
chained-exception phrase. In a log without headers (a process's stderr), any unindented line starts
one too, unless the line before says it continues: an indented line or a frame (Python's final
`KeyError: 'x'`, Node's `TypeError` under the caret), the line after a Python frame (its source,
indented or not), an exception whose message goes on, or a continuation like `Caused by:`.

An entry is an error by its level word, or by what it shows when no level says so (`shown_level`).
A record longer than 400 lines keeps its first 300 and last 100; a cut never separates a private
key's body from its BEGIN line, so redaction still sees the key.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from enum import IntEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from commands.logs import prefixes
from commands.logs.prefixes import Framing
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
    FRAME = 7            # a frame: `at …` (Java, Node, .NET), `from …` (Ruby), indented or not
    PYFRAME = 8          # Python's `File "…", line N`: the line after it is its source, whatever it says
    INDENTED = 9
    OTHER = 10


_HEADER = re.compile(rb"""(?x)
    \d{4}-\d\d-\d\d(?:[T\x20]\d|\x20\x20)\d:\d\d          # ISO 8601, Python logging, Spring; MariaDB's " 4:26"
  | \d{4}/\d\d/\d\d\x20\d\d:\d\d                      # nginx error log, Go's log
  | \[\d{4}-\d\d-\d\d[T\x20]\d\d:\d\d                 # [2026-11-24 14:02:07] Laravel, gunicorn
  | \[\w{3}\x20\w{3}\x20[\x20\d]\d\x20\d\d:\d\d       # [Tue Nov 24 14:02:07.123 2026] Apache
  | \[\d\d-\w{3}-\d{4}\x20\d\d:\d\d                   # [24-Nov-2026 14:02:07 UTC] PHP
  | \w{3}\x20[\x20\d]\d\x20\d\d:\d\d:\d\d             # syslog
  | [DIWEFAU],\x20\[\d{4}-                            # Ruby's Logger
  | [IWEF]\d{4}\x20\d\d:\d\d:\d\d\.\d+\x20             # klog (Kubernetes, Go): E1124 14:02:09.123456
  | \[?(?:TRACE|DEBUG|INFO|NOTICE|WARN(?:ING)?|ERROR|CRITICAL|FATAL|SEVERE)\b[\]:\x20]   # ERROR:root:msg
  | (?:level|lvl|time|ts)=                            # logfmt
  | \(node:\d+\)\x20                                  # (node:123) UnhandledPromiseRejectionWarning
  | PHP\x20(?:Fatal\x20error|Parse\x20error|Warning|Notice|Deprecated|Stack\x20trace):
  | \S+\x20\S+\x20\S+\x20\[\d\d/\w{3}/\d{4}:           # an access log line
""")
_STACK = re.compile(rb"""(?x)
    (?:Exception\x20Group\x20)?Traceback\x20\(most\x20recent\x20call\x20last\):
  | panic:\x20 | fatal\x20error:\x20
  | Exception\x20in\x20thread\x20
  | (?:node:internal/|/|[A-Za-z]:\\|file:///)\S*:\d+\s*$          # Node: the crash site
  | Uncaught\x20
  | Unhandled\x20exception\.\x20                                  # .NET
  | \S+\.rb:\d+:in\x20                                            # Ruby
""")
_EXCEPTION = re.compile(rb"""(?x)
    \{?\x20?(?:[A-Z]\w*)?(?:Error|Exception)(?:\x20\[\w+\])?:\x20      # TypeError: x / Error [ERR_X]: x
  | [a-z][\w$]*(?:\.[\w$]+)+(?:Exception|Error)\b                  # java.lang.IllegalStateException
  | [A-Z]\w*(?:\.\w+)+(?:Exception|Error)\b                         # System.NullReferenceException
  | [a-z_]\w*(?:\.\w+)*\.[A-Z]\w*:\x20                              # psycopg2.errors.UndefinedTable: x
  | [A-Z]\w*(?:::[A-Z]\w*)+(?:Error|Exception|Invalid|NotFound)\b   # ActiveRecord::StatementInvalid
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
  | ---\x20End\x20of\x20(?:inner\x20exception\x20)?stack\x20trace   # .NET
  | [}\])]
""")
_FRAME = re.compile(rb"""(?x)['\s]*(?:
    at\x20[\w$.<>/`-]+[(\x20]                 # Java: at com.acme.Foo.bar(Foo.java:12); .NET: at A.B() in F.cs
  | at\x20(?:.+\x20\()?\S+:\d+:\d+\)?            # Node: at fn (/app/x.js:1:2), at /app/x.js:1:2
  | at\x20.+\((?:native|<anonymous>|node:\S+|\S+\.[cm]?[jt]s)\)  # Node: at Array.forEach (<anonymous>)
  | from\x20\S+:\d+:in\x20                       # Ruby: from /app/x.rb:5:in `run'
)""")
_PYFRAME = re.compile(rb'\s*File\x20"[^"]+",\x20line\x20\d+')


def classify(line: bytes) -> Kind:
    """The kind of a line (without its transport prefix), on its own."""
    first = line[:1]
    if first in (b" ", b"\t"):
        if not line.strip():
            return Kind.BLANK
        if _PYFRAME.match(line):
            return Kind.PYFRAME
        return Kind.FRAME if _FRAME.match(line) else Kind.INDENTED
    if not line or line == b"\r":
        return Kind.BLANK
    if first == b"{":
        return Kind.EXCEPTION if _EXCEPTION.match(line) else Kind.JSON
    if _HEADER.match(line):
        return Kind.HEADER
    if _STACK.match(line):
        return Kind.STACK
    if first in (b"F", b"a", b"f", b"'"):
        if _PYFRAME.match(line):
            return Kind.PYFRAME
        if _FRAME.match(line):
            return Kind.FRAME
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
        # a bare message naming an error announces the trace under it ("Internal Server Error: /x")
        return not (before is Kind.OTHER and bool(_ERRORISH.search(before_line)))
    if headed or before in (Kind.INDENTED, Kind.PYFRAME):
        return False
    # an exception's message may go on for lines (psycopg's "LINE 1: …"); "}" ends Node's error object
    return not (kind is Kind.OTHER and before in (Kind.STACK, Kind.EXCEPTION, Kind.CONTINUATION))


def _below_warning(header: bytes) -> bool:
    match = _LEVEL.search(header[:200].decode("utf-8", "replace"))
    return match is None or LEVELS[match.group(1).lower()] < WARN


# -- a log's dialect ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dialect:
    """How one source writes its entries, told from a sample of its lines (or set by the config):
    the format, whether entries have headers, the transport prefixes around each line, and how
    to read its times: `zone` for times written without one (log_timezone), `now` for the year a
    syslog time leaves out."""

    fmt: str = "auto"
    headed: bool = False
    framing: Framing = Framing()
    zone: tzinfo = UTC
    now: datetime | None = None

    def content(self, line: bytes) -> bytes:
        return self.framing.content(line)

    def kinds(self, lines: list[bytes]) -> list[Kind]:
        """Each line's kind, without its prefix and in context: the line after a Python frame is
        that frame's source (or the exception, when no source is shown), never an entry's start."""
        kinds: list[Kind] = []
        before = Kind.BLANK
        plain = self.framing.plain
        for line in lines:
            if plain:
                kind = classify(line)
            else:
                content, stamp_only = self.framing.strip(line)
                kind = classify(content)
                if stamp_only and kind is Kind.OTHER:
                    kind = Kind.HEADER
            if before is Kind.PYFRAME and kind in (Kind.OTHER, Kind.EXCEPTION, Kind.CONTINUATION):
                kind = Kind.INDENTED
            kinds.append(kind)
            if kind is not Kind.BLANK:
                before = kind
        return kinds


def detect(lines: list[bytes], configured: Dialect = Dialect()) -> Dialect:
    """The dialect of a log from a sample of its lines (the newest, read backwards; the first,
    read forwards): prefixes first, then the format of what they wrap.

    The format is what most non-blank lines look like, unless configured. Entries have headers
    when a quarter of the lines that could start one are headers or JSON objects (a multi-line
    message, like Spring Boot's APPLICATION FAILED TO START report, has many such lines of its own).
    """
    sample = [line for line in lines[-200:] if line.strip()]
    framing = prefixes.detect(sample)
    joined, unfinished = framing.join_partials(sample)
    sample = joined + unfinished
    dialect = replace(configured, framing=framing)
    kinds = dialect.kinds(sample)
    starting = [kind for kind in kinds if kind not in (Kind.FRAME, Kind.PYFRAME, Kind.INDENTED, Kind.BLANK)]
    headed = sum(1 for kind in starting if kind in (Kind.HEADER, Kind.JSON)) * 4 >= len(starting) > 0
    if configured.fmt != "auto" or not sample:
        return replace(dialect, fmt=configured.fmt if configured.fmt != "auto" else "text", headed=headed)
    contents = [framing.content(line) for line in sample]
    access = sum(1 for line in contents if _ACCESS.match(line))
    objects = sum(1 for line in contents if line[:1] == b"{" and _json_object(line) is not None)
    fmt = "access" if access * 2 > len(contents) else "json" if objects * 2 > len(contents) else "text"
    return replace(dialect, fmt=fmt, headed=headed)


# -- grouping ---------------------------------------------------------------------------------------


_KEY_BEGIN = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY")
_KEY_END = re.compile(rb"-----END [A-Z0-9 ]*PRIVATE KEY")


def _open_key(cut: list[bytes]) -> bytes | None:
    """The BEGIN line of a private key that starts in `cut` (lines in file order) and does not end
    there. A cut must keep it: the lines after the cut are that key's body, and redaction (which
    masks from BEGIN to END, or to the end of the text) can only see a key whose BEGIN it is shown.
    Redact first, then cut: a cut key body is still a key."""
    begin = None
    for line in cut:
        if _KEY_BEGIN.search(line):
            begin = line
        elif begin is not None and _KEY_END.search(line):
            begin = None
    return begin


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
            self._cut()

    def _cut(self) -> None:
        cut, self.tail = self.tail[:-_KEEP_TAIL], self.tail[-_KEEP_TAIL:]
        begin = _open_key(cut)
        self.dropped += len(cut) - (begin is not None)
        if begin is not None:
            self.tail.insert(0, begin)

    def lines(self) -> list[bytes]:
        if len(self.tail) > _KEEP_TAIL + 1:
            self._cut()
        middle = [f"    … {self.dropped:,} lines cut …".encode()] if self.dropped else []
        return self.head + middle + self.tail


_CONTEXT = 2        # non-blank lines a line's kind and start-ness depend on: itself and the one before


class BackwardGrouper:
    """Spans fed newest first (each span's lines in file order) -> records, newest first.

    Whether a line starts a record depends on the line before it, whose kind depends on the one
    before that (a Python frame's source line): so the first two non-blank lines of a span are
    held back until the next span is fed (or until `finish`).
    """

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
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
        if not self.dialect.framing.plain:
            joined, unfinished = self.dialect.framing.join_partials(lines)
            lines = joined + unfinished       # nothing newer finishes them: each is read as a line
        kinds = self.dialect.kinds(lines)
        first = _nth_non_blank(kinds, _CONTEXT)
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
        non_blank: list[int] = []            # indexes of the non-blank lines seen
        for line in itertools.chain(span.iter_lines(), self.held):
            kind = self.dialect.kinds([line])[0]
            if non_blank and kinds[non_blank[-1]] is Kind.PYFRAME and kind in (Kind.OTHER, Kind.EXCEPTION,
                                                                                 Kind.CONTINUATION):
                kind = Kind.INDENTED
            if len(non_blank) >= _CONTEXT and starts_record(kind, kinds[non_blank[-1]], seen[non_blank[-1]],
                                                            self.dialect.content(line), headed=self.dialect.headed):
                self.held = seen
                self.after = []
                return [], line
            seen.append(line)
            kinds.append(kind)
            if kind is not Kind.BLANK:
                non_blank.append(len(seen) - 1)
        # no start after the first lines: all of it continues an earlier record
        first = _nth_non_blank(kinds, _CONTEXT)
        self.after.extend(_clip(line) for line in reversed(seen[first + 1:]))
        self.held = seen[:first + 1]
        self._bound_after()
        return [], None

    def _starts(self, lines: list[bytes], kinds: list[Kind], index: int) -> bool:
        before = next((j for j in range(index - 1, -1, -1) if kinds[j] is not Kind.BLANK), None)
        content = self.dialect.content(lines[index])
        if before is None:
            return starts_record(kinds[index], None, line=content, headed=self.dialect.headed)
        return starts_record(kinds[index], kinds[before], self.dialect.content(lines[before]), content,
                             headed=self.dialect.headed)

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
            cut = self.after[_KEEP_TAIL:-(MAX_RECORD_LINES - _KEEP_TAIL)]
            begin = _open_key(cut[::-1])
            self.after = (self.after[:_KEEP_TAIL] + ([begin] if begin is not None else [])
                          + [f"    … {len(cut) - (begin is not None):,} lines cut …".encode()]
                          + self.after[-(MAX_RECORD_LINES - _KEEP_TAIL):])

    def finish(self) -> list[list[bytes]]:
        """The records left when the start of the file is reached, newest first."""
        lines, self.held = self.held, []
        records: list[list[bytes]] = []
        kinds = self.dialect.kinds(lines)
        for index in range(len(lines) - 1, -1, -1):
            if index == 0 or self._starts(lines, kinds, index):
                records.append(self._record(lines[index]))
            else:
                self.after.append(_clip(lines[index]))
        if self.after:
            records.append(self._record(self.after.pop()))
        return records


def _nth_non_blank(kinds: list[Kind], n: int) -> int:
    """The index of the n-th non-blank line (1-based), or the last index when there are fewer."""
    seen = 0
    for index, kind in enumerate(kinds):
        if kind is not Kind.BLANK:
            seen += 1
            if seen == n:
                return index
    return len(kinds) - 1


def _clip(line: bytes) -> bytes:
    """A continuation line, bounded: a record of 400 lines of a megabyte each must not fill memory."""
    if len(line) <= MAX_CONTINUATION:
        return line
    return line[:MAX_CONTINUATION] + f" …[line cut: {len(line):,} bytes]".encode()


def forward_records(batches: Iterator[list[bytes]], dialect: Dialect) -> Iterator[list[list[bytes]]]:
    """Lists of whole lines in file order -> for each, the records it completed, in file order
    (a list per batch, maybe empty, so that a reader gets control back after every batch)."""
    current: _Lines | None = None
    before: Kind | None = None
    before_line = b""
    unfinished: list[bytes] = []
    for batch in batches:
        completed: list[list[bytes]] = []
        lines, unfinished = dialect.framing.join_partials(unfinished + batch)
        for line in lines:
            kind = dialect.kinds([line])[0]
            if before is Kind.PYFRAME and kind in (Kind.OTHER, Kind.EXCEPTION, Kind.CONTINUATION):
                kind = Kind.INDENTED
            content = dialect.content(line)
            if current is None or starts_record(kind, before, before_line, content, headed=dialect.headed):
                if current is not None:
                    completed.append(current.lines())
                current = _Lines()
            current.append(_clip(line) if current.head else line)
            if kind is not Kind.BLANK:
                before, before_line = kind, content
        yield completed
    if unfinished:                          # the stream ended inside a partial line
        current = current or _Lines()
        for line in unfinished:
            current.append(line)
    if current is not None:
        yield [current.lines()]


# -- formats ------------------------------------------------------------------------------------------

_ACCESS = re.compile(rb"""(?x)
    ^(?P<client>\S+)\x20\S+\x20\S+\x20\[(?P<time>[^\]]+)\]\x20
    "(?P<method>[A-Z]+)\x20(?P<path>\S+)(?:\x20[^"]*)?"\x20(?P<status>\d{3})\x20
""")


def holds_access_lines(lines: list[bytes], dialect: Dialect) -> bool:
    """Whether a sample of a log, read in `dialect`, holds HTTP access entries (what --status counts)."""
    if dialect.fmt == "access":
        return True
    return dialect.fmt == "json" and any(
        (content := dialect.content(line))[:1] == b"{" and (data := _json_object(content)) is not None
        and _json_status(data) is not None for line in lines[-200:])


def _json_object(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


@dataclass
class Record:
    """One log entry, decoded. `lines` are what is shown (as written; for JSON, the message and
    its stack); `content` the same without transport prefixes, what grouping and matching read."""

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
    content: list[str] = field(default_factory=list)    # empty: the same as `lines`

    def __post_init__(self) -> None:
        if not self.content:
            self.content = self.lines

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def quick_level(first: bytes, dialect: Dialect) -> int | None:
    """A record's level from its first line, read in `dialect`, without decoding the rest."""
    content = dialect.content(first)
    if dialect.fmt == "json" and content[:1] == b"{" and (data := _json_object(content)) is not None:
        return _json_level(data)
    if dialect.fmt == "access" and (match := _ACCESS.match(content)):
        return _status_level(int(match.group("status")))
    return parse_level(first[:200].decode("utf-8", "replace"), content)


def quick_time(first: bytes, dialect: Dialect) -> datetime | None:
    """A record's time from its first line, read in `dialect`, without decoding the rest."""
    content = dialect.content(first)
    if dialect.fmt == "json" and content[:1] == b"{" and (data := _json_object(content)) is not None:
        return _json_time(data, dialect) or parse_time(first[:80].decode("utf-8", "replace"), dialect)
    if dialect.fmt == "access" and (match := _ACCESS.match(content)):
        return _clf_time(match.group("time").decode("ascii", "replace"))
    return parse_time(first[:200].decode("utf-8", "replace"), dialect)


def shown_level(lines: list[bytes], level: int | None, dialect: Dialect,
                shows_failure: Callable[[list[bytes]], bool] = lambda lines: False) -> int | None:
    """The level an entry counts at: its header's, or ERROR when it shows an error that no level
    word says: an entry without a level holding an exception or a stack (a process's stderr, a
    paste); one at INFO or below holding an exception with its stack (a framework logging a
    failure at INFO), or a failure that `shows_failure` knows on its own (the catalog's). A
    warning stays a warning, even with a stack: a handled error, a retry."""
    if level is not None and level >= WARN:
        return ERROR if level < ERROR and any(_CRASH.search(line) for line in lines[:MAX_RECORD_LINES]) else level
    if any(_RETRYING.search(line) for line in lines[:MAX_RECORD_LINES]):   # handled: it is being retried
        return level
    if level is not None and len(lines) == 1:       # an ordinary line: no stack, no exception to see
        return ERROR if shows_failure(lines) else level
    kinds = dialect.kinds(lines[:MAX_RECORD_LINES])
    stack = any(kind in (Kind.STACK, Kind.FRAME, Kind.PYFRAME) for kind in kinds)
    exception = any(kind is Kind.EXCEPTION for kind in kinds) or (
        bool(lines) and _EXCEPTION_ANYWHERE.search(dialect.content(lines[0])) is not None)
    if (stack and exception) or (level is None and (stack or exception)):
        return ERROR
    return ERROR if shows_failure(lines[:MAX_RECORD_LINES]) else level


# What a program writes when it, not one request, failed: an uncaught exception that ended a thread
# or the process, an application context that could not start. A framework may log it as a warning.
_CRASH = re.compile(rb'Exception in thread "|\bUncaught (?:[Ee]xception|\w*Error)\b|\bUnhandled [Ee]xception\b'
                    rb"|\buncaughtException\b|cancelling refresh attempt|APPLICATION FAILED TO START")
# A failure that is being retried is handled, not yet an error ("Max retries exceeded" is one).
_RETRYING = re.compile(rb"(?i)\bretrying\b|\bwill (?:be )?retr(?:y|ied)\b|\bretry(?:ing)? in \d|\battempt \d+(?: of|/)")
_EXCEPTION_ANYWHERE = re.compile(rb"(?<![\w.])(?:[a-z_]\w*\.)*[A-Z]\w*(?:Error|Exception)\b(?:: |$)"
                                 rb"|\bUncaught\b|\bpanic: ")


def decode(lines: list[bytes], source: str, dialect: Dialect,
           known: tuple[datetime | None, int | None] | None = None) -> Record:
    """The record, read in `dialect` (a line that is not of its format is text); `known` is the
    (time, level) already read from its first line."""
    text_lines = [line.decode("utf-8", "replace").rstrip("\r") for line in lines]
    content = [] if dialect.framing.plain else [dialect.content(line).decode("utf-8", "replace").rstrip("\r")
                                                 for line in lines]
    first = dialect.content(lines[0]) if lines else b""
    if dialect.fmt == "json" and first[:1] == b"{" and (data := _json_object(first)) is not None:
        record = _json_record(data, text_lines, source, dialect)
        if record.timestamp is None and known is not None:
            record.timestamp = known[0]
        return record
    if dialect.fmt == "access" and (match := _ACCESS.match(first)) is not None:
        status = int(match.group("status"))
        return Record(text_lines, source, "access", _clf_time(match.group("time").decode("ascii", "replace")),
                      _status_level(status), message=text_lines[0], status=status,
                      method=match.group("method").decode(), path=match.group("path").decode("utf-8", "replace"),
                      content=content)
    head = text_lines[0][:200] if text_lines else ""
    moment, level = known if known is not None else (parse_time(head, dialect), parse_level(head, first))
    return Record(text_lines, source, "text", moment, level, message=text_lines[0] if text_lines else "",
                  content=content)


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
    if isinstance(status, str) and status.isascii() and status.isdigit():     # "²" is a digit int() refuses
        status = int(status)
    return status if isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 599 else None


def _json_time(data: dict[str, Any], dialect: Dialect) -> datetime | None:
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
        return parse_time(value, dialect)
    return None


def _json_record(data: dict[str, Any], text_lines: list[str], source: str, dialect: Dialect) -> Record:
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
    timestamp = _json_time(data, dialect)
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
_ISO = re.compile(r"(\d{4})[-/](\d\d)[-/](\d\d)(?:[T ]|  )(\d?\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?\s?"
                  r"(Z|[+-]\d\d:?\d\d|UTC)?")
_CLF = re.compile(r"(\d\d)/(\w{3})/(\d{4}):(\d\d):(\d\d):(\d\d)(?: ([+-]\d{4}))?")
_APACHE = re.compile(r"\[\w{3} (\w{3}) +(\d{1,2}) (\d\d):(\d\d):(\d\d)(?:\.(\d+))? (\d{4})\]")
_PHP = re.compile(r"\[(\d\d)-(\w{3})-(\d{4}) (\d\d):(\d\d):(\d\d)(?: ([\w/+-]+))?\]")
_SYSLOG = re.compile(r"^ ?(\w{3}) +(\d{1,2}) (\d\d):(\d\d):(\d\d)\b")
_LEVEL = re.compile(r"(?<![\w/-])(trace|debug|info|notice|deprecated|warn(?:ing)?|error|severe|crit(?:ical)?"
                    r"|fatal|alert|emerg(?:ency)?|panic)(?![\w/.-])", re.I)
_KLOG = re.compile(rb"[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ ")
_DOTNET_LEVEL = {b"trce": 0, b"dbug": 10, b"info": 20, b"warn": 30, b"fail": 40, b"crit": 50}  # ASP.NET's console
_RUBY_LEVEL = {b"D": 10, b"I": 20, b"W": 30, b"E": 40, b"F": 50, b"A": 50}


def parse_time(head: str, dialect: Dialect = Dialect()) -> datetime | None:
    """The first timestamp in a line's head, as UTC. A time written without a zone is in the
    dialect's zone (UTC unless log_timezone says otherwise); a syslog time, which has no year, is
    the latest such time not more than a day after the dialect's `now` (none without a `now`)."""
    zone = dialect.zone
    try:
        if match := _ISO.search(head, 0, 80):
            year, month, day, hour, minute, second = map(int, match.group(1, 2, 3, 4, 5, 6))
            micro = int((match.group(7) or "0")[:6].ljust(6, "0"))
            if match.group(8):
                return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC) - _offset(match.group(8))
            return _utc(datetime(year, month, day, hour, minute, second, micro, tzinfo=zone))
        if match := _CLF.search(head, 0, 80):
            return _clf_time(match.group(0))
        if match := _APACHE.search(head, 0, 80):
            month = _MONTHS[match.group(1).lower()]
            micro = int((match.group(6) or "0")[:6].ljust(6, "0"))
            return _utc(datetime(int(match.group(7)), month, int(match.group(2)), int(match.group(3)),
                                 int(match.group(4)), int(match.group(5)), micro, tzinfo=zone))
        if match := _PHP.search(head, 0, 80):
            return _utc(datetime(int(match.group(3)), _MONTHS[match.group(2).lower()], int(match.group(1)),
                                 int(match.group(4)), int(match.group(5)), int(match.group(6)),
                                 tzinfo=_named_zone(match.group(7)) or zone))
        if dialect.now is not None and (match := _SYSLOG.match(head)):
            now = dialect.now.astimezone(zone)
            moment = datetime(now.year, _MONTHS[match.group(1).lower()], int(match.group(2)), int(match.group(3)),
                              int(match.group(4)), int(match.group(5)), tzinfo=zone)
            return _utc(moment.replace(year=now.year - 1) if moment > now + timedelta(days=1) else moment)
    except (ValueError, KeyError, OverflowError):
        return None
    return None


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def _named_zone(name: str | None) -> tzinfo | None:
    """PHP's error log names its zone (`[24-Nov-2026 14:02:07 Europe/Berlin]`)."""
    if not name or name == "UTC":
        return UTC if name else None
    try:
        return ZoneInfo(name)
    except (ValueError, ZoneInfoNotFoundError):
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


_PHP_WARNING = re.compile(rb"(?:PHP )?Warning(?: \(\d+\))?:\s+[\w\\]+(?:::\w+)?\(")


def parse_level(head: str, first: bytes) -> int | None:
    """The level named in a line's head (`first`: the line without its prefixes). A headless stack
    start counts as an error, and so does PHP's warning about a failed call (`Warning:
    file_put_contents(…): Failed to open stream`), which frameworks turn into a 500."""
    if first[1:4] == b", [" and first[:1] in _RUBY_LEVEL:
        return _RUBY_LEVEL[first[:1]]
    if first[:1] in _RUBY_LEVEL and _KLOG.match(first):
        return _RUBY_LEVEL[first[:1]]
    if _PHP_WARNING.match(first):
        return ERROR
    if first[4:6] == b": " and first[:4] in _DOTNET_LEVEL:
        return _DOTNET_LEVEL[first[:4]]
    if match := _LEVEL.search(head):
        return LEVELS[match.group(1).lower()]
    if _STACK.match(first) or _EXCEPTION.match(first):
        return ERROR
    return None
