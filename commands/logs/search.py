"""The scan: a service's logs read newest first, each record tested against the query.

Every log of every source (app.log and its rotated siblings, newest first; a command's output;
see commands/logs/sources) is a stream. A stream steps one block at a time and keeps its
position: the time of the oldest entry it has reached. The stream whose position is newest steps
next, so the streams move back in time together, and the caller can stop as soon as it holds
enough results newer than every position, because nothing left unread can be newer. That is why
the cost grows with how far back the match lies, not with the files' size. Without a window, a
scan stops at the default bound (the log's last 24 h or 256 MiB) and says so.

Blocks are gated before their lines are split into records: a block holding none of the query's
literals (the --grep text; for errors, the exact spellings of error words and of the catalog's
failure words, all looked for in one pass of a multi-literal search) cannot hold a match, and only
its first entries are parsed, to know how far back reading has come. A request id is gated as a
whole id (RE2: not where it begins a longer one), then verified: a token of its own in text
(`req-10` is not in `req-1000`), the request-id field's exact value in a JSON entry. A --grep
/regex/ runs on RE2, in time linear in the text.

A gzip file or a command can only be read forwards, to its end: their matches are folded while
streaming (a repeat replaces the kept one and adds to its count), so memory holds one record per
kind of match, however many lines repeat it. Closing the scan closes every stream, which kills a
command still running.

Entries later than now (beyond a little clock skew) are noted per source: a log written in local
time looks that much ahead of UTC, and its windows are off by as much.
"""

from __future__ import annotations

import functools
import itertools
import re
import time
from collections import OrderedDict
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import ahocorasick_rs
import re2

from commands.logs import causes
from commands.logs.analysis import fold_key
from commands.logs.reading import BLOCK, SourceError, SourcesRead, Span, forward_lines
from commands.logs.records import (
    ERROR,
    WARN,
    BackwardGrouper,
    Dialect,
    Record,
    decode,
    detect,
    earliest,
    forward_records,
    holds_access_lines,
    quick_level,
    quick_time,
    shown_level,
)
from commands.logs.sources import BackwardReader, Forward, Log, Pushdown

OUT_OF_ORDER = timedelta(minutes=2)      # entries may be written a little out of time order
CLOCK_SKEW = timedelta(minutes=5)        # entries this far past now are not yet "in the future"
FORWARD_BUFFER_BYTES = 8 * 1024 * 1024   # text of the matches kept from a gzip file or a command,
MAX_FORWARD_KINDS = 1000                 # and how many different ones (their repeats are counted)
_NEWEST = datetime.max.replace(tzinfo=UTC)
_TOKEN_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") | frozenset(
    range(128, 256))                     # an id's characters: a match must not touch one on either side

# The spellings an entry which is an error holds in some line: every level word that records.LEVELS
# ranks as an error (as written: lower case, capitalised, upper case), the words of the lines a
# headless stack starts with, PHP's runtime warnings, and the words the catalog's lone evidence is
# written with (causes.FAILURE_WORDS). A gate need not be exact, only never miss: a false hit costs a
# parsed block.
# Each word is looked for by a part that all its spellings but the upper-case one share ("rror" finds
# error and Error), and that part in upper case.
_ERROR_WORDS = tuple(spelling for part in ("rror", "xception", "atal", "anic", "evere", "lert", "merg", "raceback",
                                           "ncaught", "nhandled")
                     for spelling in (part, part.upper())) + ("crit", "Crit", "CRIT", "Warning:", "Warning (")
_WARN_WORDS = _ERROR_WORDS + ("arn", "ARN", "eprecat", "EPRECAT")
_JSON_ERROR_WORDS = ('"level":5', '"level":6', '"level": 5', '"level": 6', '"stack', '"exc_',
                     '"status":5', '"status": 5', '"status":"5', '"status": "5', '"status_code":5',
                     '"status_code": 5', '"statusCode":5', '"statusCode": 5')
_JSON_WARN_WORDS = _JSON_ERROR_WORDS + ('"level":4', '"level": 4', '"status":4', '"status": 4',
                                        '"status":"4', '"status": "4', '"status_code":4', '"status_code": 4',
                                        '"statusCode":4', '"statusCode": 4')
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False         # a pattern RE2 refuses is the user's to hear about, not stderr's
_RE2_BYTES = re2.Options()              # byte by byte: an id may hold any byte (one not valid UTF-8 too)
_RE2_BYTES.log_errors = False
_RE2_BYTES.encoding = re2.Options.Encoding.LATIN1
_SEARCHER_PATTERNS = 40        # past about 50 literals a search loses its fast (SIMD) prefilter: split them


class _Regex(Protocol):
    """A compiled bytes regex, Python's or RE2's."""

    def search(self, data: Any, pos: int = ..., endpos: int = ...) -> Any: ...


class Gate:
    """A test on raw bytes that every block holding a match passes; no literal and no regex: all pass.

    Literals are looked for all at once (Aho-Corasick, with a SIMD prefilter: several GB/s), as
    written: a literal that holds another is dropped, since the shorter one finds it too.
    """

    def __init__(self, literals: tuple[bytes, ...] = (), regex: _Regex | None = None):
        self.regex = regex
        kept = sorted(set(literals), key=len)
        self.literals = tuple(literal for index, literal in enumerate(kept)
                              if not any(shorter in literal for shorter in kept[:index]))
        searchers = -(-len(self.literals) // _SEARCHER_PATTERNS)
        self._searchers = [ahocorasick_rs.BytesAhoCorasick(list(self.literals[index::searchers]),
                                                           matchkind=ahocorasick_rs.MatchKind.LeftmostFirst)
                           for index in range(searchers)]

    def hits(self, data: bytes | bytearray, start: int = 0, end: int | None = None) -> bool:
        end = len(data) if end is None else end
        if self.regex is not None:
            return self.regex.search(data, start, end) is not None
        if not self.literals:
            return True
        view = memoryview(data)[start:end]
        return any(searcher.find_matches_as_indexes(view) for searcher in self._searchers)

    def hits_span(self, span: Span) -> bool:
        """Whether the span's lines may hold a match (its last line runs past the block's end)."""
        return self.hits(span.block, span.start, span.newline + 1) or (span.last is not None
                                                                       and self.hits(span.last))


class RegexError(ValueError):
    """A --grep /regex/ that RE2 does not accept (lookarounds, backreferences, bad syntax)."""


@dataclass(frozen=True)
class UserRegex:
    """A user's --grep /regex/[i], run by RE2: time linear in the text, whatever the pattern
    (`/(a+)+$/` cannot backtrack for minutes). Lines are matched with ^ and $ at each line."""

    text: str                      # as typed, between the slashes
    ignore_case: bool = False

    def __post_init__(self) -> None:
        self.compiled(str)          # refuse at once what RE2 cannot run

    def _source(self) -> str:
        return ("(?i)" if self.ignore_case else "") + "(?m)" + self.text

    def compiled(self, kind: type) -> Any:
        try:
            return _compile(self._source() if kind is str else to_bytes(self._source()))
        except (re2.error, TypeError, ValueError, UnicodeError) as error:
            raise RegexError(_re2_reason(error)) from None

    def search(self, text: str) -> bool:
        return self.compiled(str).search(text) is not None


@functools.lru_cache(maxsize=64)
def _compile(source: str | bytes) -> Any:
    return re2.compile(source, _RE2_OPTIONS)


def _re2_reason(error: Exception) -> str:
    reason = error.args[0] if error.args else str(error)
    text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
    return text + " (regexes run in linear time: no lookarounds or backreferences)"


def to_bytes(text: str) -> bytes:
    """Text typed by a user as the bytes a log holds: an invalid byte given on a command line comes
    back as itself (surrogateescape), any other lone surrogate never matches but never raises."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


@dataclass(frozen=True)
class Query:
    min_level: int | None = ERROR
    grep: bytes | None = None                      # a literal (case as typed)
    pattern: UserRegex | None = None               # a regex, on the entry's lines as written
    pattern_literal: bytes | None = None           # a literal every match of `pattern` contains
    request_id: bytes | None = None
    statuses: tuple[int, int] | None = None        # access entries with a status in [low, high]
    since: datetime | None = None
    until: datetime | None = None

    def gate(self, dialect: Dialect) -> Gate:
        if self.request_id is not None:
            # the whole id: not where it is the start of a longer one (req-1000 in req-10001)
            after = rb"(?:[^A-Za-z0-9_\-\x80-\xff]|$)" if self.request_id[-1] in _TOKEN_BYTES else b""
            return Gate(regex=re2.compile(b"(?m)" + re2.escape(self.request_id) + after, _RE2_BYTES))
        literal = self.grep or self.pattern_literal
        if literal:
            return Gate((literal,))
        if self.pattern is not None:
            try:
                return Gate(regex=self.pattern.compiled(bytes))
            except RegexError:      # a pattern that only makes sense on text: every block is read
                return Gate()
        if self.statuses is not None:
            low, high = self.statuses
            digits = "|".join(str(status) for status in range(low, high + 1))
            return Gate(regex=re.compile(rf'" (?:{digits}) |"status(?:_?code)?"\s*:\s*"?(?:{digits})\b'.encode()))
        if self.min_level is None or self.min_level < WARN:
            return Gate()
        if dialect.fmt == "access":
            return Gate(regex=re.compile(rb'" 5\d\d ' if self.min_level >= ERROR else rb'" [45]\d\d '))
        words = _ERROR_WORDS if self.min_level >= ERROR else _WARN_WORDS
        if dialect.fmt == "json":
            words += _JSON_ERROR_WORDS if self.min_level >= ERROR else _JSON_WARN_WORDS
        return Gate(tuple(word.encode() for word in words + causes.FAILURE_WORDS))

    def accept(self, lines: list[bytes], source: str, dialect: Dialect) -> Record | None:
        """The decoded record when the entry matches, else None (decoding only what may match)."""
        if self.grep is not None and not any(self.grep in line for line in lines):
            return None
        # a JSON entry's request id is verified once decoded
        json_entry = dialect.fmt == "json" and dialect.content(lines[0])[:1] == b"{"
        if self.request_id is not None and not any(
                self.request_id in line if json_entry else holds_token(line, self.request_id) for line in lines):
            return None
        if self.pattern_literal is not None and not any(self.pattern_literal in line for line in lines):
            return None
        if self.pattern is not None and not self.pattern.search(b"\n".join(lines).decode("utf-8", "replace")):
            return None
        level = quick_level(lines[0], dialect)
        if self.min_level is not None and (level is None or level < self.min_level) and self.statuses is None:
            level = shown_level(lines, level, dialect, causes.shows_alone)
            if level is None or level < self.min_level:
                return None
        moment = quick_time(lines[0], dialect)
        if moment is not None and ((self.since and moment < self.since) or (self.until and moment > self.until)):
            return None
        record = decode(lines, source, dialect, (moment, level))
        if self.request_id is not None and json_entry and not _of_request(record, self.request_id):
            return None
        if self.statuses is not None:
            low, high = self.statuses
            if record.status is None or not low <= record.status <= high:
                return None
        return record


def _of_request(record: Record, request_id: bytes) -> bool:
    """A JSON entry is the request's when its request-id field is exactly the id; without such a
    field, when its message or stack holds the id as a whole token."""
    if record.fmt == "json" and record.request_id is not None:
        return record.request_id == request_id.decode("utf-8", "replace")
    texts = [record.message, *record.lines[1:]] if record.fmt == "json" else record.content
    return any(holds_token(text.encode(), request_id) for text in texts)


def holds_token(data: bytes, token: bytes) -> bool:
    """Whether `token` is in `data` as a whole: no letter, digit, `_` or `-` right before or after
    it (unless the token itself starts or ends with another character). Found with bytes.find."""
    check_before = token[0] in _TOKEN_BYTES
    check_after = token[-1] in _TOKEN_BYTES
    position = data.find(token)
    while position >= 0:
        end = position + len(token)
        if not (check_before and position > 0 and data[position - 1] in _TOKEN_BYTES) \
                and not (check_after and end < len(data) and data[end] in _TOKEN_BYTES):
            return True
        position = data.find(token, position + 1)
    return False


@dataclass
class _Step:
    records: list[Record]
    position: datetime | None        # the oldest time reached, if this step saw one
    source: str = ""
    newest: datetime | None = None   # the newest time seen, when the step knows it
    done: bool = False               # the stream's last step: its source was read to its start


@dataclass(frozen=True)
class Bound:
    """How far back a scan without a window reads by default: this much of the log's time, counted
    from its newest entry, or this many bytes, whichever comes first."""

    age: timedelta
    bytes: int


_NOTHING: list[Record | None] = [None]     # a step without records: the caller may stop there


class Scan:
    """Matching records of all streams, roughly newest first; `frontier` says what is settled.

    Iterating yields a record, or None after a step that found none, so the caller can stop at any
    step. A record newer than `frontier` is final: no stream can still yield a newer one.
    """

    def __init__(self, streams: list[Generator[_Step, None, None]], query: Query, deadline: float, stats: SourcesRead,
                 now: datetime, bound: Bound | None = None):
        self.streams = streams
        self.query = query
        self.deadline = deadline
        self.stats = stats
        self.now = now
        self.bound = bound
        self.positions: list[datetime] = [_NEWEST] * len(streams)
        self.live = [True] * len(streams)
        self.done = [False] * len(streams)        # read to its start (or, with a window, to the window's)
        self.reached: datetime | None = None     # the oldest time any stream reached
        self.newest: datetime | None = None      # the newest entry any stream holds
        self.timed_out = False
        self.bounded: str | None = None          # "time" or "bytes": the default bound stopped the reading
        self.ahead: dict[str, timedelta] = {}     # source -> how far past now its newest entry is

    def close(self) -> None:
        """Stop every stream: files are closed, a command still running is killed."""
        for stream in self.streams:
            stream.close()

    def __enter__(self) -> Scan:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def frontier(self) -> datetime | None:
        """The newest position of a stream still reading; None when every stream is done."""
        open_positions = [p for p, live in zip(self.positions, self.live, strict=True) if live]
        return max(open_positions) if open_positions else None

    @property
    def complete(self) -> bool:
        """Whether every source was read to its start (or to the window's start): nothing older was left."""
        return all(self.done)

    def __iter__(self) -> Iterator[Record | None]:
        while any(self.live):
            if time.monotonic() > self.deadline:
                self.timed_out = True
                return
            if self.bound is not None and self.stats.bytes_read >= self.bound.bytes:
                self.bounded = "bytes"
                return
            index = max((i for i, live in enumerate(self.live) if live), key=lambda i: self.positions[i])
            try:
                step = next(self.streams[index])
            except StopIteration:
                self.live[index] = False
                self.done[index] = True
                continue
            except SourceError as error:
                self.stats.failed(str(error))
                self.live[index] = False
                self.done[index] = True
                continue
            self._note_ahead(step)
            if step.done:
                self.done[index] = True
            if step.position is not None:
                self.positions[index] = min(self.positions[index], step.position)
                self.reached = min(self.reached or _NEWEST, step.position)
                if self.query.since and step.position < self.query.since - OUT_OF_ORDER:
                    self._stop(index, done=True)
                elif (self.bound is not None and self.newest is not None
                      and step.position < self.newest - self.bound.age - OUT_OF_ORDER):
                    self._stop(index, done=False)
                    self.bounded = self.bounded or "time"
            yield from step.records or _NOTHING

    def _stop(self, index: int, *, done: bool) -> None:
        self.streams[index].close()
        self.live[index] = False
        self.done[index] = done

    def _note_ahead(self, step: _Step) -> None:
        newest = max((moment for moment in (step.newest, step.position, *(r.timestamp for r in step.records))
                      if moment is not None), default=None)
        if newest is not None and newest <= self.now + CLOCK_SKEW:
            self.newest = max(self.newest or newest, newest)
        if newest is not None and newest > self.now + CLOCK_SKEW:
            self.ahead[step.source] = max(self.ahead.get(step.source, timedelta(0)), newest - self.now)


# -- streams ----------------------------------------------------------------------------------------


def log_stream(log: Log, dialect: Dialect, query: Query, stats: SourcesRead,
               deadline: float) -> Generator[_Step, None, None]:
    """One log of a source, its parts newest first: a part read backwards steps span by span, one
    read forwards is folded as it streams. A part that cannot be read is a note, and the older ones
    are still read; a log that yields nothing at all is said to be empty."""
    before, failures = stats.bytes_read, len(stats.unreadable)
    for part in log.parts():
        try:
            if isinstance(part, Forward):
                yield from _forward_stream(part.chunks(), part.name, dialect, query, stats, deadline)
                continue
            reader = part.open()
            try:
                yield from _backward_stream(reader, part.name, dialect, query, stats)
            finally:
                reader.close()
        except SourceError as error:
            stats.failed(str(error))
    if stats.bytes_read == before and len(stats.unreadable) == failures:
        stats.failed(f"{log.name}: empty, nothing to read")
    yield _Step([], None, done=True)


def pushdown(query: Query) -> Pushdown:
    """What a source may do on its side for this query (see commands/logs/sources)."""
    literal = query.grep or query.request_id or query.pattern_literal
    return Pushdown(since=query.since, until=query.until, literals=(literal,) if literal else ())


def _backward_stream(reader: BackwardReader, source: str, dialect: Dialect, query: Query,
                     stats: SourcesRead) -> Iterator[_Step]:
    grouper: BackwardGrouper | None = None
    gate = Gate()
    newest: datetime | None = None
    for span in reader.spans():
        if grouper is None:
            dialect = detect(span.lines(), dialect)
            if holds_access_lines(span.lines(), dialect):
                stats.with_access_lines.add(source)
            grouper = BackwardGrouper(dialect)
            gate = query.gate(dialect)
            newest = _newest_time(span.lines(), dialect)
        if not gate.hits_span(span):
            yield _matching(*grouper.feed(span, False), source, dialect, query, newest)
            continue
        # a match in a large block: look again in 64 KiB pieces, and assemble only the pieces that hit
        reader.matched()
        for piece in span.pieces(BLOCK):
            yield _matching(*grouper.feed(piece, gate.hits_span(piece)), source, dialect, query, newest)
    if grouper is not None:
        yield _matching(grouper.finish(), None, source, dialect, query, newest)


def _newest_time(lines: list[bytes], dialect: Dialect) -> datetime | None:
    """The time of the newest entry among a file's last lines that has one."""
    return next((moment for line in reversed(lines[-50:]) if (moment := quick_time(line, dialect)) is not None),
                None)


def _matching(raw: list[list[bytes]], earliest_start: bytes | None, source: str, dialect: Dialect, query: Query,
              newest: datetime | None) -> _Step:
    """The matches among `raw` (newest first), and the time of the earliest entry reached."""
    records = [record for lines in raw if (record := query.accept(lines, source, dialect)) is not None]
    first = earliest_start or (raw[-1][0] if raw else None)
    return _Step(records, quick_time(first, dialect) if first is not None else None, source, newest)


def _forward_stream(chunks: Generator[bytes, None, None], source: str, dialect: Dialect, query: Query,
                    stats: SourcesRead, deadline: float) -> Iterator[_Step]:
    """Read a forward-only source to its end, folding its matches as they come, then give them
    newest first. After every chunk a step without records lets the scan stop it (and closing this
    generator closes `chunks`, which kills a command)."""
    kept = _Kept(fold=query.request_id is None)
    oldest: datetime | None = None
    last: list[bytes] | None = None
    try:
        batches = forward_lines(chunks)
        first = next(batches, [])
        detected = detect(first, dialect)
        if holds_access_lines(first, detected):
            stats.with_access_lines.add(source)
        for completed in forward_records(itertools.chain([first], batches), detected):
            for lines in completed:
                if oldest is None:
                    oldest = quick_time(lines[0], detected)
                record = query.accept(lines, source, detected)
                if record is not None:
                    kept.add(record)
            last = completed[-1] if completed else last
            if time.monotonic() > deadline:
                stats.notes.append(f"{source}: stopped reading at the time limit")
                break
            yield _Step([], None, source)
    finally:
        chunks.close()
    if kept.dropped:
        kinds = f" ({kept.dropped_kinds:,} different ones)" if kept.fold else ""
        stats.notes.append(f"{source}: {kept.dropped:,} older matches{kinds} were not kept: it can only be read "
                           f"forwards, and only the newest are kept")
    records = kept.newest_first()
    newest = max((moment for moment in (quick_time(last[0], detected) if last else None,
                                        *(record.timestamp for record in records)) if moment is not None),
                 default=None)
    yield _Step(records, oldest, source, newest)


class _Kept:
    """The matches of a forward-only source, bounded by what is kept: at most MAX_FORWARD_KINDS
    records and FORWARD_BUFFER_BYTES of their text, whatever the number of lines read.

    Folding, a match replaces its kept repeat (same `fold_key`) and takes over its count and first
    time, so counts include every occurrence read. The kinds seen least recently are let go first.
    Not folding (a request's entries), every match is its own kind: the newest are kept.
    """

    def __init__(self, *, fold: bool):
        self.fold = fold
        self.records: OrderedDict[object, tuple[Record, int]] = OrderedDict()   # least recently seen first
        self.size = 0
        self.dropped = 0                 # occurrences let go
        self.dropped_kinds = 0
        self._sequence = itertools.count()

    def add(self, record: Record) -> None:
        key = fold_key(record) if self.fold else next(self._sequence)
        repeat = self.records.pop(key, None)
        if repeat is not None:
            previous, size = repeat
            record.repeats += previous.repeats
            record.first_seen = earliest(previous.first_seen, previous.timestamp, record.timestamp)
            self.size -= size
        size = sum(len(line) for line in record.lines)
        self.records[key] = (record, size)
        self.size += size
        while len(self.records) > 1 and (len(self.records) > MAX_FORWARD_KINDS or self.size > FORWARD_BUFFER_BYTES):
            _, (gone, size) = self.records.popitem(last=False)
            self.size -= size
            self.dropped += gone.repeats
            self.dropped_kinds += 1

    def newest_first(self) -> list[Record]:
        return [record for record, _ in reversed(self.records.values())]


def required_literal(pattern: str) -> str | None:
    """The longest plain text every match of `pattern` must contain (3 characters or more), if the
    regex is simple enough to tell: no alternation outside a group, no global inline flags. Groups
    and classes count as unknown text."""
    if re.search(r"\(\?[aiLmsux]+\)", pattern):
        return None
    runs: list[str] = []
    run: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            escaped = pattern[index + 1:index + 2]
            index += 2
            if escaped and not escaped.isalnum():
                run.append(escaped)
                continue
            runs.append("".join(run))
            run = []
            continue
        if char in "*?{":
            if run:
                run.pop()
            runs.append("".join(run))
            run = []
            if char == "{":
                index = pattern.find("}", index) + 1 or len(pattern)
                continue
        elif char == "+":
            runs.append("".join(run))
            run = []
        elif char in "([":
            runs.append("".join(run))
            run = []
            index = _closing(pattern, index)
            continue
        elif char == "|":
            return None
        elif char in ".^$)]":
            runs.append("".join(run))
            run = []
        else:
            run.append(char)
        index += 1
    runs.append("".join(run))
    longest = max(runs, key=len)
    return longest if len(longest) >= 3 else None


def _closing(pattern: str, index: int) -> int:
    """The index after the group or class that opens at `index`, and after a quantifier on it."""
    opening = pattern[index]
    depth = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            index += 2
            continue
        if opening == "[":
            if char == "]" and index > 0 and pattern[index - 1] != "[":
                return index + 1
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return index + 1
        index += 1
    return len(pattern)
