"""/mttr: time to resolve and to acknowledge, per ISO week of the configured time zone.

Definitions (also in the README and in `/mttr help`):
- time to resolve = resolved - started (started defaults to opened)
- time to acknowledge = acknowledged - opened (incidents never acknowledged are left out of MTTA)
- time to detect = detected - started; time to mitigate = mitigated - started (incidents without
  that milestone are left out of each)
- time to restore (DORA) = the median time to resolve
- an incident counts in the week in which it was resolved; a reopened incident counts once, with
  its final resolution
- median and p90 interpolate linearly between the closest ranks (numpy's default)

The store gives the durations of a window as columns; each statistic sorts its list once and the
severities are grouped in one pass, so a window of 100,000 incidents costs about twice reading it.
"""

from __future__ import annotations

import heapq
import itertools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bot.args import Option, number, parse_args
from bot.command import Audience, Command, Context, Reply, Upload, UsageError
from bot.store import Resolutions, Store
from bot.times import iso_week, to_iso
from commands.deploys.settings import DeploySettings
from commands.mttr_chart import chart_png

SLOWEST = 5
YEARS = (1971, 2999)     # weeks outside them are typos (and the window before them would overflow)
SERIES_WEEKS = 12
MAX_WEEKS = 520
_WEEK = re.compile(r"^(\d{4})-?W(\d{1,2})$", re.I)
_OPTIONS = {"weeks": Option.VALUE, "service": Option.VALUE, "sev": Option.VALUE}


@dataclass(frozen=True)
class MttrArgs:
    period: str = "this-week"        # this-week | last-week | YYYY-Www
    weeks: int | None = None
    service: str | None = None
    severity: int | None = None
    weekly_report: bool = False      # `/mttr report [week]`: the weekly report, with its chart


@dataclass(frozen=True)
class Window:
    """Whole ISO weeks of the configured zone: [start, end) in UTC."""

    start: datetime
    weeks: int
    tz: ZoneInfo

    @property
    def end(self) -> datetime:
        return _shift_weeks(self.start, self.weeks, self.tz)

    @property
    def label(self) -> str:
        first = iso_week(self.start, self.tz)
        last = iso_week(self.end - timedelta(seconds=1), self.tz)
        return first if first == last else f"{first} – {last}"

    def before(self) -> Window:
        """The window of as many weeks just before this one."""
        return Window(_shift_weeks(self.start, -self.weeks, self.tz), self.weeks, self.tz)


@dataclass(frozen=True)
class Stats:
    count: int
    mean: float | None
    median: float | None
    p90: float | None


def parse(text: str) -> MttrArgs:
    args = parse_args(text, _OPTIONS, incident_refs=False)
    if args.words[:1] == ["report"]:
        if args.options or args.words[1:2] == ["report"]:
            raise UsageError("report takes only a week: /mttr report [2026-W47].")
        period = parse(" ".join(args.words[1:]) or "last-week").period
        return MttrArgs(period=period, weekly_report=True)
    if len(args.words) > 1:
        raise UsageError(f"One period at a time, not {' and '.join(args.words)}.")
    period = args.words[0] if args.words else "this-week"
    period = period.lower() if period.lower() in ("this-week", "last-week") else period.upper()
    if period not in ("this-week", "last-week") and not _WEEK.match(period):
        raise UsageError(f"{period!r} is not a period: this-week, last-week or an ISO week like 2026-W47.")
    weeks = None
    if "weeks" in args.options:
        if args.words:
            raise UsageError("Give a period or --weeks N, not both.")
        weeks = _number(args.options["weeks"], "--weeks", 1, MAX_WEEKS)
    severity = _number(args.options["sev"], "--sev", 1, 4) if "sev" in args.options else None
    return MttrArgs(period=period, weeks=weeks, service=args.options.get("service"), severity=severity)


def run(ctx: Context, args: MttrArgs) -> Reply:
    if args.service is not None and ctx.config.services:   # without any configured, any name is a filter
        ctx.service(args.service, "mttr")
    window = window_for(args, ctx.now(), ctx.config.timezone)
    if args.weekly_report:
        return _weekly_report(ctx, window)
    return Reply("mttr", report(ctx.store, window, ctx.now(), service=args.service, severity=args.severity))


def _weekly_report(ctx: Context, window: Window) -> Reply:
    """The week's report for the channel: the /mttr numbers, counts by service, deploy-caused
    incidents, and a chart of the 12 weeks ending with it."""
    data = report(ctx.store, window, ctx.now())
    data["by_service"] = [{"service": service or "", "resolved": count}
                          for service, count in ctx.store.resolved_by_service(window.start, window.end)]
    data["deploy_caused"] = [
        {"id": i.id, "title": i.title, "sha": i.cause.removeprefix("deploy:"), "service": i.service}
        for i in ctx.store.caused_by_deploys(window.start, window.end) if i.cause]
    caused = len(data["deploy_caused"])
    with_repo = [settings for settings in map(DeploySettings.of, ctx.config.services.values()) if settings.repo]
    from commands.deploys.query import count_deploys  # git, loaded when deploys are counted

    counted = [count_deploys(ctx, settings, window.start, window.end) for settings in with_repo]
    deploys = sum(n for n in counted if n is not None) if any(n is not None for n in counted) else None
    failed_deploys = len(distinct_commits(item["sha"] for item in data["deploy_caused"]))
    data["change_failure"] = {
        "deploy_caused": caused,
        "failed_deploys": failed_deploys,
        "share_of_incidents": round(caused / data["resolved"] * 100, 1) if data["resolved"] else None,
        "deploys": deploys,
        "rate": round(failed_deploys / deploys * 100, 1) if deploys else None,
    }
    series = []
    for back in range(SERIES_WEEKS - 1, -1, -1):
        week = Window(_shift_weeks(window.start, -back, window.tz), 1, window.tz)
        stats = _Window(ctx.store.resolutions(week.start, week.end)).to_resolve
        series.append({"week": week.label, "resolved": stats.count, "median": stats.median, "p90": stats.p90})
    data["series"] = series
    chart = Upload(f"mttr-{window.label}.png", f"Time to resolve, 12 weeks to {window.label}",
                   chart_png(series, f"Time to resolve and incidents, {series[0]['week']} – {window.label}"))
    return Reply("weekly_report", data, Audience.CHANNEL, files=(chart,))


def distinct_commits(shas: Iterable[str]) -> set[str]:
    """The commits among `shas`, a sha that begins another (a short one, stored before causes were
    looked up in git) being the same commit."""
    distinct: set[str] = set()
    for sha in sorted(set(shas), key=len, reverse=True):
        if not any(longer.startswith(sha) for longer in distinct):
            distinct.add(sha)
    return distinct


def window_for(args: MttrArgs, now: datetime, tz: ZoneInfo) -> Window:
    this_week = week_start(now.astimezone(tz).date().isocalendar()[:2], tz)
    if args.weeks is not None:
        return Window(_shift_weeks(this_week, -(args.weeks - 1), tz), args.weeks, tz)
    if args.period == "this-week":
        return Window(this_week, 1, tz)
    if args.period == "last-week":
        return Window(_shift_weeks(this_week, -1, tz), 1, tz)
    match = _WEEK.match(args.period)
    assert match is not None, "parse let only weeks through"
    year, week = int(match.group(1)), int(match.group(2))
    if not YEARS[0] <= year <= YEARS[1]:
        raise UsageError(f"{args.period}: weeks from {YEARS[0]} to {YEARS[1]} only.")
    try:
        return Window(week_start((year, week), tz), 1, tz)
    except ValueError:
        raise UsageError(f"{args.period} is not a week of {year}.") from None


def week_start(year_week: tuple[int, int], tz: ZoneInfo) -> datetime:
    """Monday 00:00 of an ISO week in `tz`, as UTC."""
    monday = datetime.fromisocalendar(year_week[0], year_week[1], 1)
    return monday.replace(tzinfo=tz).astimezone(UTC)


def _shift_weeks(start: datetime, weeks: int, tz: ZoneInfo) -> datetime:
    # Shift in local wall time, so a daylight-saving change keeps weeks starting at local midnight.
    local = start.astimezone(tz).replace(tzinfo=None) + timedelta(weeks=weeks)
    return local.replace(tzinfo=tz).astimezone(UTC)


def report(store: Store, window: Window, now: datetime, *, service: str | None = None,
           severity: int | None = None) -> dict[str, Any]:
    """The numbers of one window, its previous window, and what is open now (durations in seconds)."""
    current = _Window(store.resolutions(window.start, window.end, service=service, severity=severity,
                                        slowest=SLOWEST))
    previous_window = window.before()
    previous = _Window(store.resolutions(previous_window.start, previous_window.end, service=service,
                                         severity=severity))
    ttr, tta = current.to_resolve, current.to_acknowledge
    prev_ttr, prev_tta = previous.to_resolve, previous.to_acknowledge
    return {
        "window": {"label": window.label, "start": to_iso(window.start), "end": to_iso(window.end),
                   "last_second": to_iso(window.end - timedelta(seconds=1)), "weeks": window.weeks,
                   "timezone": window.tz.key},
        "filters": {"service": service, "severity": severity},
        "opened": store.opened_count(window.start, window.end, service=service, severity=severity),
        "resolved": ttr.count,
        "mttr": asdict(ttr),
        "mtta": asdict(tta),
        "mttd": asdict(current.to_detect),
        "mttm": asdict(current.to_mitigate),
        "time_to_restore": ttr.median,
        "by_severity": [{"severity": level, "resolved": to_resolve.count, "mttr": asdict(to_resolve),
                         "mtta": asdict(to_acknowledge)}
                        for level, (to_resolve, to_acknowledge) in current.by_severity.items()],
        "previous": {"label": previous_window.label,
                     "opened": store.opened_count(previous_window.start, previous_window.end, service=service,
                                                  severity=severity),
                     "resolved": prev_ttr.count, "mttr": asdict(prev_ttr), "mtta": asdict(prev_tta)},
        "change": {"resolved": _change(ttr.count, prev_ttr.count),
                   "mttr_mean": _change(ttr.mean, prev_ttr.mean),
                   "mttr_median": _change(ttr.median, prev_ttr.median),
                   "mttr_p90": _change(ttr.p90, prev_ttr.p90),
                   "mtta_mean": _change(tta.mean, prev_tta.mean)},
        "slowest": [_incident_summary(store, incident_id, now) for incident_id in current.slowest],
        "open": _open_now(store, now, service, severity),
    }


class _Window:
    """The statistics of one window's resolutions: each severity's durations sorted once, and the
    whole window's merged from them (a sort of a few sorted runs costs a pass)."""

    def __init__(self, groups: list[Resolutions]):
        resolve = [sorted(group.to_resolve) for group in groups]
        acknowledge = [sorted(seconds for seconds in group.to_acknowledge if seconds is not None) for group in groups]
        self.by_severity = {group.severity: (_stats(r), _stats(a))
                            for group, r, a in zip(groups, resolve, acknowledge, strict=True)}
        self.to_resolve = _stats(sorted(itertools.chain.from_iterable(resolve)))
        self.to_acknowledge = _stats(sorted(itertools.chain.from_iterable(acknowledge)))
        self.to_detect = _stats(sorted(s for group in groups for s in group.to_detect if s is not None))
        self.to_mitigate = _stats(sorted(s for group in groups for s in group.to_mitigate if s is not None))
        longest = itertools.chain.from_iterable(group.slowest for group in groups)
        self.slowest = [incident_id for _, incident_id in heapq.nlargest(SLOWEST, longest)]


def _open_now(store: Store, now: datetime, service: str | None, severity: int | None) -> list[dict[str, Any]]:
    incidents = sorted(store.open_incidents(service=service, severity=severity), key=lambda i: i.started_at)
    return [{"id": i.id, "title": i.title, "severity": i.severity, "service": i.service, "status": i.status,
             "started_at": to_iso(i.started_at), "age": i.time_to_resolve(now),
             "announce_channel": i.announce_channel, "thread_ts": i.thread_ts} for i in incidents]


def _incident_summary(store: Store, incident_id: int, now: datetime) -> dict[str, Any]:
    i = store.incident(incident_id)
    assert i is not None, "a resolution's incident is never deleted"
    return {"id": i.id, "title": i.title, "severity": i.severity, "service": i.service,
            "time_to_resolve": i.time_to_resolve(now),
            "resolved_at": to_iso(i.resolved_at), "resolution": i.resolution,
            "announce_channel": i.announce_channel, "thread_ts": i.thread_ts}



def _stats(ordered: Sequence[float]) -> Stats:
    """Count, mean, median and p90 of `ordered`, which is sorted."""
    if not ordered:
        return Stats(0, None, None, None)
    return Stats(len(ordered), round(sum(ordered) / len(ordered)),
                 round(_quantile(ordered, 0.5)), round(_quantile(ordered, 0.9)))


def _quantile(ordered: Sequence[float], q: float) -> float:
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _change(current: float | None, previous: float | None) -> float | None:
    """Percent change against the previous window; None when there is nothing to compare."""
    if current is None or not previous:
        return None
    return round((current - previous) / previous * 100, 1)


def _number(value: str, option: str, low: int, high: int) -> int:
    found = number(str(value).upper().removeprefix("SEV") if option == "--sev" else value)
    if found is None or not low <= found <= high:
        raise UsageError(f"{option} must be a whole number from {low} to {high}, not {value!r}.")
    return found


COMMAND = Command(
    name="mttr",
    description="Mean, median and p90 time to resolve, MTTA, per week",
    usage="[this-week | last-week | 2026-W47 | --weeks N] [--service S] [--sev N] | report [2026-W47]",
    parse=parse,
    run=run,
    help_data=lambda config: {"slowest": SLOWEST},
)
