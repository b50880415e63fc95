"""Shared fixtures: a store in a temp dir, a config from TOML text, a controllable clock, a local
runner, the Slack Web API double and the bot's WSGI app served on loopback."""

from __future__ import annotations

import sqlite3
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
import psycopg
import pytest

from bot import config as config_module
from bot.app import SlackBot, SlackEnv, web_client
from bot.config import Config
from bot.console import Terminal
from bot.render import Renderer
from bot.store import Store
from bot.store.postgres import PostgresStore
from bot.store.sqlite import SqliteStore
from bot.times import utc_now
from bot.worker import Worker
from commands import inbound, registry, sections
from slack_double import SlackDouble, button_click, sign, slash_command

pytest_plugins = ["probe_servers", "postgres_servers"]   # their servers are fixtures for every test


class Clock:
    """A controllable clock: starts at `start`, moves only when told."""

    def __init__(self, start: datetime):
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 11, 24, 14, 0, tzinfo=UTC))


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path: Path) -> Iterator[Store]:
    """The store, once on each backend: an SQLite file, and a PostgreSQL database of this test's own."""
    if request.param == "sqlite":
        yield SqliteStore(tmp_path / "oncall.db")
        return
    store = PostgresStore(request.getfixturevalue("postgres_url"), local_dir=tmp_path)
    yield store
    store.close()


def table_rows(store: Store, table: str) -> list[tuple]:
    """Every row of `table`, read past the store's operations (to check what it keeps)."""
    if table == "work":
        store.work_pending()        # which moves what SQLite's inbox holds into the work queue
    if isinstance(store, SqliteStore):
        with sqlite3.connect(store.path) as db:
            return db.execute(f"SELECT * FROM {table}").fetchall()
    with psycopg.connect(store.url) as db:
        return db.execute(f"SELECT * FROM {table}").fetchall()


@contextmanager
def unwritable(store: Store) -> Iterator[str]:
    """The store's database refusing writes for a while (SQLite: locked by another connection;
    PostgreSQL: read-only for new sessions, as after a failover); yields what the refusal says."""
    if isinstance(store, SqliteStore):
        blocker = sqlite3.connect(store.path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            yield "locked"
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        return
    name = store.url.rpartition("/")[2]
    with psycopg.connect(store.url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        try:
            yield "read-only"
        finally:
            admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')


@pytest.fixture
def make_config(tmp_path: Path):
    """make_config('timezone = "Europe/Berlin"') -> a validated Config read from a real file."""

    def make(text: str = "") -> Config:
        path = tmp_path / "oncall.toml"
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return config_module.load(path, registry(), sections(), required=True)

    return make


@pytest.fixture
def local(store: Store, clock: Clock):
    """local(config=None) -> a Terminal runner (console/run frontend) on the test store and clock."""

    def make(config: Config | None = None) -> Terminal:
        return Terminal(store, config or Config(), registry(), clock)

    return make


# -- Slack: the Web API double, and the bot's WSGI app served on loopback -------------------------

SIGNING_SECRET = "test-signing-secret"


class BotClient:
    """Sends Slack's requests to a running bot, signed as Slack signs them."""

    def __init__(self, url: str, double, secret: str = SIGNING_SECRET):
        self.url = url.rstrip("/")
        self.double = double
        self.secret = secret

    def post(self, body: bytes, headers: dict[str, str] | None = None, *, secret: str | None = None,
             timestamp: int | None = None) -> httpx.Response:
        signed = sign(secret or self.secret, body, timestamp)
        return httpx.post(f"{self.url}/slack/events", content=body, timeout=10,
                          headers={"Content-Type": "application/x-www-form-urlencoded", **signed, **(headers or {})})

    def command(self, command: str, text: str, **kwargs) -> httpx.Response:
        kwargs.setdefault("response_url", self.double.response_url())
        return self.post(slash_command(command, text, **kwargs))

    def click(self, value: str, **kwargs) -> httpx.Response:
        return self.post(button_click(value, **kwargs))


@pytest.fixture
def slack_double():
    double = SlackDouble()
    yield double
    double.close()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = 128


@dataclass
class InProcessBot:
    """The frame that answers Slack and a worker, on threads of the test's process (`serve` runs the
    worker in processes of its own; the code is the same)."""

    slack: SlackBot
    worker: Worker

    @property
    def app(self):
        return self.slack.app


@pytest.fixture
def slack_bot(slack_double, store, clock):
    """slack_bot(config=None, commands=None) -> (InProcessBot, BotClient): the real frame and a
    worker, served in-process, with `commands` added to the registry."""
    started = []

    def make(config: Config | None = None, *, use_clock: bool = False, commands: dict | None = None):
        config = config or Config()
        now = clock if use_clock else utc_now
        env = SlackEnv("xoxb-test-token", SIGNING_SECRET, slack_double.api_url)
        every = {**registry(), **(commands or {})}
        worker = Worker(store, config, every, web_client(env), Renderer(config.timezone, now), now, inbound=inbound())
        bot = InProcessBot(SlackBot(env, config, store, every, now, queued=worker.wake, inbound=inbound()), worker)
        worker.start()
        server = make_server("127.0.0.1", 0, bot.slack, server_class=_ThreadingWSGIServer,
                             handler_class=_QuietHandler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        started.append((bot, server))
        return bot, BotClient(f"http://127.0.0.1:{server.server_address[1]}", slack_double)

    yield make
    for bot, server in started:
        server.shutdown()
        server.server_close()
        bot.worker.stop(2)
        bot.worker._pool.shutdown(wait=True)   # nothing of this test may still use its store once it closes
