"""Secrets out of everything that leaves the bot: messages, uploads, the timeline, our log lines, `run`.

Each rule is a regex gated on literal keywords: the regex only runs when one of its keywords is in
the text (a plain substring test), because most text holds no secret and an ungated regex over
log excerpts costs far more than the test. What a rule matches becomes `[redacted:kind]`; for
`key=value`, URLs and headers only the secret part is replaced, so the excerpt stays readable.
Card numbers must pass the Luhn check and start like a card network's numbers, so ids and epoch
milliseconds are left alone.

The process has one active redactor (`use` sets it from the config), because our log lines are
formatted where no config is at hand.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_SECRET_KEY = (r"[\w.-]*?(?:password|passwd|pwd|secret|token|api[_-]?key|apikey|access[_-]?key"
               r"|private[_-]?key|credentials?)(?:[_-][\w.-]*)?")
_SECRET_KEY_NAME = re.compile(rf"^{_SECRET_KEY}$", re.I)
_NOT_REDACTED = r"(?!\[redacted:)"
MIN_LOOSE_SECRET = 4     # characters of an unquoted value after `key: ` or `key = ` (see _unquoted_secret_value)
_CARD_NETWORK = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|3[068]|35|6011|64[4-9]|65|62)")


@dataclass(frozen=True)
class Rule:
    kind: str
    pattern: re.Pattern[str]
    keywords: tuple[str, ...] = ()          # the regex runs only if one occurs; none: always runs
    ignore_case: bool = False               # keywords are then lowercase and tested on lowered text
    replace: Callable[[re.Match[str]], str] | None = None

    def apply(self, text: str, lowered: str) -> str:
        if self.keywords and not any(k in (lowered if self.ignore_case else text) for k in self.keywords):
            return text
        return self.pattern.sub(self.replace or (lambda match: f"[redacted:{self.kind}]"), text)


@dataclass(frozen=True)
class RedactionSettings:
    """`[redaction]` in the config: extra patterns (kind -> regex) and whether to mask emails."""

    patterns: tuple[tuple[str, str], ...] = ()
    emails: bool = False


def _around(kind: str) -> Callable[[re.Match[str]], str]:
    """Replace what lies between the `head` group and the optional `tail` group."""

    def replace(match: re.Match[str]) -> str:
        return f"{match.group('head')}[redacted:{kind}]{match.groupdict().get('tail') or ''}"

    return replace


def _secret_value(match: re.Match[str], closing: str = "") -> str:
    key = match.group("key").lower()
    kind = ("password" if "pass" in key or "pwd" in key else
            "api_key" if "api" in key or "access" in key else
            "token" if "token" in key else "secret")
    value = match.group("value")
    quote = next((q for q in ('\\"', '"', "'") if value.startswith(q) and value.endswith(q) and len(value) > len(q)),
                 "")
    return f"{match.group('key')}{match.group('sep')}{quote}[redacted:{kind}]{quote}{closing}"


def _unquoted_secret_value(match: re.Match[str]) -> str:
    """`password: x` and `password = x` also occur in prose ("token: 3 of 5 used"): short values are left.

    Inside parentheses the last `)` closes them, not the value: MySQL's "(using password: YES)".
    """
    value, closing = match.group("value"), ""
    before = match.string[:match.start()]
    if value.endswith(")") and before.count("(") > before.count(")"):
        value, closing = value[:-1], ")"
    if match.group("sep") != "=" and value[:1] not in "\"'" and len(value) < MIN_LOOSE_SECRET:
        return match.group(0)
    return _secret_value(match, closing)


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    if 13 <= len(digits) <= 19 and _CARD_NETWORK.match(digits) and _luhn(digits) and len(set(digits)) > 1:
        return "[redacted:card]"
    return match.group(0)


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


_SECRET_KEYWORDS = ("pass", "pwd", "secret", "token", "key", "credential")

BUILTIN_RULES: tuple[Rule, ...] = (
    Rule("private_key", re.compile(
        r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY( BLOCK|)-----.*?(?:-----END \1PRIVATE KEY\2-----|\Z)", re.S),
        ("PRIVATE KEY",)),
    Rule("password", re.compile(
        rf"(?P<head>\b[a-z][a-z0-9+.-]*://[^/\s:@\[\]]*:){_NOT_REDACTED}[^/\s@]+(?P<tail>@)", re.I),
        ("://",), replace=_around("password")),
    Rule("authorization", re.compile(
        rf"(?P<head>(?:proxy-)?authorization\\?[\"']?\s*[:=]\s*\\?[\"']?){_NOT_REDACTED}[^\s\"'\\][^\r\n\"'\\]*",
        re.I),
        ("authorization",), ignore_case=True, replace=_around("authorization")),
    Rule("cookie", re.compile(
        rf"(?P<head>(?:set-)?cookie\\?[\"']?\s*[:=]\s*\\?[\"']?){_NOT_REDACTED}[^\s\"'\\][^\r\n\"'\\]*", re.I),
        ("cookie",), ignore_case=True, replace=_around("cookie")),
    Rule("token", re.compile(rf"(?P<head>\bbearer\s+){_NOT_REDACTED}[A-Za-z0-9._~+/=-]{{8,}}", re.I),
         ("bearer",), ignore_case=True, replace=_around("token")),
    Rule("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), ("eyJ",)),
    Rule("aws_key", re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b"), ("AKIA", "ASIA", "ABIA", "ACCA")),
    # xoxe-1-… refresh tokens; xoxe.xoxp-1-… rotating tokens
    Rule("slack_token", re.compile(r"(?:xoxe\.)?xox[abeposr]-[A-Za-z0-9-]{10,}|xapp-\d-[A-Za-z0-9-]{10,}"),
         ("xox", "xapp-")),
    # Every path on this host is a capability: incoming webhooks, workflow triggers, and the response
    # URLs of slash commands (/commands/…) and interactions (/actions/…), which the outbox posts to.
    Rule("slack_webhook", re.compile(r"hooks\.slack\.com/[A-Za-z0-9/_-]+"), ("hooks.slack.com",)),
    Rule("github_token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
         ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_")),
    # "password": "x" (JSON, also escaped inside a JSON string), 'password': 'x', "password" => "x"
    Rule("secret", re.compile(
        rf"(?P<key>\\?[\"']{_SECRET_KEY}\\?[\"'])(?P<sep>\s*(?:[:=]|=>)\s*){_NOT_REDACTED}"
        r"(?P<value>\\\"(?:(?!\\\").)*\\\"|\"(?:[^\"\\]|\\.)*\"|'[^']*'|[^\s,;}\]]+)", re.I),
        _SECRET_KEYWORDS, ignore_case=True, replace=_secret_value),
    # password=x, ?token=x&, PGPASSWORD="x"; looser: password = x, password: x, X-Api-Key: x (not `token == x`)
    Rule("secret", re.compile(
        rf"(?P<key>\b{_SECRET_KEY})(?P<sep>[ \t]*(?:=(?!=)|:)[ \t]*){_NOT_REDACTED}"
        r"(?P<value>\"[^\"]*\"|'[^']*'|[^\s&,;\"'}\]]+)", re.I),
        _SECRET_KEYWORDS, ignore_case=True, replace=_unquoted_secret_value),
    Rule("card", re.compile(r"(?<![\d.-])\d(?:[ -]?\d){12,18}(?![\d.])"), replace=_card),
)

EMAIL_RULE = Rule("email", re.compile(r"[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"), ("@",))


class Redactor:
    def __init__(self, settings: RedactionSettings = RedactionSettings()):
        extra = tuple(Rule(kind, re.compile(pattern)) for kind, pattern in settings.patterns)
        self.rules = BUILTIN_RULES + ((EMAIL_RULE,) if settings.emails else ()) + extra

    def redact(self, text: str) -> str:
        lowered = text.lower()
        for rule in self.rules:
            text = rule.apply(text, lowered)
        return text

    def redact_data(self, value: Any, default: Callable[[Any], Any] | None = None) -> Any:
        """Strings inside dicts and lists redacted; a value under a secret-named key replaced whole.

        `default` turns other objects (datetimes, dataclasses) into plain data first, as for JSON.
        """
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Mapping):
            return {key: self._value_under(key, item, default) for key, item in value.items()}
        if isinstance(value, (list, tuple, set, frozenset)):
            return [self.redact_data(item, default) for item in value]
        if value is None or isinstance(value, (bool, int, float)) or default is None:
            return value
        return self.redact_data(default(value), default)

    def _value_under(self, key: Any, value: Any, default: Callable[[Any], Any] | None) -> Any:
        if isinstance(key, str) and _SECRET_KEY_NAME.match(key) and isinstance(value, (str, int)) \
                and not isinstance(value, bool) and value != "":
            return "[redacted:secret]"
        return self.redact_data(value, default)


_active = Redactor()


def use(settings: RedactionSettings) -> None:
    """Make `settings` (from the loaded config) the process's redaction."""
    global _active
    _active = Redactor(settings)


def redact(text: str) -> str:
    return _active.redact(text)


def redact_data(value: Any, default: Callable[[Any], Any] | None = None) -> Any:
    return _active.redact_data(value, default)
