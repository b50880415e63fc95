"""/triage: the whole 500 checklist at once, and the likely causes ranked.

The command's work is in `query.py` (see its docstring), imported when /triage first parses or
runs: the registry imports every feature to find its command, and a command that triages nothing
(`oncall-bot run "/incident list"` is a fresh process) should not pay for every part's code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.command import Command, Context, Duty, Reply
from bot.config import Config
from bot.store import Incident
from commands.triage.settings import TriageSettings

if TYPE_CHECKING:
    from commands.triage.query import TriageArgs

SETTINGS = (TriageSettings,)


def parse(text: str) -> TriageArgs:
    from commands.triage.query import parse
    return parse(text)


def run(ctx: Context, args: TriageArgs) -> Reply:
    from commands.triage.query import run
    return run(ctx, args)


def duties_at_open(config: Config, incident: Incident) -> tuple[Duty, ...]:
    """/triage of an incident just opened (or reopened: paged again), run by the bot in its thread at
    once (the incident's service must be configured: triage reads its repo, probes and logs)."""
    if incident.service not in config.services:
        return ()
    return (Duty(key=f"triage-at-open:{incident.id}:{incident.reopened}", command=f"/triage #{incident.id}",
                 channel=incident.announce_channel),)


COMMAND = Command(
    name="triage",
    description="The whole 500 checklist at once: deploys, probes, logs, host; likely causes ranked",
    usage="[service]   (#N: an incident)",
    parse=parse,
    run=run,
    help_data=lambda config: {"deadline": TriageSettings.of(config).deadline},
)
