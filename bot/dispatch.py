"""Runs one command invocation, whatever it came from (Slack, the console, `oncall-bot run`).

Access, help, parsing and every failure are handled here once: bad text gets its usage line, a
refusal gets the reason, and an unexpected exception gets a short apology with the request id
while the JSON log line with that id holds the traceback.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime

from bot.access import Access
from bot.command import Command, CommandError, Context, Outcome, Reply, UsageError
from bot.config import Config
from bot.store import Store

COMMAND_DEADLINE_SECONDS = 30
HELP_WORDS = ("help", "-h", "--help", "?")
_SURROGATE = re.compile("[\ud800-\udfff]")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Invocation:
    command: str                    # without the slash
    text: str
    user: str
    channel: str | None
    request_id: str
    response_url: str | None = None


class Dispatcher:
    def __init__(self, store: Store, config: Config, commands: dict[str, Command],
                 clock: Callable[[], datetime], access: Access | None = None):
        self.store = store
        self.config = config
        self.commands = commands
        self.clock = clock
        self.access = access

    def run(self, invocation: Invocation, progress: Callable[[Reply], None] | None = None) -> Reply:
        """The reply to `invocation`; `progress` receives a long command's partial replies."""
        # Text that is not Unicode (a lone surrogate; undecodable bytes from a terminal) could be
        # neither stored nor printed: it becomes U+FFFD here, once for every command.
        invocation = replace(invocation, command=_unicode(invocation.command), text=_unicode(invocation.text))
        name = invocation.command.lstrip("/")
        command = self.commands.get(name)
        if command is None:
            known = ", ".join(f"/{c}" for c in self.commands)
            return _error(name, f"There is no /{name} command; there is {known}.", outcome=Outcome.USAGE)
        if self.access is not None:
            denial = self.access.check(name, invocation.user, invocation.channel)
            if denial is not None:
                log.info("denied /%s to %s in %s", name, invocation.user, invocation.channel)
                return Reply("denied", {**asdict(denial), "user": invocation.user}, outcome=Outcome.FAILED)
        if invocation.text.strip().lower() in HELP_WORDS:
            data = {**command.help_data(self.config), "command": command, "config": self.config}
            return Reply(command.help_template, data)
        access = self.access

        def may_run(other: str) -> bool:
            return access is None or access.check(other, invocation.user, invocation.channel) is None

        context = Context(
            user=invocation.user, channel=invocation.channel, store=self.store, config=self.config,
            request_id=invocation.request_id, clock=self.clock,
            deadline=time.monotonic() + COMMAND_DEADLINE_SECONDS, may_run=may_run,
        )
        if progress is not None:
            context = replace(context, progress=progress)
        try:
            return command.run(context, command.parse(invocation.text))
        except UsageError as error:
            return _error(name, str(error), usage=command.usage, outcome=Outcome.USAGE)
        except CommandError as error:
            return _error(name, str(error), incidents=error.incidents)
        except Exception:
            log.exception("/%s failed", name, extra={"command_text": invocation.text, "user": invocation.user})
            return Reply("internal_error", {"command": name, "request_id": invocation.request_id},
                         outcome=Outcome.FAILED)


def _error(command: str, message: str, *, usage: str | None = None, incidents: list | None = None,
           outcome: Outcome = Outcome.FAILED) -> Reply:
    return Reply("error", {"command": command, "message": message, "usage": usage, "incidents": incidents or []},
                 outcome=outcome)


def _unicode(text: str) -> str:
    return _SURROGATE.sub("\ufffd", text)
