"""Runs one command invocation, whatever it came from (Slack, the console, `oncall-bot run`).

Access, help, parsing and every failure are handled here once: bad text gets its usage line, a
refusal gets the reason, and an unexpected exception gets a short apology with the request id
while the JSON log line with that id holds the traceback. A store that became unavailable is no
answer: StoreUnavailable goes to the caller (a worker runs the work again after its lease).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

from bot.access import Access
from bot.command import Command, CommandError, Context, FormError, Outcome, Quote, Reply, UsageError
from bot.config import Config
from bot.store import Store, StoreUnavailable

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
    trigger_id: str | None = None           # Slack's, for a form (a modal) the command may answer with
    form: dict[str, str] | None = None      # a submitted form's values: run instead of the text
    quote: dict[str, Any] | None = None     # the message it was run on (a Quote's fields)


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
        context = self._context(invocation)
        if progress is not None:
            context = replace(context, progress=progress)
        try:
            if invocation.form is not None:
                if command.form is None:
                    raise UsageError(f"/{name} takes no form.")
                return command.run(context, command.form(context, invocation.form))
            return command.run(context, command.parse(invocation.text))
        except FormError as error:
            return _error(name, str(error), outcome=Outcome.USAGE)
        except UsageError as error:
            return _error(name, str(error), usage=command.usage, outcome=Outcome.USAGE)
        except CommandError as error:
            return _error(name, str(error), incidents=error.incidents)
        except StoreUnavailable:
            raise       # not an answer: a worker leaves the work to be done again, the console says so
        except Exception:
            log.exception("/%s failed", name, extra={"command_text": invocation.text, "user": invocation.user})
            return Reply("internal_error", {"command": name, "request_id": invocation.request_id},
                         outcome=Outcome.FAILED)

    def check_form(self, invocation: Invocation) -> dict[str, str]:
        """A submitted form's values checked as its command will take them (nothing is run):
        field name -> why, for the form to show while it is still open."""
        command = self.commands.get(invocation.command)
        if command is None or command.form is None or invocation.form is None:
            return {}
        try:
            command.form(self._context(invocation), invocation.form)
        except FormError as error:
            return error.fields
        return {}

    def _context(self, invocation: Invocation) -> Context:
        access = self.access

        def may_run(other: str) -> bool:
            return access is None or access.check(other, invocation.user, invocation.channel) is None

        quote = Quote(text=invocation.quote.get("text") or "", user=invocation.quote.get("user"),
                      link=invocation.quote.get("link")) if invocation.quote else None
        return Context(
            user=invocation.user, channel=invocation.channel, store=self.store, config=self.config,
            request_id=invocation.request_id, clock=self.clock,
            deadline=time.monotonic() + COMMAND_DEADLINE_SECONDS, may_run=may_run,
            forms=invocation.trigger_id is not None, quote=quote,
        )


def _error(command: str, message: str, *, usage: str | None = None, incidents: list | None = None,
           outcome: Outcome = Outcome.FAILED) -> Reply:
    return Reply("error", {"command": command, "message": message, "usage": usage, "incidents": incidents or []},
                 outcome=outcome)


def _unicode(text: str) -> str:
    return _SURROGATE.sub("\ufffd", text)
