"""The door between the frame and a feature.

A feature exposes a `Command`: it parses text into arguments, and runs them against a `Context`
(who, where, the store, the config, the clock), returning a `Reply` (a template name, its data and
where it goes). It never imports Slack; the frame turns the reply into Block Kit or terminal text.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Generic, Literal, TypeVar, overload

from bot.config import Config, Service
from bot.store import BOT_KINDS, Incident, Store

Args = TypeVar("Args")


class Audience(StrEnum):
    CALLER = "caller"        # only the person who asked
    CHANNEL = "channel"      # the channel it was asked in
    THREAD = "thread"        # the thread of `Reply.incident_id`
    ANNOUNCE = "announce"    # a new incident's announcement: its ts becomes the incident's thread
    FORM = "form"            # a form the caller fills in (Slack: a modal); its values go to `Command.form`


class Outcome(StrEnum):
    OK = "ok"                # done, or answered (exit code 0)
    FAILED = "failed"        # understood but could not be done (exit code 1)
    USAGE = "usage"          # the text was not understood (exit code 2)


@dataclass(frozen=True)
class Upload:
    """A file that goes with a reply (a chart, say), uploaded after the message in the same place: its
    `content`, or a text document the frame writes from `template` and `data` (a Markdown draft)."""

    filename: str
    title: str
    content: bytes = b""
    template: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    template: str
    data: dict[str, Any]
    audience: Audience = Audience.CALLER
    incident_id: int | None = None
    card: Reply | None = None   # the incident's announcement, re-rendered in place after a change
    outcome: Outcome = Outcome.OK
    files: tuple[Upload, ...] = ()
    then: tuple[Reply, ...] = ()   # messages posted after this one, in order (a quote in a new thread)
    duties: tuple[Duty, ...] = ()   # commands the bot runs next, as itself, once this reply is written
    # A key naming one message of the incident's thread: the first reply with it posts the message,
    # every later one (another command, another worker) updates that message in place.
    in_place: str | None = None


@dataclass(frozen=True)
class Quote:
    """The message an incident is declared from (Slack's message shortcut): its text, redacted
    and cut, who wrote it, and its link (None when Slack did not give one)."""

    text: str
    user: str | None = None
    link: str | None = None


class FormError(Exception):
    """A submitted form's values that cannot be taken: field name -> why (shown by the field)."""

    def __init__(self, fields: dict[str, str]):
        super().__init__(" ".join(fields.values()))
        self.fields = fields


class UsageError(Exception):
    """The text does not say something the command understands; answered with the usage line."""


class CommandError(Exception):
    """Understood, but cannot be done; `incidents` are offered as the ones the user may have meant."""

    def __init__(self, message: str, incidents: Sequence[Incident] = ()):
        super().__init__(message)
        self.incidents = list(incidents)


@dataclass(frozen=True)
class Need:
    """What a command needs a service to have (a repo, logs, probes): to pick the one service that
    has it when none is named, and to say what is missing and how to add it."""

    has: Callable[[Service], bool]
    what: str                  # what it is to have: "a repo", "logs"
    lack: str                  # what it is to lack it: "no repo", "no logs"
    how: str                   # "set logs or log_command in [services.{name}]"


@dataclass(frozen=True)
class Context:
    user: str
    channel: str | None
    store: Store
    config: Config
    request_id: str
    clock: Callable[[], datetime]
    deadline: float = field(default_factory=lambda: time.monotonic() + 30)
    progress: Callable[[Reply], None] = lambda reply: None   # shows a long command's partial reply
    may_run: Callable[[str], bool] = lambda command: True     # [access]: may this user run /command here
    records: bool = True      # False for a part of a command that records the whole (/triage's /logs)
    forms: bool = False       # the frame can show a form (Slack, with the command's trigger)
    quote: Quote | None = None   # the message the command was run on (a message shortcut)

    def now(self) -> datetime:
        return self.clock()

    def record(self, incident: Incident, kind: str, text: str, data: dict[str, Any]) -> None:
        """The bot's own entry in `incident`'s timeline, as the caller's: one line (`text`), the
        details in `data` (their shape per kind is in ARCHITECTURE.md). A part of a larger command
        records nothing: the whole is one entry."""
        if kind not in BOT_KINDS:
            raise ValueError(f"{kind!r} is not one of the bot's entry kinds (bot.store.BOT_KINDS)")
        if self.records:
            self.store.add_event(incident.id, at=self.now(), user=self.user, kind=kind, text=text, data=data)

    @overload
    def incident(self, ref: int | None, *, required: Literal[True] = True) -> Incident: ...

    @overload
    def incident(self, ref: int | None, *, required: bool) -> Incident | None: ...

    def incident(self, ref: int | None, *, required: bool = True) -> Incident | None:
        """`#12` when given, else the open incident of this channel.

        With `required`, no match is an error listing the open incidents to choose from.
        """
        if ref is not None:
            found = self.store.incident(ref)
            if found is None:
                raise CommandError(f"There is no incident #{ref}.", self.store.open_incidents())
            return found
        here = self.store.open_incidents(self.channel) if self.channel else []
        if len(here) == 1:
            return here[0]
        if len(here) > 1:
            raise CommandError("Several incidents are open in this channel; name one with #N.", here)
        if required:
            everywhere = self.store.open_incidents()
            if everywhere:
                raise CommandError("No incident is open in this channel; name one with #N.", everywhere)
            raise CommandError("No incident is open.")
        return None


    def service(self, name: str | None, command: str, need: Need | None = None) -> Service:
        """The service `name` names, or, with no name, the only one configured (with `need`). Every
        command says "which service?" in these words."""
        services = self.config.services
        fitting = [service for service in services.values() if need is None or need.has(service)]
        among = f"with {need.what}" if need else "configured"
        if name is None:
            if len(fitting) == 1:
                return fitting[0]
            if not fitting:
                raise CommandError(f"No service has {need.what} configured: {need.how.format(name='NAME')}."
                                   if need else "No service is configured: add a [services.NAME] to the config.")
            raise UsageError(f"Name a service: /{command} <service> ({among}: "
                             f"{', '.join(service.name for service in fitting)}).")
        if name not in services:
            known = ", ".join(service.name for service in fitting) or "none"
            raise UsageError(f"Unknown service {name!r} ({among}: {known}).")
        if need is not None and not need.has(services[name]):
            raise CommandError(f"{name} has {need.lack} configured: {need.how.format(name=name)}.")
        return services[name]

    @staticmethod
    def incident_about(incident: Incident | None, services: Iterable[str], ref: int | None) -> Incident | None:
        """`incident`, when an answer about `services` belongs in it: it was named (`ref`, the #N
        typed), it has no service, or that is the only one. Else None: the answer is given, but not
        recorded in the channel's incident nor posted in its thread (`/deploys web` typed in
        checkout's incident channel)."""
        if incident is None or ref is not None or incident.service is None:
            return incident
        return incident if set(services) == {incident.service} else None


@dataclass(frozen=True)
class Duty:
    """Something a job found due, done once: the command the bot runs for it, and where."""

    key: str                   # the same duty found again (another replica, the next look) has the same key
    command: str               # as typed: "/incident remind #12 unacknowledged"
    channel: str | None = None


@dataclass(frozen=True)
class Job:
    """A feature's look at the clock (`JOBS` in its module): what is due, every `every`."""

    name: str
    every: timedelta
    due: Callable[[Context], Iterable[Duty]]


class Malformed(Exception):
    """A body an endpoint does not take: answered 400 with this reason."""


@dataclass(frozen=True)
class Credentials:
    """Who may call an endpoint: the bearer `token`, or HTTP basic auth's `username` and `password`."""

    token: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Inbound:
    """A feature's HTTP endpoints on `serve` (`INBOUND` in its module): POST /<prefix>/<name> for each
    name `endpoints` gives, answered 401 without its credentials. A body `read` takes (else
    Malformed) is queued as work of kind `prefix`, and a worker passes what `read` made to `handle`,
    whose replies are posted as the bot's, in `channel` when they go to a channel."""

    prefix: str
    max_bytes: int
    endpoints: Callable[[Config], dict[str, Credentials]]
    read: Callable[[Config, str, bytes, datetime], dict[str, Any]]
    handle: Callable[[Context, dict[str, Any]], list[Reply]]
    channel: Callable[[Config], str | None]


@dataclass(frozen=True)
class Command(Generic[Args]):
    name: str                                  # typed as /name
    description: str                           # one line, shown in Slack's command picker
    usage: str                                 # the usage hint: what may follow the command
    parse: Callable[[str], Args]               # text -> arguments, or UsageError
    run: Callable[[Context, Args], Reply]      # arguments -> reply, or UsageError / CommandError
    help_data: Callable[[Config], dict[str, Any]] = lambda config: {}   # what the help template shows
    mentions: bool = False      # Slack sends the users, channels and links in its text escaped (`<@U012AB3CD|ana>`)
    # A submitted form's values (field name -> text) -> arguments, or FormError; for a command
    # whose run may answer with a form (Audience.FORM).
    form: Callable[[Context, dict[str, str]], Args] | None = None

    @property
    def help_template(self) -> str:
        return f"{self.name}_help"

    def to_dict(self) -> dict[str, Any]:
        """What `run --json` shows of a command (its help): the parser and runner are code, not data."""
        return {"name": self.name, "description": self.description, "usage": self.usage}
