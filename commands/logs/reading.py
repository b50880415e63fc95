"""Where log lines come from: files (globs, rotated siblings, gzip) and a configured command.

Plain files are read from the end in blocks with `os.pread` (never mmap: a logrotate
`copytruncate` under a mapping kills the process with SIGBUS), so finding the last error costs
what lies after it, not the file's size. Blocks start at 64 KiB, so the newest entries come back
at once, and double up to 1 MiB while the reader skips them, so a long way back costs the byte
search and not the Python around it. Gzip files and a command's output can only be read
forward; they are streamed in chunks. Every line is bytes, cut at `MAX_LINE` bytes, so a 10 MB
line or a file without a newline keeps memory flat.

Only regular files are read: a directory, a FIFO or a device (a glob matching /dev/zero) is
reported, never opened for reading, so nothing blocks or reads forever. A command runs as a
child that is killed whenever its reading stops, however it stops (the end, a limit, or the
generator closed or collected because the scan was abandoned).

`SourcesRead` keeps which sources could be read and why the others could not: when none could, the
command fails saying so instead of answering "no errors".

Error tree:

    SourceError              one source could not be read; the reply names it, the others are read
    ├── SourceUnreadable     missing, not a regular file, permission denied, I/O error, not gzip
    └── CommandFailed        log_command did not start, exited non-zero, or printed nothing in time
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import os
import re
import selectors
import signal
import stat
import subprocess
import time
import zlib
from collections import deque
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path

BLOCK = 64 * 1024                  # the first blocks read from a file's end
MAX_BLOCK = 1024 * 1024            # blocks double up to this while nothing in them matches
MAX_LINE = MAX_BLOCK               # longer lines are cut, keeping their beginning
MAX_ROTATED = 30                   # rotated siblings of one file considered, newest first
MAX_LOGS = 64                      # logs (a file and its rotations) read at once, the newest written first
COMMAND_OUTPUT_LIMIT = 256 * 1024 * 1024
COMMAND_TIMEOUT_SECONDS = 20
_ROTATED = re.compile(r"^(?P<base>.+?)(?:[.-](?P<number>\d{1,3})|[.-](?P<date>\d{8}|\d{4}-\d\d-\d\d))?"
                      r"(?P<gz>\.gz)?$")


class SourceError(Exception):
    """A source that could not be read: said in one line, shown as a note with the results."""


class SourceUnreadable(SourceError):
    pass


class CommandFailed(SourceError):
    pass


@dataclass
class SourcesRead:
    """What reading cost and where it stopped, across all sources of one query."""

    bytes_read: int = 0
    notes: list[str] = field(default_factory=list)
    read: set[str] = field(default_factory=set)             # the sources that yielded something
    not_read: list[str] = field(default_factory=list)       # logs left unread (too many files): said in the reply
    unreadable: list[str] = field(default_factory=list)     # why the others could not (also in notes)
    with_access_lines: set[str] = field(default_factory=set)   # sources holding HTTP access entries

    def failed(self, reason: str) -> None:
        self.unreadable.append(reason)
        self.notes.append(reason)


@dataclass(frozen=True)
class LogFile:
    path: Path
    name: str                       # what the reply calls it: app.log, app.log.2.gz

    @property
    def compressed(self) -> bool:
        return self.path.suffix == ".gz"


def discover(patterns: tuple[str, ...], stats: SourcesRead, *, links_outside: bool = False) -> list[list[LogFile]]:
    """The configured globs -> one list per log, newest file first (app.log, app.log.1, app.log-20261124.gz),
    the logs most recently written first, at most MAX_LOGS of them (the others are named in
    `stats.not_read`). A file that resolves outside the directories the globs name (a symlink to
    /etc/passwd in a log directory) is refused, unless `links_outside`."""
    directories = [_directory_of(pattern) for pattern in patterns]
    rotations = _Rotations()
    families: dict[Path, list[tuple[tuple[int, str], Path]]] = {}
    for pattern in patterns:
        matches = sorted(Path(p) for p in glob(os.path.expanduser(pattern)))
        if not matches:
            stats.failed(f"{pattern}: {'no file matches' if _has_magic(pattern) else 'no such file'}")
        for path in matches:
            if (problem := _not_a_log_file(path, directories, links_outside)) is not None:
                stats.failed(f"{path}: {problem}")
                continue
            for sibling in _with_rotated(path, rotations):
                if sibling != path and _outside(sibling, directories, links_outside):
                    continue
                base, order = _rotation(sibling)
                members = families.setdefault(base, [])
                if all(existing != sibling for _, existing in members):
                    members.append((order, sibling))
    logs = []
    for _, members in sorted(families.items()):
        members.sort(key=lambda item: item[0])
        logs.append([LogFile(path, path.name) for _, path in members[:MAX_ROTATED]])
    if len(logs) > MAX_LOGS:
        logs.sort(key=lambda files: _modified(files[0].path), reverse=True)
        stats.not_read = [files[0].name for files in logs[MAX_LOGS:]]
        stats.notes.append(f"{len(logs) - MAX_LOGS:,} more logs match {', '.join(patterns)} and were not read: only "
                           f"the {MAX_LOGS} written most recently were (narrow the glob in logs to read others)")
        logs = logs[:MAX_LOGS]
    return logs


def _directory_of(pattern: str) -> str:
    """The directory a glob names: its path up to the first part with a wildcard, resolved."""
    parts = Path(os.path.expanduser(pattern)).parts
    fixed = list(itertools.takewhile(lambda part: not _has_magic(part), parts[:-1]))
    return os.path.realpath(os.path.join(*fixed)) if fixed else os.path.realpath(".")


def _outside(path: Path, directories: list[str], links_outside: bool) -> bool:
    if links_outside:
        return False
    real = os.path.realpath(path)
    return not any(real == directory or real.startswith(directory.rstrip(os.sep) + os.sep)
                   for directory in directories)


def _modified(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _has_magic(pattern: str) -> bool:
    return re.search(r"[*?\[]", pattern) is not None


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _not_a_log_file(path: Path, directories: list[str], links_outside: bool) -> str | None:
    """Why `path` cannot be read as a log (missing, not a regular file, a link out of the log
    directories), or None."""
    try:
        mode = path.stat().st_mode
    except OSError as error:
        return error.strerror.lower() if error.strerror else str(error)
    if _outside(path, directories, links_outside):
        return ("a link to a file outside the directories in logs; not read "
                "(set log_links_outside = true to allow it)")
    return _kind_problem(mode)


def _kind_problem(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _KINDS if test(mode)), "a special file")
    return f"{kind}, not a log file"


def _with_rotated(path: Path, rotations: _Rotations) -> list[Path]:
    """The file and its rotated siblings; a sibling that is not a regular file is kept, so that
    reading it reports it."""
    base, _ = _rotation(path)
    return [path, *rotations.of(base)] if base == path else [path]


class _Rotations:
    """The rotated files in each directory by the live file they belong to, from one listing per
    directory (a glob per file would cost the square of a directory of 10,000 logs)."""

    def __init__(self) -> None:
        self._by_directory: dict[Path, dict[Path, list[Path]]] = {}

    def of(self, base: Path) -> list[Path]:
        directory = base.parent
        if directory not in self._by_directory:
            rotated: dict[Path, list[Path]] = {}
            try:
                names = os.listdir(directory)
            except OSError:
                names = []
            for name in names:
                candidate = directory / name
                live, _ = _rotation(candidate)
                if live != candidate:
                    rotated.setdefault(live, []).append(candidate)
            self._by_directory[directory] = rotated
        return self._by_directory[directory].get(base, [])


def open_regular(log: LogFile) -> int:
    """A file descriptor of `log`, checked to be a regular file before anything is read from it.

    Opened non-blocking: opening a FIFO for reading would otherwise wait for a writer forever.
    """
    try:
        fd = os.open(log.path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as error:
        raise SourceUnreadable(f"{log.name}: {error.strerror.lower() if error.strerror else error}") from None
    problem = _kind_problem(os.fstat(fd).st_mode)
    if problem is not None:
        os.close(fd)
        raise SourceUnreadable(f"{log.name}: {problem}")
    return fd


def _rotation(path: Path) -> tuple[Path, tuple[int, str]]:
    """(the live file's path, sort key: newest first) for app.log, app.log.1, app.log-20261124.gz."""
    match = _ROTATED.match(path.name)
    if match is None or not (match.group("number") or match.group("date") or match.group("gz")):
        return path, (0, "")
    base = path.with_name(match.group("base"))
    if match.group("number"):
        return base, (int(match.group("number")), "")
    if match.group("date"):
        # newest date first: invert the digits so a plain ascending sort puts it first
        return base, (1, "".join(chr(ord("9") - ord(c) + ord("0")) if c.isdigit() else c
                                 for c in match.group("date")))
    return base, (0, "")


# -- reading backwards ---------------------------------------------------------------------------


class Span:
    """The whole lines that end in one block, split only when asked: a block the gate rejects is
    never split.

    Their bytes are `block[start:newline]` and then `last`, the line that runs past the block's
    last newline, finished with what later blocks held of it (None at a file's final newline).
    The block may be the reader's buffer, filled again for the next span: what a span gives
    (`lines`, `iter_lines`) is copied out of it, and a span is used up before the next is read.
    """

    def __init__(self, block: bytes | bytearray, start: int, newline: int, last: bytes | None):
        self.block = block
        self.start = start
        self.newline = newline
        self.last = last
        self._lines: list[bytes] | None = None

    def lines(self) -> list[bytes]:
        if self._lines is None:
            inner = (bytes(memoryview(self.block)[self.start:self.newline]).split(b"\n")
                     if self.newline >= self.start else [])
            self._lines = inner + ([self.last] if self.last is not None else [])
        return self._lines

    def pieces(self, size: int) -> Iterator[Span]:
        """The same lines as spans of about `size` bytes each, newest first, over the same block."""
        end, last = self.newline, self.last
        while end - self.start > size:
            cut = self.block.rfind(b"\n", self.start, end - size)
            if cut < 0:
                break
            yield Span(self.block, cut + 1, end, last)
            end, last = cut, None
        yield Span(self.block, self.start, end, last)

    def iter_lines(self) -> Iterator[bytes]:
        """The lines from the top, split one at a time."""
        if self._lines is not None:
            yield from self._lines
            return
        view = memoryview(self.block)
        position = self.start
        while self.newline >= position:
            end = self.block.find(b"\n", position, self.newline + 1)
            yield bytes(view[position:end])
            position = end + 1
        if self.last is not None:
            yield self.last


class BackwardFile:
    """A file read from its end to its start in blocks, as whole lines.

    The size is taken when opened: lines appended later are not read. A file truncated while it is
    read (copytruncate) ends the reading with a note instead of reading garbage. Blocks are read
    into one buffer, filled again for each: a new megabyte for every block would cost more in page
    faults than the reading itself.
    """

    def __init__(self, log: LogFile, stats: SourcesRead):
        self.log = log
        self.stats = stats
        self.fd = open_regular(log)
        self.size = os.fstat(self.fd).st_size
        if self.size:
            stats.read.add(log.name)
        self.block_size = BLOCK

    def matched(self) -> None:
        """The last span held a match: read small blocks again, matches come in clusters."""
        self.block_size = BLOCK

    def close(self) -> None:
        os.close(self.fd)

    def spans(self) -> Iterator[Span]:
        """Newest block first. A line that began in an earlier block comes with that block."""
        unfinished = _Unfinished()          # the line whose beginning is not read yet
        buffer = bytearray(min(MAX_BLOCK, self.size))
        view = memoryview(buffer)
        offset = self.size
        while offset > 0:
            start = max(0, offset - self.block_size)
            self.block_size = min(self.block_size * 2, MAX_BLOCK)
            length = offset - start
            try:
                got = os.preadv(self.fd, [view[:length]], start)
            except OSError as error:
                reason = (error.strerror or str(error)).lower()
                self.stats.notes.append(f"{self.log.name}: read failed ({reason}); stopped there")
                return
            if got < length:
                self.stats.notes.append(f"{self.log.name}: truncated while being read (rotated?); stopped there")
                return
            self.stats.bytes_read += length
            at_end = offset == self.size
            offset = start
            body = buffer.find(b"\n", 0, length) + 1 if start > 0 else 0
            if body == 0 and start > 0:
                unfinished.prepend(bytes(view[:length]))
                continue
            newline = buffer.rfind(b"\n", 0, length)
            beginning = bytes(view[newline + 1:length])
            last = None if at_end and beginning == b"" else unfinished.finish(beginning)
            unfinished = _Unfinished()
            if body:
                unfinished.prepend(bytes(view[:body - 1]))
            yield Span(buffer, body, newline, last)


class _Unfinished:
    """The fragments of one line read backwards, keeping at most MAX_LINE bytes of its beginning."""

    def __init__(self) -> None:
        self.fragments: deque[bytes] = deque()
        self.size = 0
        self.dropped = 0

    def prepend(self, fragment: bytes) -> None:
        self.fragments.appendleft(fragment)
        self.size += len(fragment)
        while len(self.fragments) > 1 and self.size - len(self.fragments[-1]) >= MAX_LINE:
            last = self.fragments.pop()
            self.size -= len(last)
            self.dropped += len(last)

    def finish(self, beginning: bytes) -> bytes:
        line = beginning + b"".join(self.fragments)
        return _cut(line, len(line) + self.dropped)


def _cut(line: bytes, length: int | None = None) -> bytes:
    length = len(line) if length is None else length
    if length <= MAX_LINE:
        return line
    return line[:MAX_LINE] + f" …[line cut: {length:,} bytes]".encode()


# -- reading forwards (gzip, a command) -------------------------------------------------------


def forward_lines(chunks: Iterator[bytes]) -> Iterator[list[bytes]]:
    """Chunks of a stream -> lists of whole lines; a line longer than MAX_LINE is cut."""
    carry = b""
    dropped = 0
    for chunk in chunks:
        lines = (carry + chunk).split(b"\n")
        carry = lines.pop()
        if lines:
            lines[0] = _cut(lines[0], len(lines[0]) + dropped)
            lines[1:] = [_cut(line) for line in lines[1:]]
            dropped = 0
        if len(carry) > MAX_LINE:
            dropped += len(carry) - MAX_LINE
            carry = carry[:MAX_LINE]
        if lines:
            yield lines
    if carry:
        yield [_cut(carry, len(carry) + dropped)]


def gzip_chunks(log: LogFile, stats: SourcesRead) -> Generator[bytes, None, None]:
    raw = os.fdopen(open_regular(log), "rb")
    with raw, gzip.GzipFile(fileobj=raw, mode="rb") as handle:
        started = False
        while True:
            try:
                chunk = handle.read1(BLOCK)       # what one step inflates: a cut stream still gives its start
            except (OSError, EOFError, zlib.error) as error:
                if not started:
                    raise SourceUnreadable(f"{log.name}: {_gzip_problem(error)}") from None
                stats.notes.append(f"{log.name}: {_gzip_problem(error)}; read up to there")
                return
            started = True
            if not chunk:
                return
            stats.read.add(log.name)
            stats.bytes_read += len(chunk)
            yield chunk


def _gzip_problem(error: Exception) -> str:
    if isinstance(error, EOFError):
        return "the gzip stream ends early (still being written?)"
    if isinstance(error, gzip.BadGzipFile):
        return "not a gzip file"
    return f"corrupt gzip data ({error})"


def command_chunks(argv: tuple[str, ...], stats: SourcesRead, deadline: float) -> Generator[bytes, None, None]:
    """stdout of `argv` (no shell), until it exits, `COMMAND_OUTPUT_LIMIT` bytes, or the deadline.

    The child never outlives the reading: it is killed in `finally`, which also runs when this
    generator is closed or garbage-collected before the output ends (the scan was abandoned). It
    runs in a process group of its own, killed whole, so a wrapper's children go with it.
    """
    name = os.path.basename(argv[0])
    try:
        process = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, shell=False, process_group=0)
    except OSError as error:
        raise CommandFailed(f"{name}: cannot run it ({error.strerror.lower() if error.strerror else error})") \
            from None
    try:
        yield from _output(process, name, stats, min(deadline, time.monotonic() + COMMAND_TIMEOUT_SECONDS))
    finally:
        if process.returncode is None:      # not reaped yet, so its pid still names its group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def _output(process: subprocess.Popen[bytes], name: str, stats: SourcesRead, deadline: float) -> Iterator[bytes]:
    started = time.monotonic()
    errors = bytearray()
    total = 0
    assert process.stdout is not None and process.stderr is not None      # both are pipes
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        selector.register(process.stderr, selectors.EVENT_READ)
        open_streams = 2
        while open_streams:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                took = f"{time.monotonic() - started:.0f} s"
                if not total:
                    raise CommandFailed(f"{name}: printed nothing in {took}; stopped it")
                stats.notes.append(f"{name}: stopped after {took}; read what it printed by then")
                return
            for key, _ in selector.select(timeout=remaining):
                data = os.read(key.fd, BLOCK)
                if not data:
                    selector.unregister(key.fileobj)
                    open_streams -= 1
                elif key.fileobj is process.stderr:
                    errors = (errors + data)[-2000:]
                else:
                    total += len(data)
                    stats.bytes_read += len(data)
                    stats.read.add(name)
                    yield data
                    if total >= COMMAND_OUTPUT_LIMIT:
                        stats.notes.append(f"{name}: output stopped at {COMMAND_OUTPUT_LIMIT >> 20} MiB")
                        return
    try:
        code = process.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        stats.notes.append(f"{name}: did not exit in time")
        return
    if code != 0:
        last = errors.decode("utf-8", "replace").strip().splitlines()
        raise CommandFailed(f"{name} exited with code {code}" + (f": {last[-1][:300]}" if last else ""))
    if not total:       # `journalctl -u <typo>` exits 0 having printed nothing: not an all-clear
        raise CommandFailed(f"{name}: printed nothing (exit code 0)")
