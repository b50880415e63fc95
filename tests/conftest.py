"""Shared fixtures: a store in a temp dir, a config from TOML text, a controllable clock, a local
runner, the Slack Web API double and the bot's WSGI app served on loopback."""

from __future__ import annotations

import textwrap
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
import pytest

from bot import config as config_module
from bot.app import SlackBot, SlackEnv
from bot.config import Config
from bot.console import Local
from bot.store import Store
from bot.store.sqlite import SqliteStore
from bot.times import utc_now
from commands import registry, sections
from slack_double import SlackDouble, button_click, sign, slash_command

pytest_plugins = ["probe_servers"]   # its `web` and `hanging` servers are fixtures for every test


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


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return SqliteStore(tmp_path / "oncall.db")


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
    """local(config=None) -> a Local runner (console/run frontend) on the test store and clock."""

    def make(config: Config | None = None) -> Local:
        return Local(store, config or Config(), registry(), clock)

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


@pytest.fixture
def slack_bot(slack_double, store, clock):
    """slack_bot(config=None, commands=None) -> (SlackBot, BotClient): the real frame, served
    in-process, with `commands` added to the registry."""
    started = []

    def make(config: Config | None = None, *, use_clock: bool = False, commands: dict | None = None):
        bot = SlackBot(SlackEnv("xoxb-test-token", SIGNING_SECRET, slack_double.api_url), config or Config(),
                       store, {**registry(), **(commands or {})}, clock if use_clock else utc_now)
        bot.start()
        server = make_server("127.0.0.1", 0, bot, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        started.append((bot, server))
        return bot, BotClient(f"http://127.0.0.1:{server.server_address[1]}", slack_double)

    yield make
    for bot, server in started:
        server.shutdown()
        server.server_close()
        bot.drain(2)
