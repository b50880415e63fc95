"""Time as users write it and as we show it.

Inside, every time is an aware UTC datetime; the configured zone is used only to read what a user
typed ("14:05") and to show times back.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import overload
from zoneinfo import ZoneInfo

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_DURATION = timedelta(days=3660)   # ten years: longer is a typo, and past it date arithmetic overflows
_DURATION = re.compile(r"^(?:\d+[smhdw])+$")
_DURATION_PART = re.compile(r"(\d+)([smhdw])")
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")
_AGO = re.compile(r"^(\S+)\s+ago$")


class TimeParseError(ValueError):
    """Text that is not a duration or a point in time; the message says what was expected."""


def parse_duration(text: str) -> timedelta:
    """`90s`, `15m`, `2h`, `1d`, `1w`, or a sum of them such as `1h30m`."""
    compact = text.strip().lower().replace(" ", "")
    if not _DURATION.match(compact):
        raise TimeParseError(f"{text!r} is not a duration; write it like 90s, 15m, 2h or 1d")
    seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(compact))
    if seconds > MAX_DURATION.total_seconds():
        raise TimeParseError(f"{text!r} is longer than ten years")
    return timedelta(seconds=seconds)


def parse_when(text: str, now: datetime, tz: ZoneInfo) -> datetime:
    """A point in time: `14:05` (in `tz`), ISO 8601, `25m ago` or `now`; returned in UTC.

    `14:05` means today; when that is more than 12 hours ahead it means yesterday (typed just
    after midnight about the evening before). Whether a time in the future is acceptable is the
    caller's decision.
    """
    value = text.strip()
    lowered = value.lower()
    if lowered == "now":
        return now.astimezone(UTC)
    if ago := _AGO.match(lowered):
        return (now - parse_duration(ago.group(1))).astimezone(UTC)
    if clock := _CLOCK.match(value):
        hour, minute, second = int(clock.group(1)), int(clock.group(2)), int(clock.group(3) or 0)
        if hour > 23 or minute > 59 or second > 59:
            raise TimeParseError(f"{text!r} is not a time of day")
        local_now = now.astimezone(tz)
        candidate = local_now.replace(hour=hour, minute=minute, second=second, microsecond=0)
        if candidate - local_now > timedelta(hours=12):
            candidate -= timedelta(days=1)
        return candidate.astimezone(UTC)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise TimeParseError(
            f"{text!r} is not a time; write 14:05, 25m ago or ISO 8601 like 2026-11-24T14:05"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise TimeParseError(f"{text!r} is out of range") from None


def parse_since(text: str, now: datetime, tz: ZoneInfo) -> datetime:
    """`--since`: a duration back from now (`6h`) or a point in time (`14:00`, `25m ago`, ISO 8601),
    never in the future; returned in UTC."""
    try:
        since = now - parse_duration(text)
    except TimeParseError:
        try:
            since = parse_when(text, now, tz)
        except TimeParseError as error:
            raise TimeParseError(f"{error}; or a duration like 6h") from None
    if since > now:
        raise TimeParseError(f"{text} is in the future")
    return since.astimezone(UTC)


def format_duration(seconds: float | None) -> str:
    """Two units at most, zero-padded second unit: `45 s`, `12 m 05 s`, `1 h 07 m`, `2 d 03 h`."""
    if seconds is None:
        return "—"
    total = max(0, int(round(seconds)))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours:02d} h"
    if hours:
        return f"{hours} h {minutes:02d} m"
    if minutes:
        return f"{minutes} m {secs:02d} s"
    return f"{secs} s"


def to_iso(moment: datetime | None) -> str | None:
    """UTC ISO 8601 with a Z, to the second: how times are stored and exported."""
    if moment is None:
        return None
    # isoformat rather than strftime: half the cost, and an ack pays it
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


@overload
def from_iso(text: str) -> datetime: ...


@overload
def from_iso(text: str | None) -> datetime | None: ...


def from_iso(text: str | None) -> datetime | None:
    if text is None:
        return None
    return datetime.fromisoformat(text).astimezone(UTC)


def utc_now() -> datetime:
    """Now, to the second: times are stored to the second, and durations should agree with them."""
    return datetime.now(UTC).replace(microsecond=0)


def clock_starting_at(start: datetime) -> Callable[[], datetime]:
    """A clock that reads `start` now and runs on from there: a whole process (a test, a replay of a
    past week) believes it is then, and durations it measures are still real."""
    offset = start.astimezone(UTC) - datetime.now(UTC)
    return lambda: (datetime.now(UTC) + offset).replace(microsecond=0)


def iso_week(moment: datetime, tz: ZoneInfo) -> str:
    """The ISO week `moment` falls in, in `tz`: "2026-W47"."""
    year, week, _ = moment.astimezone(tz).isocalendar()
    return f"{year}-W{week:02d}"
