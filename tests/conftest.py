"""Shared fixtures: a store in a temp dir, a config from TOML text, a frozen clock, a local runner."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot import config as config_module
from bot.config import Config
from bot.console import Local
from bot.store import Store
from commands import registry


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
    return Store(tmp_path / "oncall.db")


@pytest.fixture
def make_config(tmp_path: Path):
    """make_config('timezone = "Europe/Berlin"') -> a validated Config read from a real file."""

    def make(text: str = "") -> Config:
        path = tmp_path / "oncall.toml"
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return config_module.load(path, registry(), required=True)

    return make


@pytest.fixture
def local(store: Store, clock: Clock):
    """local(config=None) -> a Local runner (console/run frontend) on the test store and clock."""

    def make(config: Config | None = None) -> Local:
        return Local(store, config or Config(), registry(), clock)

    return make
