"""The weekly report, posted by the bot itself: exactly once per week.

At the configured weekday and time (`[slack] summary_at`, in the configured zone) the report of
the previous ISO week is due until the week ends. Whoever finds it due first (a replica, the bot
after a restart, `oncall-bot summary --post` from cron) claims the week in the `reports` table,
in the same transaction that writes the report to the outbox; everyone else finds it claimed.
A report missed for a whole week (the bot was down) is not posted late.

The report itself is the `/mttr report <week>` command, run like any other.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from bot.command import Outcome
from bot.config import Config
from bot.dispatch import Dispatcher, Invocation
from bot.outbox import Outbox
from bot.store import Store

REPORT_COMMAND = "mttr"
REPORT_TEXT = "report {week}"
CHECK_EVERY_SECONDS = 60
BOT_USER = "oncall-bot"

log = logging.getLogger(__name__)


def due_week(now: datetime, config: Config) -> str | None:
    """The ISO week whose report is due at `now` ("2026-W47"), or None before this week's slot."""
    local = now.astimezone(config.timezone)
    monday = local.date() - timedelta(days=local.weekday())
    slot_day = monday + timedelta(days=config.slack.summary_weekday)
    slot = datetime.combine(slot_day, config.slack.summary_time, config.timezone)
    if now < slot:
        return None
    year, week, _ = (monday - timedelta(days=7)).isocalendar()
    return f"{year}-W{week:02d}"


class WeekNotOver(Exception):
    """A week's report is posted once, so never before the week is over: it would claim the week
    with partial numbers, and the real report would never go out."""


def week_end(week: str, tz: ZoneInfo) -> datetime:
    """The Monday 00:00 (in `tz`) after the ISO week "2026-W47", in UTC; ValueError for no such week."""
    year, number = (int(part) for part in week.upper().split("-W"))
    monday = datetime.fromisocalendar(year, number, 1) + timedelta(days=7)
    return monday.replace(tzinfo=tz).astimezone(UTC)


def check_over(week: str, now: datetime, tz: ZoneInfo) -> None:
    """WeekNotOver unless the ISO week `week` has ended at `now`; ValueError for no such week."""
    ends = week_end(week, tz)
    if now < ends:
        raise WeekNotOver(f"{week} is not over until {ends.astimezone(tz):%a %d %b %H:%M %Z}")


class WeeklyReport:
    def __init__(self, store: Store, config: Config, dispatcher: Dispatcher, outbox: Outbox,
                 clock: Callable[[], datetime]):
        self.store = store
        self.config = config
        self.dispatcher = dispatcher
        self.outbox = outbox
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.config.slack.summary_channel:
            log.info("no [slack] summary_channel: the weekly report is not posted")
            return
        self._thread = threading.Thread(target=self._loop, name="weekly-report", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("the weekly report check failed")
            self._stop.wait(CHECK_EVERY_SECONDS)

    def tick(self) -> str | None:
        """Post the due report unless it was posted; returns the week posted now, if any."""
        week = due_week(self.clock(), self.config)
        if week is None or self.store.report_claimed(week):
            return None
        return self.post(week)

    def post(self, week: str) -> str | None:
        """Write `week`'s report to the outbox unless its week was claimed; the week, if posted.

        WeekNotOver (nothing claimed, nothing written) for a week that has not ended yet.
        """
        check_over(week, self.clock(), self.config.timezone)
        channel = self.config.slack.summary_channel
        invocation = Invocation(REPORT_COMMAND, REPORT_TEXT.format(week=week), BOT_USER, channel,
                                request_id=f"report-{week}")
        reply = self.dispatcher.run(invocation)
        if reply.outcome is not Outcome.OK:
            raise RuntimeError(f"the report of {week} could not be made: {reply.data.get('message')}")
        with self.store.write():
            if not self.store.claim_report(week, channel, self.clock(), f"{socket.gethostname()}:{os.getpid()}"):
                return None
            self.outbox.post(reply, invocation)
        log.info("weekly report of %s written for %s", week, channel)
        return week
