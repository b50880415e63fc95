"""Workers: do what Slack asked and what the bot found due, from the store's work queue.

The process that answers Slack only verifies, acknowledges and queues (bot/app.py). A worker claims
queued work with a lease and does it on one of its threads: it runs the command through the
dispatcher, and writes the command's state, its reply's messages and the work's completion in one
atomic unit, so a worker killed at any moment leaves either all of it or none (and then the work is
taken over when its lease ends, by this worker's successor or another replica's). Work claimed
MAX_ATTEMPTS times without being done is answered as cut short instead of being run again.

A worker also sends the outbox and runs the bot's own jobs (the weekly report, and each feature's
`JOBS`): a duty a job finds due is queued under its own key, so it is done once, whatever the number
of workers, replicas and restarts.

`oncall-bot serve` and `socket` start worker processes of their own (`--workers N`, bot/server.py);
the console, `run` and the tests run the same Worker on threads of their process.
"""

from __future__ import annotations

import logging
import math
import os
import select
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from slack_sdk import WebClient

from bot.access import Access
from bot.command import Audience, Command, Context, Inbound, Job, Outcome, Reply
from bot.config import Config
from bot.dispatch import Dispatcher, Invocation
from bot.jsonlog import request_id
from bot.outbox import Outbox
from bot.render import Renderer
from bot.schedule import BOT_USER, DUTY, Scheduler, queue_duty
from bot.store import Store, StoreUnavailable, WorkItem
from bot.times import to_iso

THREADS = 8                       # work done at once by one worker (commands mostly wait on the network)
LEASE = timedelta(seconds=15)     # renewed every RENEW_SECONDS while the work runs: a dead worker's is
RENEW_SECONDS = 5                 # taken over within a lease
MAX_ATTEMPTS = 3                  # claims of one piece of work before it is told as cut short
POLL_SECONDS = 0.05               # how often an idle worker looks for work queued by another process
READY_SECONDS = 30               # for a worker process to start
STOP_MARGIN_SECONDS = 1.5         # of a drain, left to tell what is still running that it was cut short
DONE_KEPT = timedelta(days=1)     # done work's keys stop redeliveries for this long
PRUNE_EVERY = timedelta(hours=1)
COMMAND, BUTTON, HOME = "command", "button", "home"     # the kinds of work Slack asks for (and DUTY)

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, store: Store, config: Config, commands: dict[str, Command], client: WebClient,
                 renderer: Renderer, clock: Callable[[], datetime], *, jobs: Iterable[Job] = (),
                 inbound: Iterable[Inbound] = (), threads: int = THREADS):
        self.store = store
        self.config = config
        self.inbound = {hook.prefix: hook for hook in inbound}
        self.clock = clock
        self.renderer = renderer
        self.outbox = Outbox(store, client, renderer, clock, config.slack.outbox_retention)
        self.dispatcher = Dispatcher(store, config, commands, clock,
                                     Access(config.access, lambda group: _group_members(client, group)))
        # The bot runs its own duties: [access] is for people.
        self.duties = Dispatcher(store, config, commands, clock)
        self.scheduler = Scheduler(store, config, commands, self.outbox, clock, self.wake, jobs)
        self.threads = threads
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="work")
        # A progress message is shown at once, outside the unit its command's answer is written in.
        self._progress = ThreadPoolExecutor(max_workers=1, thread_name_prefix="progress")
        self._slots = threading.BoundedSemaphore(threads)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._claim_until = math.inf       # set by stop(): work is claimed until then
        self._running: dict[int, Invocation | None] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pruned_at: datetime | None = None
        self.name = f"{os.uname().nodename}:{os.getpid()}"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.outbox.start()
        self.scheduler.start()
        self._thread = threading.Thread(target=self._loop, name="worker", daemon=True)
        self._thread.start()
        threading.Thread(target=self._renew, name="lease", daemon=True).start()
        threading.Thread(target=self._learn_workspace_url, name="auth-test", daemon=True).start()

    def _renew(self) -> None:
        """Keeps the leases of the work this worker is doing, for as long as it does it."""
        while not self._stop.wait(RENEW_SECONDS):
            with self._lock:
                running = list(self._running)
            try:
                self.store.renew_work(running, self.clock() + LEASE)
            except StoreUnavailable as error:
                log.warning("could not renew leases: %s", error)

    def _learn_workspace_url(self) -> None:
        self.renderer.workspace_url = workspace_url(self.outbox.client)

    def wake(self) -> None:
        """Work was queued in this process: look now rather than at the next poll."""
        self._wake.set()

    def stop(self, seconds: float) -> None:
        """Drain within `seconds`: do the work already queued, let what runs finish, send what is
        due. Work still running at the end is answered as cut short; work not started by then stays
        queued for a successor or another replica."""
        deadline = time.monotonic() + seconds
        self._claim_until = deadline - STOP_MARGIN_SECONDS
        self.scheduler.stop()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        self._stop.set()
        with self._lock:
            running = dict(self._running)
        log.info("draining %d piece(s) of work and the outbox", len(running))
        self._pool.shutdown(wait=False, cancel_futures=True)
        while running and time.monotonic() < deadline - STOP_MARGIN_SECONDS:
            time.sleep(0.05)
            with self._lock:
                running = dict(self._running)
        for item_id, invocation in running.items():
            if invocation is not None:
                log.warning("/%s did not finish before shutdown", invocation.command,
                            extra={"cut_short": invocation.request_id})
                self._answer_cut_short(item_id, invocation)
        self.outbox.stop(max(0.0, deadline - time.monotonic()))
        log.info("drained; %d message(s) left in the outbox for the next start", self.store.outbox_pending())

    # -- claiming --------------------------------------------------------------------------

    def _loop(self) -> None:
        while time.monotonic() < self._claim_until:
            try:
                self._prune()
                if not self._slots.acquire(timeout=POLL_SECONDS):
                    continue
                item = self.store.claim_work(self.clock(), LEASE)
                if item is None:
                    self._slots.release()
                    if self._claim_until != math.inf:
                        return    # stopping, and nothing more is queued
                    self._wake.wait(POLL_SECONDS)
                    self._wake.clear()
                    continue
                with self._lock:
                    self._running[item.id] = None
                self._pool.submit(self._do, item)
            except StoreUnavailable as error:
                log.warning("the store is unavailable (%s); retrying in a second", error)
                self._stop.wait(1)
            except Exception:
                log.exception("the work loop failed; retrying in a second")
                self._stop.wait(1)

    def _prune(self) -> None:
        now = self.clock()
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY:
            return
        self._pruned_at = now
        self.store.prune_work(now - DONE_KEPT)

    # -- doing -----------------------------------------------------------------------------

    def _do(self, item: WorkItem) -> None:
        try:
            invocation = Invocation(**item.payload["invocation"]) if "invocation" in item.payload else None
            with self._lock:
                self._running[item.id] = invocation
            token = request_id.set(invocation.request_id if invocation else item.payload.get("request_id"))
            try:
                if item.kind == HOME:
                    self._publish_home(item, item.payload["user"], item.payload["request_id"])
                elif item.kind in self.inbound:
                    self._receive(item, self.inbound[item.kind])
                elif invocation is not None and item.attempts > MAX_ATTEMPTS:
                    log.warning("/%s was taken %d times without being done", invocation.command, item.attempts - 1)
                    self._answer_cut_short(item.id, invocation)
                elif invocation is not None:
                    self._run(item, invocation)
            finally:
                request_id.reset(token)
        except StoreUnavailable as error:   # nothing was written: the work is done again after its lease
            log.warning("the store is unavailable (%s); the work waits for its lease to end", error)
        except Exception:
            log.exception("work %s could not be done", item.key)
        finally:
            with self._lock:
                self._running.pop(item.id, None)
            self._slots.release()

    def _run(self, item: WorkItem, invocation: Invocation) -> None:
        started = time.monotonic()
        quote = invocation.quote
        if invocation.form is not None and quote and quote.get("ts") and not quote.get("link"):
            # The message a form was opened on is linked from what the command posts.
            invocation = replace(invocation, quote={**quote, "link": self._permalink(quote["channel"], quote["ts"])})
        shown: list[int] = []   # the outbox id of the progress message, once there is one

        def progress(partial: Reply) -> None:
            shown[:] = [self._progress.submit(
                self.outbox.progress, partial, invocation, shown[0] if shown else None).result()]

        dispatcher = self.duties if item.kind == DUTY else self.dispatcher
        with self.store.atomic():
            reply = dispatcher.run(invocation, progress)
            try:
                if item.kind == DUTY and reply.audience is Audience.CALLER:
                    # A duty has nobody to answer privately: what it says there (nothing is due after
                    # all, an error) is only logged.
                    log.info("/%s %s: nothing posted (%s)", invocation.command, invocation.text, reply.template)
                else:
                    self.outbox.post(reply, invocation, replacing=shown[0] if shown else None)
            except StoreUnavailable:
                raise
            except Exception:  # the answer could not be rendered: say so where the answer was due
                log.exception("/%s: the answer could not be posted", invocation.command)
                reply = Reply("internal_error", {"command": invocation.command, "request_id": invocation.request_id},
                              outcome=Outcome.FAILED)
                self.outbox.post(reply, invocation, replacing=shown[0] if shown else None)
            self._queue_duties(reply)
            self.store.work_done(item.id, self.clock())
        if item.payload.get("then_home"):
            self._publish_home(item, invocation.user, invocation.request_id)
        log.info("/%s answered", invocation.command, extra={
            "user": invocation.user, "outcome": reply.outcome.value, "ms": round((time.monotonic() - started) * 1000)})

    def _permalink(self, channel: str, ts: str) -> str | None:
        try:
            link: str = self.outbox.client.chat_getPermalink(channel=channel, message_ts=ts)["permalink"]
            return link
        except Exception as error:
            log.warning("chat.getPermalink failed (%s): the message is quoted without its link", error)
            return None

    def _receive(self, item: WorkItem, hook: Inbound) -> None:
        """What a feature's endpoint took, done by the feature as the bot; its replies posted, and the
        work done, in one atomic unit."""
        channel = hook.channel(self.config)
        path = f"/{hook.prefix}/{item.payload['endpoint']}"
        invocation = Invocation(hook.prefix, "", BOT_USER, channel, item.payload["request_id"])
        if item.attempts > MAX_ATTEMPTS:    # said where people look, rather than dropped in silence
            log.error("a request to %s was taken %d times without being done", path, item.attempts - 1)
            with self.store.atomic():
                self.outbox.post(Reply("inbound_failed", {"path": path, "attempts": item.attempts - 1,
                                                          "request_id": item.payload["request_id"]}, Audience.CHANNEL),
                                 invocation)
                self.store.work_done(item.id, self.clock())
            return
        ctx = Context(user=BOT_USER, channel=channel, store=self.store, config=self.config,
                      request_id=item.payload["request_id"], clock=self.clock)
        with self.store.atomic():
            replies = hook.handle(ctx, item.payload["payload"])
            for reply in replies:
                self.outbox.post(reply, invocation)
                self._queue_duties(reply)
            self.store.work_done(item.id, self.clock())
        log.info("a request to %s done", path, extra={"messages": len(replies)})

    def _queue_duties(self, reply: Reply) -> None:
        for duty in reply.duties:
            queue_duty(self.store, duty, self.clock())
        if reply.duties:
            self.wake()

    def _publish_home(self, item: WorkItem, user: str, rid: str) -> None:
        """`user`'s App Home: open incidents with their buttons, this week's numbers, the last report.

        Its parts are commands run as the viewer, so [access] applies to them as to the commands.
        """
        parts = {name: self.dispatcher.run(Invocation(name, text, user, None, rid))
                 for name, text in (("incident", "list"), ("mttr", "this-week"))}
        data = {name: reply.data if reply.outcome is Outcome.OK else None for name, reply in parts.items()}
        with self.store.atomic():
            self.outbox.publish_home(user, {**data, "last_report": self.store.last_report()}, rid)
            if item.kind == HOME:
                self.store.work_done(item.id, self.clock())

    def _answer_cut_short(self, item_id: int, invocation: Invocation) -> None:
        """Whoever asked hears that it was cut short, rather than waiting for an answer."""
        try:
            with self.store.atomic():
                self.outbox.post(Reply("restarting", {"command": invocation.command}), invocation)
                self.store.work_done(item_id, self.clock())
        except StoreUnavailable as error:
            log.warning("could not say /%s was cut short: %s", invocation.command, error)


def work_payload(invocation: Invocation, **more: Any) -> dict[str, Any]:
    """What a queued command is: its invocation (and, for a button of the App Home, `then_home`)."""
    return {"invocation": vars(invocation).copy(), **more}    # its fields are plain JSON values


def _group_members(client: WebClient, group: str) -> set[str]:
    return set(client.usergroups_users_list(usergroup=group)["users"])


def workspace_url(client: WebClient) -> str | None:
    """The workspace's URL (auth.test), for links to threads; None, logged, when Slack does not say."""
    try:
        url: str | None = client.auth_test()["url"]
        return url
    except Exception as error:
        log.warning("auth.test failed (%s): links to threads are left out", error)
        return None


class WorkerProcesses:
    """The worker processes `serve` and `socket` run beside the process that answers Slack: each is
    `oncall-bot work`, given a pipe as its stdin so that it stops when this process is gone (even
    killed with -9), and started again if it exits while this process runs. `start` returns once
    each has said it is working (a line on its stdout), so a bot that answers health checks has
    workers."""

    def __init__(self, count: int, clock: Callable[[], datetime]):
        self.count = count
        self.clock = clock
        self._processes: list[subprocess.Popen[bytes]] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            self._processes = [self._spawn() for _ in range(self.count)]
            for process in self._processes:
                self._wait_ready(process)
        threading.Thread(target=self._watch, name="worker-processes", daemon=True).start()

    def _spawn(self) -> subprocess.Popen[bytes]:
        # A replayed clock (ONCALL_NOW) goes on from where this process's clock is now.
        env = {**os.environ, "ONCALL_NOW": to_iso(self.clock()) or ""} if "ONCALL_NOW" in os.environ else None
        return subprocess.Popen([sys.executable, "-m", "bot", "work"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, env=env)

    @staticmethod
    def _wait_ready(process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], READY_SECONDS)
        if not ready or not process.stdout.readline():
            log.error("worker process %d did not start within %d s", process.pid, READY_SECONDS)

    def _watch(self) -> None:
        while not self._stopping.wait(1):
            with self._lock:
                for index, process in enumerate(self._processes):
                    if process.poll() is not None and not self._stopping.is_set():
                        log.warning("worker process %d exited with %s; starting another", process.pid,
                                    process.returncode)
                        self._processes[index] = self._spawn()
                        self._wait_ready(self._processes[index])

    def stop(self, seconds: float) -> None:
        """Ask every worker to drain (SIGTERM), and kill those still running after `seconds`."""
        self._stopping.set()
        deadline = time.monotonic() + seconds
        with self._lock:
            processes = list(self._processes)
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def say_ready() -> None:
    """Tells the process that started this worker (if one did) that it is working."""
    if stat.S_ISFIFO(os.fstat(1).st_mode):
        os.write(1, b"ready\n")


def stop_with_parent(stop: Callable[[], None]) -> None:
    """When stdin is a pipe (a worker process started by `serve` or `socket`), calls `stop` once it
    closes: the parent is gone, however it went."""
    if not stat.S_ISFIFO(os.fstat(0).st_mode):
        return

    def watch() -> None:
        try:
            while os.read(0, 1024):
                pass
        except OSError:
            pass
        stop()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
