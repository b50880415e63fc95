"""/logs: the last errors of a service with their stack traces, folded, with their likely cause.

The command's work is in `query.py` (see its docstring), imported when /logs first parses or runs:
the registry imports every feature to find its command, and a command that reads no log (`oncall-bot
run "/incident list"` is a fresh process) should not pay for reading them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bot.command import Command, Context, Reply
from bot.config import Config
from commands.logs.settings import LogSettings

if TYPE_CHECKING:
    from commands.logs.query import LogsArgs

SETTINGS = (LogSettings,)


def parse(text: str) -> LogsArgs:
    from commands.logs.query import parse
    return parse(text)


def run(ctx: Context, args: LogsArgs) -> Reply:
    from commands.logs.query import run
    return run(ctx, args)


def help_data(config: Config) -> dict[str, Any]:
    from commands.logs.query import help_data
    return help_data(config)


COMMAND = Command(
    name="logs",
    description="The last errors of a service, with stack traces and their likely cause",
    usage="<service> [--since 15m|14:00] [--grep TEXT|/regex/] [--level warn] [--last N] "
          "[--request-id ID] [--status 5xx]   (#N: an incident)",
    parse=parse,
    run=run,
    help_data=help_data,
)
