"""Transport prefixes: what a log's carrier writes before every line of the application's output.

docker compose (`web_1  | `), pm2 (`0|api | `), `kubectl logs --prefix` (`[pod/api-7d9f/app] `),
the Kubernetes CRI file format (`2026-11-24T14:02:09.123Z stdout F `, where `P` marks a partial
line continued on the next one), Heroku (`2026-11-24T14:02:09+00:00 app[web.1]: `), journald and
syslog (`Nov 24 14:02:09 host app[123]: `, journalctl's `-o short-iso` too), Cloud Foundry
(`… [APP/PROC/WEB/0] OUT `, `ERR `), and a bare timestamp (`docker logs --timestamps`, a log
viewer's `2026-11-24 14:02:09.278 | `).

A log's prefixes are told once, from a sample of its lines: the kind most lines start with, and
under it a second one (compose over timestamps). Lines are then grouped and matched without them
and shown as written. A line the prefix does not fit is read as it is. ANSI colour codes go as
well, with the remnants a paste leaves of them (`←[33m`, `[0m`).

A bare timestamp is different from the others: it may be the application's own header. So a
line that loses only a timestamp and is left with ordinary text is still an entry's first line;
left with a frame, an indented line or an exception, it continues the entry before, as it would
without the timestamp.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SAMPLE_SHARE = 0.5            # a prefix is the log's when at least this share of its lines has it

_ISO = rb"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d|\x20?UTC)?"
_SYSLOG = rb"[A-Z][a-z]{2}\x20[\x20\d]\d\x20\d\d:\d\d:\d\d(?:\.\d+)?"
_LEVEL_WORD = rb"(?:TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|CRITICAL|FATAL|SEVERE)"
_ANSI = re.compile(rb"(?:\x1b|\xe2\x86\x90)?\[\d{1,3}(?:;\d{1,3})*m")


@dataclass(frozen=True)
class Prefix:
    name: str
    pattern: re.Pattern[bytes]
    stamp_only: bool = False       # a bare timestamp: see the module's docstring

    def length(self, line: bytes) -> int:
        match = self.pattern.match(line)
        return match.end() if match else 0


def _prefix(name: str, pattern: bytes, *, stamp_only: bool = False) -> Prefix:
    return Prefix(name, re.compile(pattern, re.X), stamp_only)


PREFIXES = (
    _prefix("cri", rb"\s*" + _ISO + rb"\x20(?:stdout|stderr)\x20(?P<partial>[PF])(?:\x20|$)"),
    _prefix("heroku", rb"\s*" + _ISO + rb"\x20[\w-]+\[[\w.-]+\]:(?:\x20|$)"),
    _prefix("cloudfoundry", rb"\s*(?:" + _ISO + rb"\x20+\[[\w/.-]+\]\x20+)?(?:OUT|ERR)(?:\x20|$)"),
    _prefix("syslog", rb"\s*(?:" + _SYSLOG + rb"|" + _ISO + rb")\x20[\w.-]+\x20"
                      rb"(?:[\w./@-]+(?:\[\d+\])?:|[\w.-]+/[\w.-]+)(?:\x20|$)"),
    _prefix("compose", rb"(?:\d+\|)?[\w.@-]+\x20*\|(?:\x20|$)"),
    _prefix("kubectl", rb"\[(?!" + _LEVEL_WORD + rb"\])[\w.<>@:/-]+\]\x20?"),
    _prefix("timestamp", rb"\x20?(?:" + _ISO + rb"|" + _SYSLOG + rb")(?:\x20*\|)?(?:\x20|$)", stamp_only=True),
)
_CRI = PREFIXES[0]


@dataclass(frozen=True)
class Framing:
    """How one log's lines are wrapped: its prefixes (outermost first) and ANSI codes."""

    prefixes: tuple[Prefix, ...] = ()
    ansi: bool = False

    @property
    def plain(self) -> bool:
        return not self.prefixes and not self.ansi

    def strip(self, line: bytes) -> tuple[bytes, bool]:
        """(the line without its prefixes, whether the innermost one it lost was a bare timestamp)."""
        if self.ansi and b"[" in line:
            line = _ANSI.sub(b"", line)
        stamp_only = False
        for prefix in self.prefixes:
            cut = prefix.length(line)
            if cut:
                line = line[cut:]
                stamp_only = prefix.stamp_only
        return line, stamp_only

    def content(self, line: bytes) -> bytes:
        return self.strip(line)[0] if not self.plain else line

    def join_partials(self, lines: list[bytes]) -> tuple[list[bytes], list[bytes]]:
        """(the lines with CRI's `P` lines joined to the line that finishes them, under the last
        one's prefix; the `P` lines at the end that nothing finishes yet, as written)."""
        if not self.prefixes or self.prefixes[0] is not _CRI:
            return lines, []
        joined: list[bytes] = []
        pending: list[bytes] = []
        for line in lines:
            match = _CRI.pattern.match(line)
            if match and match.group("partial") == b"P":
                pending.append(line)
                continue
            if pending:
                cut = match.end() if match else 0
                parts = [piece[_CRI.length(piece):] for piece in pending]
                line = line[:cut] + b"".join(parts) + line[cut:]
                pending = []
            joined.append(line)
        return joined, pending


def detect(lines: list[bytes]) -> Framing:
    """The prefixes most of `lines` start with (two layers at most), and whether ANSI codes occur."""
    sample = [line for line in lines if line.strip()]
    ansi = any(_ANSI.search(line) for line in sample)
    if ansi:
        sample = [_ANSI.sub(b"", line) for line in sample]
    found: list[Prefix] = []
    for _ in range(2):
        best = _most_common(sample, [p for p in PREFIXES if p not in found])
        if best is None:
            break
        found.append(best)
        sample = [line[best.length(line):] for line in sample]
        if best.stamp_only:
            break
    return Framing(tuple(found), ansi)


def _most_common(sample: list[bytes], candidates: list[Prefix]) -> Prefix | None:
    if not sample:
        return None
    counts = [(sum(1 for line in sample if prefix.pattern.match(line)), -index, prefix)
              for index, prefix in enumerate(candidates)]
    count, _, best = max(counts, key=lambda item: item[:2])
    return best if count and count >= SAMPLE_SHARE * len(sample) else None
