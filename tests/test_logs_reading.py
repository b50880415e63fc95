"""Reading logs: backwards in blocks, rotated and gzipped siblings, a command, and hostile input."""

from __future__ import annotations

import gzip
import os
import random
import sys
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from commands.logs import reading, search
from commands.logs.reading import (
    BackwardFile,
    CommandFailed,
    LogFile,
    SourcesRead,
    SourceUnreadable,
    command_chunks,
    discover,
    forward_lines,
    gzip_chunks,
)
from commands.logs.records import Dialect
from commands.logs.report import EventGroups
from commands.logs.search import Query, Scan, log_stream
from commands.logs.sources import Pushdown
from commands.logs.sources.command import CommandLog
from commands.logs.sources.files import FileLog


def backward_lines(path: Path, stats: SourcesRead | None = None) -> list[bytes]:
    reader = BackwardFile(LogFile(path, path.name), stats or SourcesRead())
    lines: list[bytes] = []
    for span in reader.spans():
        lines[:0] = span.lines()
    reader.close()
    return lines


def expected_lines(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    if data.endswith(b"\n") or not data:
        lines.pop()
    return [line if len(line) <= reading.MAX_LINE
            else line[:reading.MAX_LINE] + f" …[line cut: {len(line):,} bytes]".encode() for line in lines]


@pytest.fixture
def small_blocks(monkeypatch):
    """Tiny blocks and lines, so every edge (a line across many blocks, a cut) is exercised."""
    monkeypatch.setattr(reading, "BLOCK", 16)
    monkeypatch.setattr(reading, "MAX_BLOCK", 64)
    monkeypatch.setattr(reading, "MAX_LINE", 64)


def test_backwards_gives_every_line_whatever_the_block_edges(tmp_path, small_blocks):
    generator = random.Random(7)
    for _ in range(300):
        lines = [bytes(generator.choice(b"ab\r") for _ in range(generator.choice([0, 1, 15, 16, 17, 63, 64, 65, 200])))
                 for _ in range(generator.randint(0, 10))]
        data = b"\n".join(lines) + (b"\n" if lines and generator.random() < 0.5 else b"")
        path = tmp_path / "app.log"
        path.write_bytes(data)
        assert backward_lines(path) == expected_lines(data)
        chunks = [data[i:i + 7] for i in range(0, len(data), 7)]
        assert [line for batch in forward_lines(iter(chunks)) for line in batch] == expected_lines(data)


def test_spans_split_lazily_give_the_same_lines(tmp_path, small_blocks):
    path = tmp_path / "app.log"
    path.write_bytes(b"".join(f"line {n} {'x' * (n % 40)}\n".encode() for n in range(200)))
    reader = BackwardFile(LogFile(path, "app.log"), SourcesRead())
    for span in reader.spans():
        assert list(span.iter_lines()) == span.lines()


def test_a_10_mb_line_is_cut_and_memory_stays_bounded(tmp_path):
    path = tmp_path / "app.log"
    huge = b"2026-11-24 14:00:00 ERROR " + b"x" * (10 * 1024 * 1024)
    path.write_bytes(b"first\n" + huge + b"\nlast\n")
    lines = backward_lines(path)
    assert lines[0] == b"first" and lines[-1] == b"last"
    assert lines[1].startswith(b"2026-11-24 14:00:00 ERROR xxx")
    assert lines[1].endswith(f" …[line cut: {len(huge):,} bytes]".encode())
    assert len(lines[1]) < reading.MAX_LINE + 100


def test_the_newest_lines_cost_one_block(tmp_path):
    path = tmp_path / "app.log"
    path.write_bytes(b"old line\n" * 200_000)
    stats = SourcesRead()
    reader = BackwardFile(LogFile(path, "app.log"), stats)
    first = next(reader.spans())
    assert first.lines()[-1] == b"old line"
    assert stats.bytes_read == reading.BLOCK


def test_a_file_truncated_while_read_ends_with_a_note(tmp_path):
    path = tmp_path / "app.log"
    path.write_bytes(b"2026-11-24 14:00:00 INFO x\n" * 50_000)
    stats = SourcesRead()
    reader = BackwardFile(LogFile(path, "app.log"), stats)
    spans = reader.spans()
    next(spans)
    with open(path, "r+b") as handle:      # logrotate's copytruncate
        handle.truncate(0)
    assert list(spans) == []
    assert stats.notes == ["app.log: truncated while being read (rotated?); stopped there"]


def test_a_file_renamed_while_read_is_read_to_its_start(tmp_path):
    path = tmp_path / "app.log"
    path.write_bytes(b"".join(f"line {n}\n".encode() for n in range(30_000)))
    reader = BackwardFile(LogFile(path, "app.log"), SourcesRead())
    spans = reader.spans()
    lines = next(spans).lines()
    path.rename(tmp_path / "app.log.1")
    path.write_bytes(b"new file\n")
    for span in spans:
        lines[:0] = span.lines()
    assert lines[0] == b"line 0" and lines[-1] == b"line 29999" and len(lines) == 30_000


def test_rotated_siblings_come_newest_first(tmp_path):
    for name in ("app.log", "app.log.1", "app.log.2.gz", "app.log.10.gz", "app.log.3.gz", "other.log",
                 "web.log-20261122.gz", "web.log-20261123", "web.log"):
        (tmp_path / name).write_bytes(b"x\n")
    (tmp_path / "app.log.2.gz").write_bytes(gzip.compress(b"x\n"))
    stats = SourcesRead()
    logs = discover((str(tmp_path / "*.log"),), stats)
    assert [[log.name for log in files] for files in logs] == [
        ["app.log", "app.log.1", "app.log.2.gz", "app.log.3.gz", "app.log.10.gz"],
        ["other.log"],
        ["web.log", "web.log-20261123", "web.log-20261122.gz"],
    ]
    assert discover((str(tmp_path / "missing-*.log"),), stats) == []
    assert stats.notes == [f"{tmp_path}/missing-*.log: no file matches"]


def test_gzip_is_streamed_and_a_cut_gzip_ends_with_a_note(tmp_path):
    data = b"".join(f"2026-11-24 14:00:{n % 60:02d} INFO line {n}\n".encode() for n in range(20_000))
    path = tmp_path / "app.log.2.gz"
    path.write_bytes(gzip.compress(data))
    stats = SourcesRead()
    log = LogFile(path, path.name)
    assert b"".join(gzip_chunks(log, stats)) == data
    path.write_bytes(gzip.compress(data)[:3000])
    partial = b"".join(gzip_chunks(log, stats))
    assert data.startswith(partial) and 0 < len(partial) < len(data)
    assert "app.log.2.gz: the gzip stream ends early (still being written?); read up to there" in stats.notes
    path.write_bytes(b"not gzip at all\n")
    with pytest.raises(SourceUnreadable, match="app.log.2.gz: not a gzip file"):
        b"".join(gzip_chunks(log, stats))


def test_an_unreadable_file_is_a_source_error(tmp_path):
    with pytest.raises(SourceUnreadable, match="gone.log: no such file or directory"):
        BackwardFile(LogFile(tmp_path / "gone.log", "gone.log"), SourcesRead())


def test_a_command_is_run_without_a_shell_and_its_output_streamed(tmp_path):
    stats = SourcesRead()
    argv = (sys.executable, "-c", "import sys; print('a;b $HOME'); print('x', file=sys.stderr)")
    output = b"".join(command_chunks(argv, stats, time.monotonic() + 10))
    assert output == b"a;b $HOME\n"
    assert stats.bytes_read == len(output)


def test_a_failing_command_says_why():
    argv = (sys.executable, "-c", "import sys; print('partial'); sys.exit('journal is not readable')")
    received = bytearray()
    with pytest.raises(CommandFailed, match="exited with code 1: journal is not readable"):
        for chunk in command_chunks(argv, SourcesRead(), time.monotonic() + 10):
            received += chunk
    assert received == b"partial\n"
    with pytest.raises(CommandFailed, match="no-such-binary-here: cannot run it"):
        list(command_chunks(("no-such-binary-here",), SourcesRead(), time.monotonic() + 10))


def test_a_command_that_hangs_is_stopped_at_the_deadline_and_killed():
    stats = SourcesRead()
    argv = (sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)")
    started = time.monotonic()
    output = b"".join(command_chunks(argv, stats, time.monotonic() + 1.5))
    assert output == b"started\n"
    assert time.monotonic() - started < 5
    assert stats.notes and "stopped after" in stats.notes[0]


def test_a_command_output_is_bounded(monkeypatch):
    monkeypatch.setattr(reading, "COMMAND_OUTPUT_LIMIT", 100_000)
    stats = SourcesRead()
    argv = (sys.executable, "-c", "import sys\nwhile True: sys.stdout.write('y' * 1000 + '\\n')")
    total = sum(len(chunk) for chunk in command_chunks(argv, stats, time.monotonic() + 10))
    assert 100_000 <= total < 100_000 + reading.BLOCK
    assert any("output stopped at" in note for note in stats.notes)


def test_lines_with_invalid_utf8_and_binary_junk_are_read(tmp_path):
    path = tmp_path / "app.log"
    junk = bytes(range(256)) * 3
    path.write_bytes(b"2026-11-24 14:00:00 ERROR caf\xe9 \xff\xfe\n" + junk + b"\n" + os.urandom(5000) + b"\nend\n")
    lines = backward_lines(path)
    assert lines[0] == b"2026-11-24 14:00:00 ERROR caf\xe9 \xff\xfe" and lines[-1] == b"end"


def test_a_span_cut_in_pieces_keeps_every_line(tmp_path, small_blocks):
    path = tmp_path / "app.log"
    path.write_bytes(b"".join(f"line {n} {'x' * (n % 30)}\n".encode() for n in range(300)) + b"no newline")
    reader = BackwardFile(LogFile(path, "app.log"), SourcesRead())
    for span in reader.spans():
        pieces = list(span.pieces(20))
        assert [line for piece in reversed(pieces) for line in piece.lines()] == span.lines()
        assert all(piece.last is None for piece in pieces[1:])


# -- the forward path and the scan (QA findings) ------------------------------------------------

NOW = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)
FLOOD = "2026-11-24 13:59:00 ERROR flood\n"


def test_the_forward_path_folds_while_streaming_and_counts_every_repeat(tmp_path, monkeypatch):
    monkeypatch.setattr(search, "FORWARD_BUFFER_BYTES", 100_000)
    path = tmp_path / "app.log.1.gz"
    path.write_bytes(gzip.compress((FLOOD * 50_000 + "2026-11-24 13:59:30 ERROR the last one\n").encode()))
    stats = SourcesRead()
    query = Query(min_level=40)
    scan = Scan([log_stream(FileLog(path.name, (LogFile(path, path.name),), Pushdown(), stats), Dialect(), query, stats,
                           time.monotonic() + 30)], query,
                time.monotonic() + 30, stats, NOW)
    folder = EventGroups(())
    for record in scan:
        if record is not None:
            folder.add(record)
    counts = sorted((group.count, group.record.message) for group in folder.groups.values())
    assert counts == [(1, "2026-11-24 13:59:30 ERROR the last one"), (50_000, FLOOD.strip())]
    assert not any("not kept" in note for note in stats.notes)


def test_the_forward_path_keeps_what_it_folds_not_every_line(monkeypatch):
    stats = SourcesRead()
    query = Query(min_level=40)
    argv = (sys.executable, "-c", f"import sys; sys.stdout.write({FLOOD!r} * 30_000)")
    tracemalloc.start()
    try:
        records = [record for record in Scan([log_stream(CommandLog("python", argv, stats, time.monotonic() + 30), Dialect(), query, stats,
                                                      time.monotonic() + 30)],
                                             query, time.monotonic() + 30, stats, NOW) if record is not None]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [(record.repeats, record.first_seen) for record in records] == [(30_000, NOW - timedelta(minutes=1))]
    assert peak < 4 * 1024 * 1024            # 30,000 records kept would take 12 MB


def test_closing_the_scan_early_kills_the_log_command_and_its_children(tmp_path):
    pids = tmp_path / "pids"
    script = (f"import os, subprocess, sys, time\n"
              f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
              f"while True:\n    sys.stdout.write({FLOOD!r} * 1000)\n    sys.stdout.flush()\n    time.sleep(0.01)\n")
    stats = SourcesRead()
    query = Query(min_level=40)
    deadline = time.monotonic() + 30
    scan = Scan([log_stream(CommandLog("python", (sys.executable, "-c", script), stats, deadline), Dialect(), query,
                           stats, deadline)], query, deadline,
                stats, NOW)
    steps = iter(scan)
    assert next(steps) is None                  # a chunk is read: the command is running
    command, child = (int(pid) for pid in pids.read_text().split())
    assert _running(command) and _running(child)
    scan.close()
    assert not _running(command)
    deadline = time.monotonic() + 5             # the child is reaped by whoever inherits it
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(child)


def _running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_command_closed_while_read_is_killed(tmp_path):
    chunks = command_chunks((sys.executable, "-c", "import os, time; print(os.getpid(), flush=True); "
                                                   "time.sleep(60)"), SourcesRead(), time.monotonic() + 30)
    pid = int(next(chunks))
    chunks.close()
    assert not _running(pid)


@pytest.mark.parametrize("make, kind", [
    (lambda path: path.mkdir(), "a directory"),
    (lambda path: os.mkfifo(path), "a FIFO"),
])
def test_a_source_that_is_not_a_regular_file_is_reported_not_read(tmp_path, make, kind):
    make(tmp_path / "app.log")
    stats = SourcesRead()
    assert discover((str(tmp_path / "*.log"),), stats) == []
    assert stats.unreadable == [f"{tmp_path}/app.log: {kind}, not a log file"]


def test_a_fifo_or_a_device_is_never_read(tmp_path):
    os.mkfifo(tmp_path / "app.log.2.gz")
    fifo = LogFile(tmp_path / "app.log.2.gz", "app.log.2.gz")
    with pytest.raises(SourceUnreadable, match="app.log.2.gz: a FIFO, not a log file"):
        list(gzip_chunks(fifo, SourcesRead()))
    with pytest.raises(SourceUnreadable, match="app.log.2.gz: a FIFO, not a log file"):
        BackwardFile(fifo, SourcesRead())
    with pytest.raises(SourceUnreadable, match="zero: a character device, not a log file"):
        BackwardFile(LogFile(Path("/dev/zero"), "zero"), SourcesRead())


def test_the_forward_path_lets_the_least_recent_kinds_go_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setattr(search, "MAX_FORWARD_KINDS", 3)
    path = tmp_path / "app.log.1.gz"
    path.write_bytes(gzip.compress("".join(f"2026-11-24 13:5{n}:00 ERROR kind {'ABCDE'[n]}\n" for n in range(5))
                                   .encode()))
    stats = SourcesRead()
    query = Query(min_level=40)
    scan = Scan([log_stream(FileLog(path.name, (LogFile(path, path.name),), Pushdown(), stats), Dialect(), query, stats,
                           time.monotonic() + 30)], query,
                time.monotonic() + 30, stats, NOW)
    assert [record.message[-1] for record in scan if record is not None] == ["E", "D", "C"]
    assert "app.log.1.gz: 2 older matches (2 different ones) were not kept" in stats.notes[0]


def test_rotated_siblings_come_from_one_listing_per_directory(tmp_path, monkeypatch):
    """A glob matching thousands of files must not list the directory once per file."""
    for n in range(300):
        (tmp_path / f"worker-{n:03d}.log").write_text("x\n")
    (tmp_path / "worker-007.log.1").write_text("y\n")
    monkeypatch.setattr(reading, "MAX_LOGS", 1000)
    listings = []
    real_listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda path: listings.append(path) or real_listdir(path))
    logs = discover((f"{tmp_path}/worker-*.log",), SourcesRead())
    assert len(listings) <= 2                              # the glob's own listing and the rotations'
    assert [file.name for file in next(files for files in logs if files[0].name == "worker-007.log")] == [
        "worker-007.log", "worker-007.log.1"]
