"""Secrets out of everything that leaves the bot: messages, uploads, the timeline, our log lines, `run`.

Two rule sets. Ours come first: they keep the text readable (for `key=value`, URLs and headers only
the secret part is replaced) and cover forms no scanner names (a DSN's password, a bearer header,
`password: x` in prose, Oracle's `user/password@db`, card numbers that pass the Luhn check). Then
every regex rule of detect-secrets (a maintained scanner, used as a dependency), each replacing its
whole match, stretched to the end of the token it cut into. Last, a high-entropy value after a
secret-ish key (`session_sig=…`), the way detect-secrets measures entropy.

Speed: each rule is a regex gated on literal keywords: it only runs when one of them occurs in the
text (a plain substring test), because most text holds no secret and an ungated regex over log
excerpts costs far more than the test. detect-secrets' regexes name no keywords, so theirs are read
from each regex (a literal that every match must contain). `bench/redact.py` measures a 1 MB excerpt.

What is not a secret stays: `token: 3 of 5 used` (an unquoted value after `key: ` needs 4
characters), MySQL's `(using password: YES)`, placeholders like `password: null`, public IP
addresses (detect-secrets' IP rule is left out: an address in a log is evidence, not a secret).

Redact first, then cut: `excerpt()` is the one way to shorten a text that leaves, and never cuts
through a `[redacted:kind]` mark. A private key's body is a key without its BEGIN or END line too.

The process has one active redactor (`use` sets it from the config), because our log lines are
formatted where no config is at hand.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from re import _constants as sre_constants  # type: ignore[attr-defined]
from re import _parser as sre_parser  # type: ignore[attr-defined]
from typing import Any

import re2
from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
from detect_secrets.plugins.base import RegexBasedDetector
from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString, HexHighEntropyString
from detect_secrets.plugins.ip_public import IPPublicDetector
from detect_secrets.plugins.keyword import DENYLIST as KEYWORD_DENYLIST

# Key names that hold secrets: detect-secrets' keyword list, and ours (`pass` only as a word of its own).
_KEY_WORDS = "|".join((*KEYWORD_DENYLIST, "token", r"api[_-]?key", "apikey", r"access[_-]?key",
                       r"private[_-]?key", "credentials?", "passphrase", r"(?<![a-z])pass(?![a-z])"))
_SECRET_KEY = rf"[\w.-]*?(?:{_KEY_WORDS})(?:[_-][\w.-]*)?"
_SECRET_KEY_NAME = re.compile(rf"^{_SECRET_KEY}$", re.I)
_NOT_REDACTED = r"(?!\[redacted:)"
MIN_LOOSE_SECRET = 4     # characters of an unquoted value after `key: ` or `key = ` (see _unquoted_secret_value)
_CARD_NETWORK = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|3[068]|35|6011|64[4-9]|65|62)")
# Values that say something about a secret without being one: "(using password: YES)", "token: null".
_PLACEHOLDERS = frozenset(("yes", "no", "true", "false", "null", "none", "nil", "empty", "unset", "set", "missing",
                           "required", "optional", "invalid", "hidden", "redacted", "masked", "***", "<redacted>"))
_TOKEN_TAIL = re.compile(r"[A-Za-z0-9_\-+/=]*")


@dataclass(frozen=True)
class Rule:
    kind: str
    pattern: re.Pattern[str]
    keywords: tuple[str, ...] = ()          # the regex runs only if one occurs; none: always runs
    ignore_case: bool = False               # keywords are then lowercase and tested on lowered text
    replace: Callable[[re.Match[str]], str] | None = None
    by_line: bool = True                    # a match never spans lines: only lines holding a keyword are searched

    def apply(self, text: str, lowered: str) -> str:
        """Once a keyword is known to occur (the redactor tests each keyword once for all the rules);
        `lowered` is `text.lower()`."""
        haystack = lowered if self.ignore_case else text
        if not self.keywords or not self.by_line or len(text) < LINE_GATING_FROM or len(haystack) != len(text):
            return self.substitute(text)
        pieces: list[str] = []
        position = 0
        for start, end in _lines_holding(haystack, self.keywords):
            pieces.append(text[position:start])
            pieces.append(self.substitute(text[start:end]))
            position = end
        pieces.append(text[position:])
        return "".join(pieces)

    def substitute(self, text: str) -> str:
        return self.pattern.sub(self.replace or (lambda match: f"[redacted:{self.kind}]"), text)


LINE_GATING_FROM = 4096     # characters: below, searching the whole text costs no more than finding its lines


def _lines_holding(haystack: str, keywords: tuple[str, ...]) -> list[tuple[int, int]]:
    """The spans of the lines of `haystack` holding one of `keywords`, in order, merged."""
    starts: set[int] = set()
    for keyword in keywords:
        found = haystack.find(keyword)
        while found != -1:
            start = haystack.rfind("\n", 0, found) + 1
            starts.add(start)
            end = haystack.find("\n", found)
            found = haystack.find(keyword, end) if end != -1 else -1
    spans: list[tuple[int, int]] = []
    for start in sorted(starts):
        end = haystack.find("\n", start)
        end = len(haystack) if end == -1 else end
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        else:
            spans.append((start, end))
    return spans


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
    kind = ("password" if "pass" in key or "pwd" in key or "contras" in key else
            "api_key" if "api" in key or "access" in key else
            "token" if "token" in key else "secret")
    value = match.group("value")
    if _is_placeholder(value):
        return match.group(0)
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


def _is_placeholder(value: str) -> bool:
    return value.strip("\\\"'()[]{}.,;:!?").lower() in _PLACEHOLDERS


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


_SECRET_KEYWORDS = ("pass", "pwd", "secret", "token", "key", "credential", "contrase")

BUILTIN_RULES: tuple[Rule, ...] = (
    # A block, to its END line or the end of the text; a body cut off from its BEGIN line, up to END;
    # PuTTY's private lines.
    Rule("private_key", re.compile(
        r"-{4,}\s?BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY( BLOCK|)\s?-{4,}.*?(?:-{4,}\s?END \1PRIVATE KEY\2\s?-{4,}|\Z)",
        re.S), ("PRIVATE KEY",), by_line=False),
    Rule("private_key", re.compile(
        r"(?:^[A-Za-z0-9+/=]{8,}\r?\n)*[A-Za-z0-9+/=]*-{4,}\s?END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK|)\s?-{4,}", re.M),
        ("PRIVATE KEY",), by_line=False),
    Rule("private_key", re.compile(r"Private-Lines: \d+\r?\n(?:[A-Za-z0-9+/=]+(?:\r?\n|\Z))+"), ("Private-Lines",),
         by_line=False),
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
    Rule("azure_key", re.compile(
        rf"(?P<head>\b(?:Account|SharedAccess)Key=){_NOT_REDACTED}[A-Za-z0-9+/=]{{20,}}", re.I),
        ("key=",), ignore_case=True, replace=_around("azure_key")),
    Rule("azure_sas", re.compile(rf"(?P<head>(?<![\w-])sig=){_NOT_REDACTED}[A-Za-z0-9%+/=]{{16,}}"), ("sig=",),
         replace=_around("azure_sas")),
    Rule("stripe_key", re.compile(r"\b(?:[rs]k_(?:live|test)|whsec)_[0-9A-Za-z]{10,}"),
         ("k_live_", "k_test_", "whsec_")),
    Rule("npm_token", re.compile(r"\bnpm_[A-Za-z0-9]{36}\b"), ("npm_",)),
    Rule("openai_key", re.compile(r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"), ("sk-",)),
    Rule("google_api_key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}"), ("AIza",)),
    Rule("google_oauth", re.compile(r"\b(?:GOCSPX-|ya29\.)[0-9A-Za-z_-]{20,}"), ("GOCSPX-", "ya29.")),
    Rule("vault_token", re.compile(r"\bhv[sbr]\.[A-Za-z0-9_-]{20,}"), ("hvs.", "hvb.", "hvr.")),
    # Oracle's connect strings: scott/tiger@orcl, app/s3cret@//db:1521/svc (a word that starts the argument)
    Rule("password", re.compile(
        rf"(?P<head>(?:^|(?<=[\s\"'=(]))[A-Za-z][\w$#.]*/){_NOT_REDACTED}[^\s/@\"']+(?P<tail>@)(?=[\w/(\[])", re.M),
        ("@",), replace=_around("password")),
    # "password": "x" (JSON, also escaped inside a JSON string), 'password': 'x', "password" => "x"
    Rule("secret", re.compile(
        rf"(?P<key>\\?[\"']{_SECRET_KEY}\\?[\"'])(?P<sep>\s*(?:[:=]|=>)\s*){_NOT_REDACTED}"
        r"(?P<value>\\\"(?:(?!\\\").)*\\\"|\"(?:[^\"\\]|\\.)*\"|'[^']*'|[^\s,;}\]]+)", re.I),
        _SECRET_KEYWORDS, ignore_case=True, replace=_secret_value),
    # password=x, ?token=x&, PGPASSWORD="x"; looser: password = x, password: x, X-Api-Key: x (not `token == x`)
    Rule("secret", re.compile(
        rf"(?P<key>(?:{_KEY_WORDS})(?:[_-][\w.-]*)?)(?P<sep>[ \t]*(?:=(?!=)|:)[ \t]*){_NOT_REDACTED}"
        r"(?P<value>\"[^\"]*\"|'[^']*'|[^\s&,;\"'}\]]+)", re.I),
        _SECRET_KEYWORDS, ignore_case=True, replace=_unquoted_secret_value),
    Rule("card", re.compile(r"(?<![\d.-])\d(?:[ -]?\d){12,18}(?![\d.])"), replace=_card),
)

def _required_literals(pattern: re.Pattern[str]) -> tuple[str, ...]:
    """Strings one of which every match of `pattern` contains (lowercase when it ignores case), or ()."""
    found = _literals(sre_parser.parse(pattern.pattern, pattern.flags).data)
    if not found:
        return ()
    return tuple(sorted({literal.lower() for literal in found} if pattern.flags & re.I else found))


def _literals(items: Iterable[tuple[Any, Any]]) -> frozenset[str] | None:
    """The best set of alternatives a sequence of regex items must contain: the one whose shortest
    string is longest."""
    best: frozenset[str] | None = None

    def consider(candidate: frozenset[str] | None) -> None:
        nonlocal best
        if candidate and all(candidate) and (best is None or min(map(len, candidate)) > min(map(len, best))):
            best = candidate

    run: list[str] = []
    for op, argument in items:
        if op is sre_constants.LITERAL:
            run.append(chr(argument))
            continue
        consider(frozenset(["".join(run)]) if run else None)
        run = []
        if op is sre_constants.SUBPATTERN:
            consider(_literals(argument[-1].data))
        elif op is sre_constants.BRANCH:
            branches = [_literals(branch.data) for branch in argument[1]]
            if all(branches):
                consider(frozenset(literal for branch in branches if branch for literal in branch))
        elif op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT) \
                and argument[0] >= 1:
            consider(_literals(argument[2].data))
    consider(frozenset(["".join(run)]) if run else None)
    return best


_DELIMITERS = " \t\r\n\"'=:,;()[]{}"


def _whole_token(kind: str) -> Callable[[re.Match[str]], str]:
    """A scanner rule's match, without the delimiters around it, and through the rest of the token
    it may stop inside (a key longer than the rule's fixed length)."""

    def replace(match: re.Match[str]) -> str:
        found = match.group(0)
        inner = found.strip(_DELIMITERS)
        if not inner:
            return found
        head = found[:found.index(inner)]
        tail = found[len(head) + len(inner):]
        return f"{head}[redacted:{kind}]{tail}"

    return replace


@dataclass(frozen=True)
class _ScannerRule(Rule):
    """A detect-secrets rule: its match is replaced whole, and a token it stops inside is followed to its end."""

    def substitute(self, text: str) -> str:
        replace = _whole_token(self.kind)
        pieces: list[str] = []
        position = 0
        for match in self.pattern.finditer(text):
            if match.start() < position:     # inside the tail of the previous token
                continue
            end = match.end()
            if match.group(0) and match.group(0)[-1] not in _DELIMITERS:
                tail = _TOKEN_TAIL.match(text, end)
                end = tail.end() if tail else end
            pieces.append(text[position:match.start()])
            pieces.append(replace(match))
            position = end
        if not pieces:
            return text
        pieces.append(text[position:])
        return "".join(pieces)


def _scanner_rules() -> tuple[Rule, ...]:
    """Every regex rule of detect-secrets, but the public IP one (an address is evidence, not a secret)."""
    rules: list[Rule] = []
    plugins: dict[str, Any] = get_mapping_from_secret_type_to_class()
    for secret_type, plugin in sorted(plugins.items()):
        if not issubclass(plugin, RegexBasedDetector) or plugin is IPPublicDetector:
            continue
        kind = re.sub(r"[^a-z0-9]+", "_", secret_type.lower()).strip("_")
        for pattern in plugin().denylist:
            rules.append(_ScannerRule(kind, pattern, _required_literals(pattern), bool(pattern.flags & re.I)))
    return tuple(rules)


# A long random-looking value after a secret-ish key: `session_sig=7Hq2…`, `"deployKey": "a8F…"`.
_ENTROPY_KEYWORDS = ("key", "secret", "token", "pass", "pwd", "auth", "credential", "sig", "session", "cookie",
                     "private", "salt", "seed")
_BASE64_ENTROPY, _HEX_ENTROPY = Base64HighEntropyString(), HexHighEntropyString()
_RANDOM_LOOKING = re.compile(r"(?=[^_.~-]*[A-Za-z])(?=[^_.~-]*\d)[^_.~-]{8,}")   # letters and digits mixed


def _high_entropy_value(match: re.Match[str]) -> str:
    value = match.group("value")
    if not any(_RANDOM_LOOKING.fullmatch(part) for part in re.split(r"[_.~-]", value)):
        return match.group(0)   # words and numbers (user_profile_1234, v2-eu-west): names, not secrets
    if re.fullmatch(r"[0-9a-fA-F-]+", value):   # hex, UUIDs too
        random_enough = _HEX_ENTROPY.calculate_shannon_entropy(value.replace("-", "")) >= _HEX_ENTROPY.entropy_limit
    else:   # the scanner's limit is for long strings; a 16-character one cannot reach it
        limit = min(_BASE64_ENTROPY.entropy_limit, math.log2(len(value)) * 0.8)
        random_enough = _BASE64_ENTROPY.calculate_shannon_entropy(value) >= limit
    return f"{match.group('head')}[redacted:secret]" if random_enough else match.group(0)


ENTROPY_RULE = Rule("secret", re.compile(
    rf"(?P<head>(?:{'|'.join(_ENTROPY_KEYWORDS)})[\w.-]*\\?[\"']?[ \t]*(?:[:=]|=>)[ \t]*\\?[\"']?)"
    rf"{_NOT_REDACTED}(?P<value>[A-Za-z0-9+/=_~.-]{{16,}})", re.I),
    _ENTROPY_KEYWORDS, ignore_case=True, replace=_high_entropy_value)

SCANNER_RULES = _scanner_rules()

EMAIL_RULE = Rule("email", re.compile(r"[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"), ("@",))


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
_REPEATS = (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT)


def compile_pattern(pattern: str) -> Any:
    """A pattern from the config, compiled to run in linear time (RE2), whatever the text: ValueError
    says why it cannot be one (Python's syntax, as the README documents it, is checked first)."""
    try:
        parsed = sre_parser.parse(pattern)
    except (re.error, OverflowError, RecursionError) as error:
        raise ValueError(f"not a valid regular expression: {error}") from None
    if _nested_repeat(parsed.data, inside=False):
        raise ValueError("a repetition inside a repetition, like (a+)+, can take exponential time; "
                         "repeat one or the other")
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as error:
        reason = error.args[0].decode() if error.args and isinstance(error.args[0], bytes) else str(error)
        raise ValueError(f"cannot run in linear time ({reason}): no lookarounds or backreferences") from None


def _nested_repeat(items: Iterable[tuple[Any, Any]], inside: bool) -> bool:
    for op, argument in items:
        if op in _REPEATS:
            many = argument[1] > 1
            if many and inside:
                return True
            if _nested_repeat(argument[2].data, inside or many):
                return True
        elif op is sre_constants.SUBPATTERN and _nested_repeat(argument[-1].data, inside):
            return True
        elif op is sre_constants.BRANCH and any(_nested_repeat(branch.data, inside) for branch in argument[1]):
            return True
    return False


DEFAULT_RULES = BUILTIN_RULES + SCANNER_RULES + (ENTROPY_RULE,)


class Redactor:
    def __init__(self, settings: RedactionSettings = RedactionSettings(), rules: tuple[Rule, ...] = DEFAULT_RULES):
        """`rules`: all of ours and the scanner's; bench/redact.py compares with ours alone."""
        extra = tuple(Rule(kind, compile_pattern(pattern)) for kind, pattern in settings.patterns)
        self.rules = rules + ((EMAIL_RULE,) if settings.emails else ()) + extra

        self._gates = [(rule, frozenset((keyword, rule.ignore_case) for keyword in rule.keywords))
                       for rule in self.rules]
        self._keywords = sorted({key for _, gate in self._gates for key in gate})

    def redact(self, text: str) -> str:
        lowered = text.lower()
        present = {(keyword, lower) for keyword, lower in self._keywords if keyword in (lowered if lower else text)}
        for rule, gate in self._gates:
            if gate and gate.isdisjoint(present):
                continue
            redacted = rule.apply(text, lowered)
            if redacted != text:
                text, lowered = redacted, redacted.lower()
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


def excerpt(text: str, limit: int) -> str:
    """Redact first, then cut: at most `limit` characters, ending in … when cut, never inside a
    `[redacted:kind]` mark. The one way to shorten a text that leaves the bot."""
    text = _active.redact(text)
    if len(text) <= limit:
        return text
    end = max(0, limit - 1)
    for mark in _MARK.finditer(text, max(0, end - _LONGEST_MARK), end + _LONGEST_MARK):
        if mark.start() < end < mark.end():
            end = mark.start()
    return text[:end] + "…"


_MARK = re.compile(r"\[redacted:\w+\]")
_LONGEST_MARK = 80
