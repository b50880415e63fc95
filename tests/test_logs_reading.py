"""Reading logs: backwards in blocks, rotated and gzipped siblings, a command, and hostile input."""

from __future__ import annotations

import gzip
import os
import random
import sys
import time
from pathlib import Path

import pytest

from commands.logs import reading
from commands.logs.reading import (
    BackwardFile,
    CommandFailed,
    LogFile,
    SourceUnreadable,
    Stats,
    command_chunks,
    discover,
    forward_lines,
    gzip_chunks,
)


def backward_lines(path: Path, stats: Stats | None = None) -> list[bytes]:
    reader = BackwardFile(LogFile(path, path.name), stats or Stats())
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
    reader = BackwardFile(LogFile(path, "app.log"), Stats())
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
    stats = Stats()
    reader = BackwardFile(LogFile(path, "app.log"), stats)
    first = next(reader.spans())
    assert first.lines()[-1] == b"old line"
    assert stats.bytes_read == reading.BLOCK


def test_a_file_truncated_while_read_ends_with_a_note(tmp_path):
    path = tmp_path / "app.log"
    path.write_bytes(b"2026-11-24 14:00:00 INFO x\n" * 50_000)
    stats = Stats()
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
    reader = BackwardFile(LogFile(path, "app.log"), Stats())
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
    stats = Stats()
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
    stats = Stats()
    log = LogFile(path, path.name)
    assert b"".join(gzip_chunks(log, stats)) == data
    path.write_bytes(gzip.compress(data)[:3000])
    partial = b"".join(gzip_chunks(log, stats))
    assert data.startswith(partial) and len(partial) < len(data)
    assert "app.log.2.gz: the gzip stream ends early (still being written?); read up to there" in stats.notes
    path.write_bytes(b"not gzip at all\n")
    assert b"".join(gzip_chunks(log, stats)) == b""
    assert "app.log.2.gz: not a gzip file; read up to there" in stats.notes


def test_an_unreadable_file_is_a_source_error(tmp_path):
    with pytest.raises(SourceUnreadable, match="gone.log: no such file or directory"):
        BackwardFile(LogFile(tmp_path / "gone.log", "gone.log"), Stats())


def test_a_command_is_run_without_a_shell_and_its_output_streamed(tmp_path):
    stats = Stats()
    argv = (sys.executable, "-c", "import sys; print('a;b $HOME'); print('x', file=sys.stderr)")
    output = b"".join(command_chunks(argv, stats, time.monotonic() + 10))
    assert output == b"a;b $HOME\n"
    assert stats.bytes_read == len(output)


def test_a_failing_command_says_why():
    argv = (sys.executable, "-c", "import sys; print('partial'); sys.exit('journal is not readable')")
    received = bytearray()
    with pytest.raises(CommandFailed, match="exited with code 1: journal is not readable"):
        for chunk in command_chunks(argv, Stats(), time.monotonic() + 10):
            received += chunk
    assert received == b"partial\n"
    with pytest.raises(CommandFailed, match="no-such-binary-here: cannot run it"):
        list(command_chunks(("no-such-binary-here",), Stats(), time.monotonic() + 10))


def test_a_command_that_hangs_is_stopped_at_the_deadline_and_killed():
    stats = Stats()
    argv = (sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)")
    started = time.monotonic()
    output = b"".join(command_chunks(argv, stats, time.monotonic() + 1.5))
    assert output == b"started\n"
    assert time.monotonic() - started < 5
    assert stats.notes and "stopped after" in stats.notes[0]


def test_a_command_output_is_bounded(monkeypatch):
    monkeypatch.setattr(reading, "COMMAND_OUTPUT_LIMIT", 100_000)
    stats = Stats()
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
    reader = BackwardFile(LogFile(path, "app.log"), Stats())
    for span in reader.spans():
        pieces = list(span.pieces(20))
        assert [line for piece in reversed(pieces) for line in piece.lines()] == span.lines()
        assert all(piece.last is None for piece in pieces[1:])
