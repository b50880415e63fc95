"""The same commands without Slack: a prompt (`oncall-bot console`) and one-shot (`oncall-bot run`).

Replies are rendered by the same templates as text. Here the person at the terminal is trusted
(they can read the database anyway), so [access] does not apply; the channel is "console".
"""

from __future__ import annotations

import getpass
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TextIO

from bot import redact
from bot.command import Audience, Command, Outcome, Reply
from bot.config import Config
from bot.dispatch import Dispatcher, Invocation
from bot.render import Renderer
from bot.serialize import json_default, to_json
from bot.store import Store, StoreUnavailable

CHANNEL = "console"
log = logging.getLogger(__name__)
EXIT_CODES = {Outcome.OK: 0, Outcome.FAILED: 1, Outcome.USAGE: 2}


class Terminal:
    def __init__(self, store: Store, config: Config, commands: dict[str, Command],
                 clock: Callable[[], datetime]):
        self.commands = commands
        redact.use(config.redaction)
        self.renderer = Renderer(config.timezone, clock)
        self.dispatcher = Dispatcher(store, config, commands, clock)
        self.user = _local_user()
        self._count = 0

    def invoke(self, line: str) -> Reply:
        name, text = _split(line)
        self._count += 1
        try:
            return self.dispatcher.run(Invocation(command=name, text=text, user=self.user, channel=CHANNEL,
                                                  request_id=f"local-{self._count}"))
        except StoreUnavailable:
            return Reply("store_unavailable", {}, outcome=Outcome.FAILED)

    def run(self, line: str, *, as_json: bool, out: TextIO, err: TextIO, save_file: Path | None = None) -> int:
        """`oncall-bot run`: one command; the text (or the data as JSON) on stdout, errors on stderr.

        `save_file`: where the file the reply carries (a chart) is written.
        """
        reply = self.invoke(line)
        if save_file is not None and reply.files:
            try:
                save_file.write_bytes(self.renderer.file(reply.files[0]))
            except OSError as error:
                print(f"{save_file}: cannot write: {error.strerror}", file=err)
                return EXIT_CODES[Outcome.FAILED]
            print(f"Saved {reply.files[0].filename} as {save_file}.", file=err)
        if as_json:
            print(to_json(redact.redact_data(reply.data, default=json_default), indent=2), file=out)
        else:
            reply, text = self._render(reply, _command_name(line))
            print(text, file=out if reply.outcome is Outcome.OK else err)
        return EXIT_CODES[reply.outcome]

    def print_file(self, line: str, *, out: TextIO, err: TextIO) -> int:
        """One command whose answer is a file (a postmortem draft): the file on stdout, else the
        answer on stderr."""
        reply = self.invoke(line)
        if reply.outcome is Outcome.OK and reply.files:
            out.write(self.renderer.file(reply.files[0]).decode())
            return 0
        reply, text = self._render(reply, _command_name(line))
        print(text, file=err)
        return EXIT_CODES[reply.outcome] or EXIT_CODES[Outcome.FAILED]

    def console(self, stdin: TextIO, out: TextIO) -> int:
        interactive = stdin.isatty()
        if interactive:
            print(self._help(), file=out)
        while True:
            if interactive:
                try:
                    line = input("oncall> ")
                except EOFError:
                    print(file=out)
                    return 0
            else:
                line = stdin.readline()
                if not line:
                    return 0
            line = line.strip()
            if not line:
                continue
            if line in ("quit", "exit", "/quit", "/exit"):
                return 0
            if line in ("help", "/help", "?"):
                print(self._help(), file=out)
                continue
            if not line.startswith("/"):
                print("Type a command as in Slack, like /incident open db down — or help.", file=out)
                continue
            reply, text = self._render(self.invoke(line), _command_name(line))
            print(f"── {_where(reply)} ──", file=out)
            print(text, file=out)
            print(file=out)

    def _render(self, reply: Reply, command: str) -> tuple[Reply, str]:
        try:
            text = self.renderer.text(reply.template, reply.data)
            files = "".join(f"\n📎 {f.filename} ({len(self.renderer.file(f)) // 1024 + 1} KB), "
                            "uploaded with it in Slack"
                            for f in reply.files)
            return reply, text + files
        except Exception:
            log.exception("could not render %s", reply.template)
            failed = Reply("internal_error", {"command": command, "request_id": f"local-{self._count}"},
                           outcome=Outcome.FAILED)
            return failed, self.renderer.text(failed.template, failed.data)

    def _help(self) -> str:
        return self.renderer.text("commands_help", {"commands": list(self.commands.values()), "console": True})


def _split(line: str) -> tuple[str, str]:
    """"/incident open db down" -> ("incident", "open db down"); any whitespace ends the name."""
    parts = line.strip().lstrip("/").split(maxsplit=1)
    return (parts[0] if parts else ""), (parts[1] if len(parts) > 1 else "")


def _command_name(line: str) -> str:
    return _split(line)[0]


def _where(reply: Reply) -> str:
    if reply.audience is Audience.ANNOUNCE:
        return f"announcement of incident #{reply.incident_id}"
    if reply.audience is Audience.THREAD:
        return f"thread of incident #{reply.incident_id}"
    if reply.audience is Audience.CHANNEL:
        return f"#{CHANNEL}"
    return "only you"


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "console"

