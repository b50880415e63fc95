"""The catalog of known causes (causes.toml, shipped with the package) and matching events to it.

A cause matches an event when one of its evidence patterns matches a line of the event: the
pattern's keyword is looked up first (a substring test) and only then its regex, so the catalog
costs little on events it does not match. Unknown errors get no cause: a guess is never forced.

A cause may be limited to the stacks that can write its evidence (`Unknown column` means a
missing migration in Django and an entity out of step in Hibernate). Evidence that is specific
enough on its own (`alone`: ERR_HTTP_HEADERS_SENT, "No space left on device") shows its cause
whatever the stack, also when the stack cannot be told (a bare line, a trace cut by its
reporter); and an entry that shows it is an error whatever its level word says (gunicorn's
"Reason: Worker failed to boot." is logged at INFO), unless that word is a warning.
"""

from __future__ import annotations

import importlib.resources
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import ahocorasick_rs

STACKS = ("python", "java", "node", "php", "go", "ruby", "dotnet", "nginx", "apache", "access")

# The words an entry that fails is written with, besides level words and exception names: every
# `alone` keyword holds one of them (checked when the catalog is read), so a scan that looks for
# these few words (search.Gate) never skips a block holding lone evidence. Each is a spelling as
# written ("ailed to" finds failed to and Failed to), and none is frequent in a healthy log.
FAILURE_WORDS = (
    "ailed to", "ailure", "FAILED", "refused", "REFUSED", "denied", "imeout", "imed out", "IMEDOUT", "Time-out",
    "eadlock", "40P01", "OOM", "oom-kill", "container oom", "of memory", "heap limit", "CALL_AND_RETRY",
    "space left", "disk space", "disk is full", "ENOSPC", "open files", "file descriptors", "EMFILE", "ENFILE",
    "ENOTFOUND", "EAI_AGAIN", "getaddrinfo", "not known", "no such host", "resolve host", "servname",
    "ertificate", "CERT", "PKIX", "SSL routines", "nil pointer", "ndefined", "Object reference", "propert",
    "HEADERS_SENT", "headers after", "NotFound", "DoesNotExist", "Improperly", "NotReady", "python application",
    "load app", "loaded as Python", "recursion depth", "SQLSTATE", "encryption key", "supported ciphers",
    "append mode", "cache path", "vendor/autoload", "Target class", "Schema-validation", "bean of type",
    "not received", "not connect", "t connect", "t reach", "ConnectionBad", "prematurely", "live upstreams",
    "write against", "code 137", "rror", "RROR", "xception",
)
_ID = re.compile(r"^[a-z][a-z0-9]*\.[a-z][a-z0-9_]*$")


class CatalogError(Exception):
    """causes.toml is malformed: which cause and which key."""


@dataclass(frozen=True)
class Pattern:
    keyword: str
    regex: re.Pattern[str] | None = None
    alone: bool = False         # specific enough on its own: see the module's docstring
    given: Pattern | None = None    # another line of the event must show this (which driver refused)

    def matches(self, line: str) -> bool:
        return self.keyword in line and (self.regex is None or self.regex.search(line) is not None)

    def shown_by(self, line: str, lines: list[str]) -> bool:
        return self.matches(line) and (self.given is None or any(self.given.matches(other) for other in lines))


@dataclass(frozen=True)
class Cause:
    id: str
    stack: str
    title: str
    evidence: tuple[Pattern, ...]
    next_step: str
    stacks: tuple[str, ...] = ()
    requires: tuple[Pattern, ...] = ()
    probe_kinds: tuple[str, ...] = ()

    def evidence_line(self, lines: list[str], stack: str | None) -> str | None:
        """The line showing this cause, or None when the event does not match it: the first one after
        the entry's header when there is one (an exception line says it better than a header
        quoting it), else the header. Outside the cause's stacks only `alone` evidence counts."""
        evidence = self.evidence if not self.stacks or stack in self.stacks else self.alone
        if not evidence:
            return None
        if not all(any(pattern.matches(line) for line in lines) for pattern in self.requires):
            return None
        showing = (index for index, line in enumerate(lines) if any(p.shown_by(line, lines) for p in evidence))
        first = next(showing, None)
        if first == 0:
            first = next(showing, 0)
        return lines[first].strip() if first is not None else None

    @property
    def alone(self) -> tuple[Pattern, ...]:
        return tuple(pattern for pattern in self.evidence if pattern.alone)


@dataclass(frozen=True)
class Match:
    """What the reply shows: the cause, the line that shows it, and the next step filled in."""

    id: str
    stack: str
    title: str
    evidence: str
    next_step: str


@cache
def catalog() -> tuple[Cause, ...]:
    text = importlib.resources.files("commands.logs").joinpath("causes.toml").read_text(encoding="utf-8")
    return parse_catalog(tomllib.loads(text))


def parse_catalog(data: dict[str, Any]) -> tuple[Cause, ...]:
    causes = []
    seen: set[str] = set()
    for index, entry in enumerate(data.get("cause", [])):
        where = f"causes.toml: cause {entry.get('id') or index + 1}"
        unknown = set(entry) - set(Cause.__dataclass_fields__)
        if unknown:
            raise CatalogError(f"{where}: unknown key {sorted(unknown)[0]!r}")
        for key in ("id", "stack", "title", "next_step", "evidence"):
            if not entry.get(key):
                raise CatalogError(f"{where}: {key} is missing")
        if not _ID.match(entry["id"]) or entry["id"] in seen:
            raise CatalogError(f"{where}: the id must be new and look like stack.cause_name")
        seen.add(entry["id"])
        try:
            entry["next_step"].format(service="", frame="", probe="")
        except (KeyError, IndexError, ValueError):
            raise CatalogError(f"{where}: next_step may use only {{service}}, {{frame}} and {{probe}}") from None
        stacks = tuple(entry.get("stacks", ()))
        if set(stacks) - set(STACKS):
            raise CatalogError(f"{where}: stacks must be among {', '.join(STACKS)}")
        causes.append(Cause(
            id=entry["id"], stack=entry["stack"], title=entry["title"], next_step=entry["next_step"],
            evidence=_patterns(entry["evidence"], where), requires=_patterns(entry.get("requires", []), where),
            stacks=stacks, probe_kinds=tuple(entry.get("probe_kinds", ())),
        ))
    return tuple(causes)


_PATTERN_KEYS = {"keyword", "regex", "alone", "given"}


def _patterns(entries: list[Any], where: str) -> tuple[Pattern, ...]:
    patterns = []
    for entry in entries:
        if not isinstance(entry, dict) or not entry.get("keyword") or set(entry) - _PATTERN_KEYS \
                or not isinstance(entry.get("alone", False), bool):
            raise CatalogError(f"{where}: a pattern is {{ keyword = \"…\", regex = \"…\", alone = true, "
                               f"given = {{ keyword = \"…\", regex = \"…\" }} }} (all but keyword optional)")
        try:
            regex = re.compile(entry["regex"]) if entry.get("regex") else None
        except re.error as error:
            raise CatalogError(f"{where}: bad regex {entry['regex']!r}: {error}") from None
        given = _patterns([entry["given"]], where)[0] if "given" in entry else None
        if entry.get("alone") and not any(word in entry["keyword"] for word in FAILURE_WORDS):
            raise CatalogError(f"{where}: an alone keyword must hold one of the failure words, "
                               f"not {entry['keyword']!r} (see FAILURE_WORDS)")
        patterns.append(Pattern(entry["keyword"], regex, bool(entry.get("alone", False)), given))
    return tuple(patterns)


def known_ids() -> list[str]:
    return [cause.id for cause in catalog()]


@cache
def alone_keywords() -> tuple[str, ...]:
    """The keywords of the evidence that shows its cause on its own: an entry holding one may be
    an error whatever its level word."""
    return tuple(sorted({pattern.keyword for cause in catalog() for pattern in cause.alone}))


def shows_alone(lines: list[bytes]) -> bool:
    """Whether a line shows a cause's `alone` evidence (any cause, silenced or not). Lines are
    bytes as read: only those holding a keyword are decoded."""
    keywords, searcher = _alone_searcher()
    for line in lines:
        found = ({keywords[index] for index, _, _ in searcher.find_matches_as_indexes(line, overlapping=True)}
                 if searcher else ())
        if found:
            text = line.decode("utf-8", "replace")
            if any(pattern.matches(text) and (pattern.given is None or _anywhere(pattern.given, lines))
                   for cause in catalog() for pattern in cause.alone if pattern.keyword in found):
                return True
    return False


def _anywhere(pattern: Pattern, lines: list[bytes]) -> bool:
    keyword = pattern.keyword.encode()
    return any(pattern.matches(line.decode("utf-8", "replace")) for line in lines if keyword in line)


@cache
def _alone_searcher() -> tuple[tuple[str, ...], ahocorasick_rs.BytesAhoCorasick | None]:
    keywords = alone_keywords()
    if not keywords:
        return keywords, None
    return keywords, ahocorasick_rs.BytesAhoCorasick([keyword.encode() for keyword in keywords],
                                                     matchkind=ahocorasick_rs.MatchKind.Standard)


def match(lines: list[str], stack: str | None, *, silenced: frozenset[str], service: str,
          frame: str | None, probes: Mapping[str, str]) -> Match | None:
    """The first cause of the catalog that the event shows and the config does not silence.

    `probes` are the service's probes (name -> kind), to name the one that checks the cause.
    """
    for cause in catalog():
        if cause.id in silenced:
            continue
        evidence = cause.evidence_line(lines, stack)
        if evidence is not None:
            probe = next((name for name, kind in probes.items() if kind in cause.probe_kinds), None)
            next_step = cause.next_step.format(
                service=service, frame=frame or "the application's frame nearest the error",
                probe=f"/probe {service} {probe}" if probe else f"/probe {service}")
            return Match(cause.id, cause.stack, cause.title, evidence[:500], next_step)
    return None
