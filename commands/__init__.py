"""The features, one room each. Every module (or package) here that defines `COMMAND` is a command,
and one that defines `SETTINGS` (its config sections, bot.config.Section) owns those settings:
adding a feature is adding its module and its templates, nothing else."""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from types import ModuleType

from bot.command import Command, Inbound, Job
from bot.config import Section


@cache
def _features() -> tuple[ModuleType, ...]:
    return tuple(importlib.import_module(f"{__name__}.{info.name}") for info in pkgutil.iter_modules(__path__)
                 if not info.name.startswith("_"))


@cache
def registry() -> dict[str, Command]:
    """Command name -> Command, in name order."""
    found = {}
    for module in _features():
        command = getattr(module, "COMMAND", None)
        if isinstance(command, Command):
            found[command.name] = command
    return dict(sorted(found.items()))


@cache
def sections() -> tuple[type[Section], ...]:
    """Every feature's config sections, read by bot.config.load."""
    return tuple(section for module in _features() for section in getattr(module, "SETTINGS", ()))


@cache
def jobs() -> tuple[Job, ...]:
    """Every feature's jobs, run by the bot's scheduler (bot/schedule.py)."""
    return tuple(job for module in _features() for job in getattr(module, "JOBS", ()))


@cache
def inbound() -> tuple[Inbound, ...]:
    """Every feature's HTTP endpoints on `serve` (bot/app.py), and the work they queue (bot/worker.py)."""
    return tuple(module.INBOUND for module in _features() if isinstance(getattr(module, "INBOUND", None), Inbound))
