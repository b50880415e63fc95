"""The weekly report, posted by the bot itself: exactly once per week.

At the configured weekday and time (`[slack] summary_at`, in the configured zone) the report of
the previous ISO week is due until the week ends. Whoever finds it due first (a replica, the bot
after a restart, `oncall-bot summary --post` from cron) claims the week in the `reports` table,
in the same transaction that writes the report to the outbox; everyone else finds it claimed.
A report missed for a whole week (the bot was down) is not posted late.

The report itself is the `/mttr report <week>` command, run like any other.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from bot.command import Command, Context, Duty, Job, Outcome
from bot.config import Config
from bot.dispatch import Dispatcher, Invocation
from bot.outbox import Outbox
from bot.store import BOT_USER, Store
from bot.times import iso_week

REPORT_COMMAND = "mttr"
REPORT_TEXT = "report {week}"
TICK_SECONDS = 15          # how often the clock is looked at; a job's own `every` may be longer
DUTY = "duty"

log = logging.getLogger(__name__)


def due_week(now: datetime, config: Config) -> str | None:
    """The ISO week whose report is due at `now` ("2026-W47"), or None before this week's slot."""
    local = now.astimezone(config.timezone)
    monday = local.date() - timedelta(days=local.weekday())
    slot_day = monday + timedelta(days=config.slack.summary_weekday)
    slot = datetime.combine(slot_day, config.slack.summary_time, config.timezone)
    if now < slot:
        return None
    return iso_week(now - timedelta(days=7), config.timezone)


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
        if channel is None:
            raise RuntimeError("the weekly report has nowhere to go: [slack] summary_channel is not set")
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


def queue_duty(store: Store, duty: Duty, now: datetime) -> bool:
    """Queues `duty` as work under its key, run by a worker as the bot's command; false when it was queued before."""
    invocation = Invocation(duty.command.lstrip("/").partition(" ")[0], duty.command.partition(" ")[2], BOT_USER,
                            duty.channel, request_id="duty-" + hashlib.sha1(duty.key.encode()).hexdigest()[:12])
    return store.queue_work(f"duty:{duty.key}", DUTY, {"invocation": asdict(invocation)}, now)


class Scheduler:
    """The bot's own work, found due by the clock: the weekly report, and each feature's jobs.

    A job looks (at most every `Job.every`) for what is due and names each duty by a key; the duty
    is queued as work under that key, so it is done once whichever worker or replica finds it first,
    and found again harmlessly by the others and after restarts."""

    def __init__(self, store: Store, config: Config, commands: dict[str, Command], outbox: Outbox,
                 clock: Callable[[], datetime], queued: Callable[[], None], jobs: Iterable[Job] = ()):
        self.store = store
        self.config = config
        self.clock = clock
        self.jobs = tuple(jobs)
        self.queued = queued
        self.weekly_report = WeeklyReport(store, config, Dispatcher(store, config, commands, clock), outbox, clock)
        self._last: dict[str, datetime] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("the scheduler's check failed")
            self._stop.wait(TICK_SECONDS)

    def tick(self) -> int:
        """Post the weekly report if due, and queue the jobs' duties; how many duties were new."""
        if self.config.slack.summary_channel:
            self.weekly_report.tick()
        now = self.clock()
        new = 0
        for job in self.jobs:
            if job.name in self._last and now - self._last[job.name] < job.every:
                continue
            self._last[job.name] = now
            ctx = Context(user=BOT_USER, channel=None, store=self.store, config=self.config,
                          request_id=f"job-{job.name}", clock=self.clock)
            for duty in job.due(ctx):
                if queue_duty(self.store, duty, now):
                    new += 1
        if new:
            self.queued()
        return new
