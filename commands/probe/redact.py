"""Keep passwords out of everything a probe says or logs.

A probe's URL, DSN and headers come from the config, usually with a password read from the
environment. Details are scrubbed twice: the target's own secrets (password, user:password,
secret query parameters, header values) wherever they appear, whatever their shape, then by the
bot's redaction rules (bot.redact: `scheme://user:pass@`, `password=…`, `?token=…`, tokens), in
case a driver echoed a part of a connection string we did not foresee. One mask, the bot's.
"""

from __future__ import annotations

import logging
import re
import threading
from functools import cache
from urllib.parse import parse_qsl, unquote, urlsplit

from bot.redact import redact as redact_text
from commands.probe.settings import ProbeConfig

MASK = "[redacted:secret]"
MIN_HEADER_SECRET = 6
_KEY_VALUE = re.compile(r"(?i)\b((?:ssl)?password|passwd|pwd)(\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&,;]+)")
_SECRET_PARAM = re.compile(r"(?i)(pass|pwd|secret|token|key|auth|sig|credential)")

_seen: set[str] = set()        # every secret of every probe run so far, for the log filter
_seen_lock = threading.Lock()


@cache
def secrets_of(probe: ProbeConfig) -> frozenset[str]:
    """The strings of this probe's settings that must never be shown."""
    # Header values are mostly tokens; short ones ("1", "json") are not, and masking them would
    # garble every detail that happens to contain them.
    found: set[str] = {value for _, value in probe.headers if len(value) >= MIN_HEADER_SECRET}
    for target in (probe.url, probe.dsn):
        if not target:
            continue
        for match in _KEY_VALUE.finditer(target):
            found.add(match.group(3).strip("'"))
        if "://" not in target:
            continue
        parts = urlsplit(target)
        userinfo = parts.netloc.rpartition("@")[0]
        if userinfo:
            found.update({userinfo, unquote(userinfo)})
        if parts.password:
            found.update({parts.password, unquote(parts.password)})
        found.update(value for name, value in parse_qsl(parts.query) if _SECRET_PARAM.search(name))
    found.discard("")
    with _seen_lock:
        _seen.update(found)
    return frozenset(found)


def redact(text: str, secrets: frozenset[str] | set[str] = frozenset()) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return redact_text(text)


def public_url(url: str) -> str:
    """scheme://host[:port]/path of a URL: no user, password, query or fragment."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}"


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        with _seen_lock:
            secrets = set(_seen)
        message = record.getMessage()
        scrubbed = redact(message, secrets)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


def guard_driver_logs() -> None:
    """httpx logs every request's full URL at INFO ("HTTP Request: GET https://…?token=…")."""
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactingFilter) for f in logger.filters):
        logger.addFilter(_RedactingFilter())
