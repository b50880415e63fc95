"""Slash-command text -> words, options and the incident it names.

Users type in Slack, so: `--sev 2` and `--sev=2`; an em dash where macOS autocorrected `--`;
straight or curly quotes, double or single, to group words ('connection refused'); an apostrophe
inside a word is a plain letter ("can't"). Free text (a title, a note) keeps its own spacing and
line breaks.

Numbers are ASCII digits, at most MAX_DIGITS of them (`²` and `①` are digits to str.isdigit() but
not to int(); `#99999999999999999999` fits no database column): `number()` is the one way to read one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum

from bot.command import UsageError


class Option(Enum):
    VALUE = "one word"
    WORDS = "the words up to the next option"
    FLAG = "no value"


_QUOTES = (('"', '"'), ("“", "”"), ("'", "'"), ("‘", "’"))
# A quoted group starts and ends at word boundaries, so the apostrophe of "can't" opens nothing.
_TOKEN = re.compile("|".join(f"(?<!\\S){re.escape(a)}[^{re.escape(b)}]*{re.escape(b)}(?!\\S)" for a, b in _QUOTES)
                    + r"|\S+")
_OPTION = re.compile(r"^(?:--|—|–)([A-Za-z][A-Za-z0-9-]*)(?:=(.*))?$", re.S)
_INCIDENT_REF = re.compile(r"^#(\d+)$")
MAX_DIGITS = 15
# A user as Slack escapes a mention in a slash command's text (`<@U012AB3CD|ana>`, `<@U012AB3CD>`), or
# the bare id typed in the console or `run` (with a digit and 8 characters or more, so "UPS" is a word).
_USER = re.compile(r"^(?:<@([UW][A-Z0-9]{2,20})(?:\|[^<>|]{0,100})?>|([UW](?=[A-Z0-9]*\d)[A-Z0-9]{8,20}))$")


@dataclass
class Args:
    words: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)     # --name value (Option.VALUE, Option.WORDS)
    flags: set[str] = field(default_factory=set)               # --name (Option.FLAG)
    incident: int | None = None
    text: str = ""

    source: str = field(default="", repr=False)
    kept: list[tuple[str, int, int]] = field(default_factory=list, repr=False)

    def rest(self, skip: int) -> str:
        """Free text after the first `skip` words, spacing kept."""
        return _join(self.source, self.kept[skip:])


def parse_args(text: str, options: dict[str, Option], *, incident_refs: bool = True,
               prose: bool = False) -> Args:
    """Split `text`; `#12` names an incident when `incident_refs`, unknown options are errors.

    With `prose` (the words are a note), only an `#12` before the first word names the incident:
    "see PR #1 for the fix" is text, kept whole.
    """
    tokens = [(m.group(0), m.start(), m.end()) for m in _TOKEN.finditer(text)]
    args = Args()
    kept: list[tuple[str, int, int]] = []
    index = 0
    while index < len(tokens):
        token, start, end = tokens[index]
        option = _OPTION.match(token)
        if option:
            name, inline = option.group(1).lower(), option.group(2)
            kind = options.get(name)
            if kind is None:
                known = ", ".join(f"--{known}" for known in options) or "none"
                raise UsageError(f"unknown option --{name} (options: {known})")
            if kind is Option.FLAG:
                if inline is not None:
                    raise UsageError(f"--{name} takes no value")
                args.flags.add(name)
            elif inline is not None:
                args.options[name] = _unquote(inline)
            else:
                values = []
                while index + 1 < len(tokens) and not _OPTION.match(tokens[index + 1][0]):
                    index += 1
                    values.append(_unquote(tokens[index][0]))
                    if kind is Option.VALUE:
                        break
                if not values:
                    raise UsageError(f"--{name} needs a value")
                args.options[name] = " ".join(values)
        elif (incident_refs and args.incident is None and not (prose and kept)
              and (ref := _INCIDENT_REF.match(token))):
            args.incident = number(ref.group(1))
            if args.incident is None:
                raise UsageError(f"{token[:20]}{'…' if len(token) > 20 else ''} is not an incident number.")
        else:
            kept.append((token, start, end))
        index += 1
    args.words = [_unquote(token) for token, _, _ in kept]
    args.source, args.kept = text, kept
    args.text = args.rest(0)
    return args


def number(text: str) -> int | None:
    """A whole number written in ASCII digits (at most MAX_DIGITS of them), else None."""
    if not text.isascii() or not text.isdigit() or len(text) > MAX_DIGITS:
        return None
    return int(text)


def user(token: str) -> str | None:
    """The Slack user id a word names (a mention as Slack sends it, or an id), else None."""
    found = _USER.match(token)
    return (found.group(1) or found.group(2)) if found else None


_ESCAPED = re.compile(r"<([@#!])?([^<>|]{1,500})(?:\|([^<>]{0,500}))?>")


def readable(text: str) -> str:
    """Free text of a command whose users, channels and links Slack escapes (`Command.mentions`), as it
    was typed: `<@U012AB3CD|ana>` -> `@ana`, `<#C0123|ops>` -> `#ops`, `<https://x|x>` -> `https://x`."""
    def typed(match: re.Match[str]) -> str:
        sigil, target, label = match.groups()
        if sigil in ("@", "#"):
            return f"{sigil}{label or target}"
        if sigil == "!":
            return label or "@" + target.split("^")[0]
        return target
    return _ESCAPED.sub(typed, text).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _unquote(token: str) -> str:
    if len(token) >= 2 and (token[0], token[-1]) in _QUOTES:
        return token[1:-1]
    return token


def _join(text: str, kept: list[tuple[str, int, int]]) -> str:
    """The kept tokens with the whitespace that stood before each (so line breaks survive)."""
    if not kept:
        return ""
    if len(kept) == 1:
        return _unquote(kept[0][0])
    parts = [kept[0][0]]
    previous_end = kept[0][2]
    for token, start, end in kept[1:]:
        gap = text[previous_end:start]
        parts.append(gap if gap.strip() == "" else " ")
        parts.append(token)
        previous_end = end
    return "".join(parts).strip()
