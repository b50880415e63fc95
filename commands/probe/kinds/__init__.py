"""One module per probe kind, each with `probe(check) -> Finding` that raises a ProbeError when down.

A kind's module (and its driver: psycopg, PyMySQL, redis, httpx, psutil) is imported the first time
a probe of that kind runs, so a command that probes nothing never pays for the drivers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from commands.probe.check import Check, Finding


def kind(name: str) -> Callable[[Check], Finding]:
    """The probe function of kind `name` (one of commands.probe.settings.PROBE_KINDS)."""
    probe: Callable[[Check], Finding] = importlib.import_module(f"{__name__}.{name}").probe
    return probe
