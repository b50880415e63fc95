"""/deploys: what was deployed, newest first, and which deploys are suspects of an incident.

The command's work is in `query.py` (see its docstring), imported when /deploys first parses or
runs: the registry imports every feature to find its command, and a command that reads no
repository (`oncall-bot run "/incident list"` is a fresh process) should not pay for git.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bot.command import Command, Context, Reply
from bot.config import Config
from commands.deploys.settings import DeploySettings

if TYPE_CHECKING:
    from commands.deploys.query import DeploysArgs

SETTINGS = (DeploySettings,)


def parse(text: str) -> DeploysArgs:
    from commands.deploys.query import parse
    return parse(text)


def run(ctx: Context, args: DeploysArgs) -> Reply:
    from commands.deploys.query import run
    return run(ctx, args)


def help_data(config: Config) -> dict[str, Any]:
    from commands.deploys.query import help_data
    return help_data(config)


COMMAND = Command(
    name="deploys",
    description="Recent deploys from git; suspects just before an incident started",
    usage="[service] [sha-or-tag] [--since 6h | --since 14:00 | --last N] [--branch B]",
    parse=parse,
    run=run,
    help_data=help_data,
)
