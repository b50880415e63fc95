"""The features, one room each. Every module (or package) here that defines `COMMAND` is a command:
adding one is adding its module and its templates, nothing else."""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from bot.command import Command


@cache
def registry() -> dict[str, Command]:
    """Command name -> Command, in name order."""
    found = {}
    for module_info in pkgutil.iter_modules(__path__):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        command = getattr(module, "COMMAND", None)
        if isinstance(command, Command):
            found[command.name] = command
    return dict(sorted(found.items()))
