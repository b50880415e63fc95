"""oncall-bot serve | socket | console | run | manifest | summary | export | postmortem | db migrate | db copy

A missing token, a bad config or an unusable database is one line on stderr naming what is wrong
and where, with exit code 2: never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from bot import config as config_module
from bot.config import Config, ConfigError
from bot.jsonlog import configure as configure_logging
from bot.times import TimeParseError, clock_starting_at, iso_week, parse_since, to_iso, utc_now
from commands import inbound, jobs, registry, sections

if TYPE_CHECKING:
    from bot.app import SlackEnv
    from bot.store import Store

# Each mode imports what it needs when it runs (Slack's SDK, gunicorn, the renderer): `oncall-bot
# run` and `export` are a fresh process per call, and start-up is most of what they cost.

DEFAULT_PORT = 3000
SOCKET_DRAIN_SECONDS = 8
WORKER_DRAIN_SECONDS = 7
DEFAULT_WORKERS = 2                  # fewer where the CPUs do not leave one to the process that acks
WORKER_NICENESS = 10
WORKER_SWITCH_SECONDS = 0.0005
MAX_WORKERS = 64
WORKERS_HELP = (f"worker processes to start (default {DEFAULT_WORKERS}, or 1 where the process may use 2 CPUs "
                "or fewer; 0: run none here)")
SUMMARY_SEND_SECONDS = 60


class StartupError(Exception):
    """Something the operator must fix before the bot can start."""


@dataclass(frozen=True)
class Paths:
    config: Path
    config_required: bool
    db: str               # a path (or sqlite:///path), or a postgresql:// URL


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        args.clock = _clock()
        return args.handler(args)
    except StartupError as error:
        print(f"oncall-bot: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `oncall-bot export | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="oncall-bot", description="The Slack bot for the engineer on call.")
    sub = parser.add_subparsers(dest="mode", required=True, metavar="MODE")
    workers = default_workers()

    serve = sub.add_parser("serve", help="HTTP mode: POST /slack/events, POST /alerts/NAME, GET /healthz; with its "
                                         "worker processes")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=None, help=f"default: $PORT, else {DEFAULT_PORT}")
    serve.add_argument("--workers", type=_worker_count, default=workers, help=WORKERS_HELP)
    serve.set_defaults(handler=_serve)

    socket_mode = sub.add_parser("socket", help="Socket Mode (needs SLACK_APP_TOKEN); with its worker processes")
    socket_mode.add_argument("--workers", type=_worker_count, default=workers, help=WORKERS_HELP)
    socket_mode.set_defaults(handler=_socket)
    sub.add_parser("work", help="a worker process: runs queued commands, sends the outbox, runs the "
                                "bot's own jobs").set_defaults(handler=_work)
    sub.add_parser("console", help="the commands in a terminal, no Slack needed").set_defaults(handler=_console)

    run = sub.add_parser("run", help='one command, printed: oncall-bot run "/mttr last-week"')
    run.add_argument("--json", action="store_true", help="print the reply's data as JSON")
    run.add_argument("text", nargs=argparse.REMAINDER, help="the command, as typed in Slack")
    run.set_defaults(handler=_run)

    manifest_parser = sub.add_parser("manifest", help="print the Slack app manifest (JSON)")
    target = manifest_parser.add_mutually_exclusive_group()
    target.add_argument("--http-url", help="public URL of /slack/events, for HTTP mode")
    target.add_argument("--socket", action="store_true", help="Socket Mode (the default)")
    manifest_parser.set_defaults(handler=_manifest)

    summary = sub.add_parser("summary", help="show the weekly report, or post it (once per week)")
    summary.add_argument("--week", help="ISO week like 2026-W47 (default: last week)")
    shown_or_posted = summary.add_mutually_exclusive_group()
    shown_or_posted.add_argument("--post", action="store_true", help="post it to [slack] summary_channel")
    shown_or_posted.add_argument("--png", metavar="FILE", help="save its chart (PNG) to FILE")
    summary.set_defaults(handler=_summary)

    export = sub.add_parser("export", help="every incident with its timestamps and durations")
    export.add_argument("--since", help="only incidents opened since DATE (2026-11-01, ISO 8601 with a time, or 7d)")
    export.add_argument("--format", choices=("csv", "json"), default="csv")
    export.set_defaults(handler=_export)

    postmortem = sub.add_parser("postmortem", help="print the postmortem draft of incident N (Markdown)")
    postmortem.add_argument("number", metavar="N", help="the incident's number")
    postmortem.set_defaults(handler=_postmortem)

    db = sub.add_parser("db", help="the database: apply its schema, copy a history into another")
    actions = db.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("migrate", help="apply the schema to ONCALL_DB").set_defaults(handler=_db_migrate)
    copy = actions.add_parser("copy", help="copy a history (incidents, timeline, follow-ups, reminders, reports, "
                                           "outbox, work queue) into another database, adding only what it lacks")
    copy.add_argument("--from", dest="source", required=True, metavar="PATH_OR_URL",
                      help="an SQLite file (or sqlite:///path), or a postgresql:// URL")
    copy.add_argument("--to", dest="target", required=True, metavar="URL",
                      help="a postgresql:// URL, or an SQLite file (or sqlite:///path)")
    copy.set_defaults(handler=_db_copy)
    return parser


# -- modes ---------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    from bot.app import SlackBot
    from bot.server import Server
    from bot.worker import WorkerProcesses

    configure_logging()
    paths = _paths()
    config = _config(paths)
    try:
        endpoints = [name for hook in inbound() for name in hook.endpoints(config)]
    except ConfigError as error:
        raise StartupError(str(error)) from None
    # Without a signing secret, a Socket Mode deployment's `serve` answers only the features' endpoints.
    slack_too = bool(os.environ.get("SLACK_SIGNING_SECRET", "").strip()) or not endpoints
    env = _slack_env(mode="serve" if slack_too else "work")
    _store(paths).close()
    port = args.port if args.port is not None else _port_from_env()
    workers = WorkerProcesses(args.workers, args.clock)
    Server(lambda: SlackBot(env, config, _store(paths), registry(), args.clock, inbound=inbound()), args.host, port,
           workers).run()
    return 0


def _socket(args: argparse.Namespace) -> int:
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    from bot.app import SlackBot
    from bot.worker import WorkerProcesses

    configure_logging()
    paths = _paths()
    config = _config(paths)
    env = _slack_env(mode="socket")
    workers = WorkerProcesses(args.workers, args.clock)
    handler = SocketModeHandler(SlackBot(env, config, _store(paths), registry(), args.clock).app, env.app_token)

    def stop(signum: int, frame: object) -> None:
        handler.close()
        workers.stop(SOCKET_DRAIN_SECONDS)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    workers.start()
    handler.start()
    return 0


def _work(args: argparse.Namespace) -> int:
    from bot.app import web_client
    from bot.render import Renderer
    from bot.worker import Worker, say_ready, stop_with_parent

    configure_logging()
    paths = _paths()
    config = _config(paths)
    env = _slack_env(mode="work")
    worker = Worker(_store(paths), config, registry(), web_client(env), Renderer(config.timezone, args.clock),
                    args.clock, jobs=jobs(), inbound=inbound())
    # The process that acks Slack comes first when they share the CPU; and a thread that holds the
    # database's write lock gets the interpreter back within half a millisecond, not five.
    os.nice(WORKER_NICENESS)
    sys.setswitchinterval(WORKER_SWITCH_SECONDS)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())
    stop_with_parent(stopping.set)
    worker.start()
    say_ready()
    while not stopping.wait(1):
        pass
    worker.stop(WORKER_DRAIN_SECONDS)
    return 0


def default_workers() -> int:
    """DEFAULT_WORKERS, but at most one fewer than the CPUs this process may run on (and at least one).
    Each worker process can keep a CPU busy, and the acks wait for whatever shares theirs: on 2 CPUs,
    under bench/ack_latency.py's load, the acks' p99 was 1.30-1.39x a bare Bolt app's with one worker
    process and 1.41-1.54x with two. One process's threads suffice for commands that mostly wait."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(DEFAULT_WORKERS, cpus - 1))


def _worker_count(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) > MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of worker processes from 0 to {MAX_WORKERS}")
    return int(text)


def _console(args: argparse.Namespace) -> int:
    from bot.console import Terminal

    configure_logging(logging.WARNING)
    paths = _paths()
    local = Terminal(_store(paths), _config(paths), registry(), args.clock)
    return local.console(sys.stdin, sys.stdout)


def _run(args: argparse.Namespace) -> int:
    from bot.console import Terminal

    configure_logging(logging.WARNING)
    words = [word for word in args.text if word != "--json"]
    as_json = args.json or len(words) != len(args.text)
    line = " ".join(words).strip()
    if not line:
        raise StartupError('run needs a command, like: oncall-bot run "/incident list"')
    paths = _paths()
    local = Terminal(_store(paths), _config(paths), registry(), args.clock)
    return local.run(line, as_json=as_json, out=sys.stdout, err=sys.stderr)


def _manifest(args: argparse.Namespace) -> int:
    from bot.manifest import manifest

    if args.http_url is not None and not re.match(r"^https?://[^\s/]+", args.http_url):
        raise StartupError(f"--http-url: {args.http_url!r} is not an http(s) URL, like "
                           "https://oncall.example.com/slack/events")
    print(json.dumps(manifest(registry(), args.http_url), indent=2))
    return 0


def _summary(args: argparse.Namespace) -> int:
    from bot.app import web_client
    from bot.console import Terminal
    from bot.dispatch import Dispatcher
    from bot.outbox import Outbox
    from bot.render import Renderer
    from bot.schedule import WeeklyReport, WeekNotOver, check_over
    from bot.worker import workspace_url

    configure_logging(logging.WARNING)
    paths = _paths()
    config = _config(paths)
    store = _store(paths)
    week = args.week.upper() if args.week else None
    if week and not re.match(r"^\d{4}-W\d{2}$", week):
        raise StartupError(f"--week: {args.week!r} is not an ISO week like 2026-W47")
    if not args.post:
        return Terminal(store, config, registry(), args.clock).run(
            f"/mttr report {week or 'last-week'}", as_json=False, out=sys.stdout, err=sys.stderr,
            save_file=Path(args.png) if args.png else None)
    channel = config.slack.summary_channel
    if not channel:
        raise StartupError(f"{config.source}: slack.summary_channel: not set; the report has nowhere to go")
    week = week or iso_week(args.clock() - timedelta(days=7), config.timezone)
    try:
        check_over(week, args.clock(), config.timezone)
    except (ValueError, OverflowError):
        raise StartupError(f"--week: {week} is not a week") from None
    except WeekNotOver as error:
        print(f"{error}: its report is posted once, when it is over, so nothing was posted "
              "(without --post it is shown).", file=sys.stderr)
        return 1
    env = _slack_env(mode="post")
    renderer = Renderer(config.timezone, args.clock)
    client = web_client(env)
    renderer.workspace_url = workspace_url(client)   # the slowest incidents link to their threads
    outbox = Outbox(store, client, renderer, args.clock)
    report = WeeklyReport(store, config, Dispatcher(store, config, registry(), args.clock), outbox, args.clock)
    posted = report.post(week)
    if posted is None:
        claimed = store.report_claimed(week)
        where = f" to {claimed.channel} ({to_iso(claimed.claimed_at)})" if claimed else ""
        print(f"The report of {week} was already posted{where}; nothing was posted.", file=sys.stderr)
        return 0
    outbox.flush(SUMMARY_SEND_SECONDS)
    pending = store.outbox_pending()
    if pending:
        print(f"The report of {week} is written, but {pending} message(s) could not be sent yet; "
              "a running bot sends them.", file=sys.stderr)
        return 1
    print(f"Posted the report of {week} to {channel}.")
    return 0


def _export(args: argparse.Namespace) -> int:
    from bot import export

    configure_logging(logging.WARNING)
    paths = _paths()
    config = _config(paths)
    since = None
    if args.since:
        try:
            day = date.fromisoformat(args.since.strip())
        except ValueError:
            try:
                since = parse_since(args.since, args.clock(), config.timezone)
            except TimeParseError:
                raise StartupError(f"--since: {args.since!r} is not a date; write it like 2026-11-01, "
                                   "2026-11-01T14:00, or a duration back from now like 7d") from None
        else:
            since = datetime.combine(day, time(), config.timezone)
    export.write(_store(paths), since, args.format, sys.stdout)
    return 0


def _postmortem(args: argparse.Namespace) -> int:
    from bot.args import number
    from bot.console import Terminal

    configure_logging(logging.WARNING)
    incident = number(args.number.lstrip("#"))
    if incident is None:
        raise StartupError(f"postmortem: {args.number!r} is not an incident number, like 12")
    paths = _paths()
    local = Terminal(_store(paths), _config(paths), registry(), args.clock)
    return local.print_file(f"/incident postmortem #{incident}", out=sys.stdout, err=sys.stderr)


def _db_migrate(args: argparse.Namespace) -> int:
    from bot.store import StoreUnavailable

    configure_logging(logging.WARNING)
    store = _open("ONCALL_DB", _paths().db, migrate=False)
    try:
        applied = store.migrate()
    except StoreUnavailable as error:
        raise StartupError(f"ONCALL_DB: {error}") from None
    finally:
        store.close()
    if applied:
        print(f"Applied {len(applied)} migration(s) to {store.location}: {', '.join(applied)}.")
    else:
        print(f"The schema of {store.location} is current; nothing to apply.")
    return 0


# What a refused copy names, per table whose rows can differ under one key.
_OTHER_ROWS = {"incidents": "other incidents under the same numbers",
               "events": "other timeline entries under the same ids",
               "outbox": "other outbox messages under the same ids",
               "work": "other queued work under the same ids"}


def _db_copy(args: argparse.Namespace) -> int:
    from bot.store import StoreUnavailable
    from bot.store.copy import HistoriesDiffer, copy_history

    configure_logging(logging.WARNING)
    source = _open("--from", args.source)
    target = _open("--to", args.target)
    try:
        copied = copy_history(source, target)
    except HistoriesDiffer as error:
        keys = ", ".join(f"#{key}" if error.table.name == "incidents" else str(key) for key in error.keys)
        more = f" ({error.count} in all)" if error.count > len(error.keys) else ""
        print(f"oncall-bot: {target.location} holds {_OTHER_ROWS.get(error.table.name, error.table.name)} as "
              f"{source.location}: {keys}{more}. It has a history of its own; nothing was copied.", file=sys.stderr)
        return 1
    except StoreUnavailable as error:
        raise StartupError(str(error)) from None
    finally:
        source.close()
        target.close()
    print(f"Copied {source.location} into {target.location}:")
    for table in copied:
        print(f"  {table.table:<12} {table.copied:>9,} copied {table.present:>9,} already there")
    return 0


# -- environment ----------------------------------------------------------------------------------


def _paths() -> Paths:
    configured = os.environ.get("ONCALL_CONFIG")
    return Paths(config=Path(configured or "oncall.toml"), config_required=bool(configured),
                 db=os.environ.get("ONCALL_DB") or "oncall.db")


def _config(paths: Paths) -> Config:
    try:
        return config_module.load(paths.config, registry(), sections(), required=paths.config_required)
    except ConfigError as error:
        raise StartupError(str(error)) from None


def _store(paths: Paths) -> Store:
    return _open("ONCALL_DB", paths.db)


def _open(named_by: str, location: str, *, migrate: bool = True) -> Store:
    """The store at `location`; a StartupError naming where it came from (`named_by`) when it cannot be used."""
    from bot.store import StoreUnavailable, open_store

    try:
        return open_store(location, migrate=migrate)
    except StoreUnavailable as error:
        raise StartupError(f"{named_by}: {error}") from None


def _clock() -> Callable[[], datetime]:
    """The real clock, or one that starts at ONCALL_NOW (ISO 8601 with a zone) and runs on."""
    start = os.environ.get("ONCALL_NOW")
    if not start:
        return utc_now
    try:
        moment = datetime.fromisoformat(start.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise StartupError(f"ONCALL_NOW: {start!r} is not an ISO 8601 time with a zone, like 2026-11-24T14:05:00Z")
    return clock_starting_at(moment)


def _slack_env(*, mode: str) -> SlackEnv:
    """The Slack settings `mode` (serve, socket, work or post) needs, each checked."""
    from bot.app import DEFAULT_API_URL, SlackEnv

    required = {"SLACK_BOT_TOKEN": "the bot token (xoxb-…) from your Slack app's OAuth & Permissions page"}
    if mode == "serve":
        required["SLACK_SIGNING_SECRET"] = "from your Slack app's Basic Information page"
    if mode == "socket":
        required["SLACK_APP_TOKEN"] = "an app-level token (xapp-…) with connections:write, for Socket Mode"
    for name, what in required.items():
        if not os.environ.get(name, "").strip():
            raise StartupError(f"{name} is not set: {what}")
    api_url = os.environ.get("SLACK_API_URL") or DEFAULT_API_URL
    if not api_url.startswith(("http://", "https://")):
        raise StartupError(f"SLACK_API_URL: {api_url!r} is not an http(s) URL")
    return SlackEnv(
        bot_token=os.environ["SLACK_BOT_TOKEN"].strip(),
        signing_secret=os.environ.get("SLACK_SIGNING_SECRET", "").strip(),
        api_url=api_url,
        app_token=os.environ.get("SLACK_APP_TOKEN", "").strip() or None,
    )


def _port_from_env() -> int:
    value = os.environ.get("PORT")
    if not value:
        return DEFAULT_PORT
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise StartupError(f"PORT: {value!r} is not a port number")
    return int(value)
