from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.times import TimeParseError, format_duration, parse_duration, parse_since, parse_when

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 11, 24, 13, 30, tzinfo=UTC)  # 14:30 in Berlin


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400),
                                           ("1h30m", 5400), ("1w", 604800), (" 2H ", 7200)])
def test_durations(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "15", "m", "1.5h", "15 minutes", "-5m", "5x"])
def test_bad_durations_say_how_to_write_one(text):
    with pytest.raises(TimeParseError, match="90s, 15m, 2h or 1d"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["99999999999d", "3661d", "600w"])
def test_absurd_durations_are_refused_not_overflowed(text):
    with pytest.raises(TimeParseError, match="longer than ten years"):
        parse_duration(text)
    with pytest.raises(TimeParseError):
        parse_when(f"{text} ago", NOW, BERLIN)


def test_clock_time_is_today_in_the_configured_zone():
    assert parse_when("14:05", NOW, BERLIN) == datetime(2026, 11, 24, 13, 5, tzinfo=UTC)


def test_clock_time_far_ahead_means_yesterday_evening():
    just_after_midnight = datetime(2026, 11, 24, 23, 10, tzinfo=UTC)  # 00:10 Berlin, Nov 25
    assert parse_when("23:50", just_after_midnight, BERLIN) == datetime(2026, 11, 24, 22, 50, tzinfo=UTC)


def test_clock_time_slightly_ahead_stays_today_so_the_caller_can_refuse_it():
    assert parse_when("15:00", NOW, BERLIN) == datetime(2026, 11, 24, 14, 0, tzinfo=UTC)


def test_ago_and_now_and_iso():
    assert parse_when("25m ago", NOW, BERLIN) == NOW - timedelta(minutes=25)
    assert parse_when("now", NOW, BERLIN) == NOW
    assert parse_when("2026-11-24T14:05", NOW, BERLIN) == datetime(2026, 11, 24, 13, 5, tzinfo=UTC)
    assert parse_when("2026-11-24T14:05Z", NOW, BERLIN) == datetime(2026, 11, 24, 14, 5, tzinfo=UTC)
    assert parse_when("2026-11-24 14:05+02:00", NOW, BERLIN) == datetime(2026, 11, 24, 12, 5, tzinfo=UTC)


@pytest.mark.parametrize("text", ["25:00", "yesterday", "14h05", "25 ago", "2026-13-01", "0001-01-01T00:30"])
def test_bad_times(text):
    with pytest.raises(TimeParseError):
        parse_when(text, NOW, BERLIN)


@pytest.mark.parametrize("seconds, shown", [(None, "—"), (0, "0 s"), (45, "45 s"), (725, "12 m 05 s"),
                                            (4020, "1 h 07 m"), (183600, "2 d 03 h"), (-3, "0 s")])
def test_human_durations(seconds, shown):
    assert format_duration(seconds) == shown


def test_since_is_a_duration_back_or_a_point_in_time_never_ahead():
    assert parse_since("6h", NOW, BERLIN) == NOW - timedelta(hours=6)
    assert parse_since("14:00", NOW, BERLIN) == datetime(2026, 11, 24, 13, 0, tzinfo=UTC)
    with pytest.raises(TimeParseError, match="is in the future"):
        parse_since("15:00", NOW, BERLIN)
    with pytest.raises(TimeParseError, match="or a duration like 6h"):
        parse_since("lunch", NOW, BERLIN)
