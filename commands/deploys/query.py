"""/deploys: what was deployed, newest first, and which deploys are suspects of an incident.

Windows:
- `/deploys api` — the last 24 h; `--since 6h`, `--since 14:00` (configured zone) or `--last N`.
- inside an incident (its channel, or `#N`), the bare command covers the 24 h before the incident
  started up to INCIDENT_MARGIN after, for the incident's service (all services when it has none);
  `--since` and `--last` still count back from now.
- `/deploys` outside an incident: every service with a repo, the last 24 h.

During an incident, deploys in the service's `suspect_window` before its start are suspects; the
deploy before the oldest suspect is the last known good, and the rollback hint reverts the suspects
(`git revert`, with `-m 1` for merges) or names the tag to redeploy. The bot never runs it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from bot.args import Option, number, parse_args
from bot.command import Audience, CommandError, Context, Need, Reply, UsageError
from bot.config import Config
from bot.redact import excerpt
from bot.store import Incident
from bot.times import TimeParseError, parse_since
from commands import milestones
from commands.deploys import mirror
from commands.deploys.history import (
    Deploy,
    DeployDetail,
    DeployError,
    DeployWindow,
    History,
    Listing,
    UnknownRef,
    checked_ref,
    opened,
)
from commands.deploys.mirror import Mirror
from commands.deploys.settings import DeploySettings

DEFAULT_WINDOW = timedelta(hours=24)
INCIDENT_MARGIN = timedelta(minutes=15)   # an incident's start is typed by a human: look a bit past it
MAX_LAST = 200
MAX_DEPLOYS = 500                          # per service; the JSON says `truncated` past it
SHOWN = 15                                 # deploys in the message, then "and M more"
SHOWN_FILES = 20
ENTRY_NAMED = 3                            # suspects the timeline's one line names
PARALLEL_SERVICES = 4
_OPTIONS = {"since": Option.WORDS, "last": Option.VALUE, "branch": Option.VALUE}


@dataclass(frozen=True)
class DeploysArgs:
    service: str | None = None
    ref: str | None = None
    since: str | None = None
    last: int | None = None
    branch: str | None = None
    incident: int | None = None


@dataclass(frozen=True)
class Mitigation:
    """A deploy after an incident's start that undid its suspects: a revert of one of them, or a
    redeploy of the last known good tag."""

    deploy: Deploy                  # the deploy that landed it: when it took effect
    reverts: str | None = None      # the suspect's sha it reverts
    redeploys: str | None = None    # the last known good tag it redeploys

    @property
    def source(self) -> dict[str, Any]:
        """What the mitigated milestone's timeline event says it came from."""
        return {"kind": "git", "service": self.deploy.service, "sha": self.deploy.sha, "reverts": self.reverts,
                "redeploys": self.redeploys}


@dataclass(frozen=True)
class ServiceReport:
    """One service's part of the answer."""

    name: str
    deploy: str                               # merges | commits | tags:<glob>
    branch: str | None                        # None for tag deploys
    paths: tuple[str, ...]
    suspect_window: timedelta
    count: int = 0                            # deploys listed
    truncated: bool = False                   # the window held more than MAX_DEPLOYS
    fetched_at: datetime | None = None        # remote repos: the mirror's last successful fetch
    stale: str | None = None                  # remote repos: why this fetch failed
    error: str | None = None                  # could not be read at all (several services only)
    suspects: list[Deploy] = field(default_factory=list)   # newest first, listed or not
    last_known_good: Deploy | None = None
    rollback_hint: str | None = None
    mitigation: Mitigation | None = None      # the suspects undone after the start, seen in git


def parse(text: str) -> DeploysArgs:
    args = parse_args(text, _OPTIONS)
    if len(args.words) > 2:
        raise UsageError(f"Name a service and at most one sha or tag, not {' '.join(args.words)!r}.")
    service, ref = (args.words + [None, None])[:2]
    since, last, branch = args.options.get("since"), args.options.get("last"), args.options.get("branch")
    if since is not None and last is not None:
        raise UsageError("Give --since or --last, not both.")
    if ref is not None and (since is not None or last is not None or branch is not None):
        raise UsageError("One deploy in detail takes no --since, --last or --branch.")
    count = None
    if last is not None:
        count = number(last)
        if count is None or not 1 <= count <= MAX_LAST:
            raise UsageError(f"--last must be a whole number from 1 to {MAX_LAST}, not {last!r}.")
    for name in (ref, branch):
        if name is not None:
            try:
                checked_ref(name)
            except ValueError as error:
                raise UsageError(f"{error}.") from None
    return DeploysArgs(service=service, ref=ref, since=since, last=count, branch=branch, incident=args.incident)


def run(ctx: Context, args: DeploysArgs) -> Reply:
    incident = ctx.incident(args.incident, required=False)
    services = _services(ctx, args, incident)
    incident = ctx.incident_about(incident, [service.name for service in services], args.incident)
    if args.branch is not None:
        if len(services) > 1:
            raise UsageError("--branch needs one service: /deploys <service> --branch <branch>.")
        if services[0].deploy.startswith("tags:"):
            raise UsageError(f"{services[0].name} deploys tags ({services[0].deploy}); --branch does not apply.")
    if args.ref is not None:
        template, data = "deploys_detail", _detail(ctx, services[0], args.ref, incident)
        deploy = data["deploy"]
        event_text = f"/deploys {services[0].name}: {deploy.short_sha} in detail"
        event_data = {"service": services[0].name, "sha": deploy.sha, "suspect": deploy.suspect,
                      "deploy": entry_deploy(deploy)}
    else:
        template, data = "deploys", _listing(ctx, services, args, incident)
        event_text, event_data = _event(data)
    if incident is None:
        return Reply(template, data)
    ctx.record(incident, "deploys", event_text, event_data)
    for report in data.get("services", []):
        if report.mitigation is not None and report.name == incident.service:
            milestones.record(ctx.store, incident.id, "mitigated_at", report.mitigation.deploy.when,
                              report.mitigation.source)
    return Reply(template, data, Audience.THREAD, incident_id=incident.id)


# -- which services, which window ---------------------------------------------------------------


_WITH_REPO = Need(lambda service: DeploySettings.of(service).repo is not None, "a repo", "no repo",
                  "set repo in [services.{name}] to a local path or a URL")


def _services(ctx: Context, args: DeploysArgs, incident: Incident | None) -> list[DeploySettings]:
    configured = {name: DeploySettings.of(service) for name, service in ctx.config.services.items()}
    if args.service is not None:
        return [DeploySettings.of(ctx.service(args.service, "deploys", _WITH_REPO))]
    if args.ref is not None:
        raise UsageError("Name the service: /deploys <service> <sha-or-tag>.")
    with_repo = [service for service in configured.values() if service.repo is not None]
    if incident is not None and incident.service in configured and configured[incident.service].repo:
        return [configured[incident.service]]
    if not with_repo:
        ctx.service(None, "deploys", _WITH_REPO)    # says that none has one
    return with_repo


def _window(ctx: Context, args: DeploysArgs, incident: Incident | None,
            services: list[DeploySettings]) -> tuple[DeployWindow, dict[str, Any]]:
    """The git window, and how to describe it."""
    now = ctx.now()
    if args.last is not None:
        return DeployWindow(None, None, args.last), {"kind": "last", "last": args.last}
    if args.since is not None:
        since = _since(args.since, now, ctx)
        return DeployWindow(since, None, MAX_DEPLOYS), {"kind": "since", "since": since}
    if incident is not None:
        before = max(DEFAULT_WINDOW, *(service.suspect_window for service in services))
        since, until = incident.started_at - before, min(incident.started_at + INCIDENT_MARGIN, now)
        return DeployWindow(since, until, MAX_DEPLOYS), {"kind": "incident", "since": since, "until": until,
                                                    "margin": INCIDENT_MARGIN}
    since = now - DEFAULT_WINDOW
    return DeployWindow(since, None, MAX_DEPLOYS), {"kind": "default", "since": since, "span": DEFAULT_WINDOW}


def _since(text: str, now: datetime, ctx: Context) -> datetime:
    try:
        return parse_since(text, now, ctx.config.timezone)
    except TimeParseError as error:
        raise UsageError(f"--since: {error}.") from None


# -- reading ----------------------------------------------------------------------------------------


def _listing(ctx: Context, services: list[DeploySettings], args: DeploysArgs,
             incident: Incident | None) -> dict[str, Any]:
    window, described = _window(ctx, args, incident, services)

    def report(service: DeploySettings) -> tuple[ServiceReport, list[Deploy]]:
        try:
            return _report(ctx, service, args.branch, window, incident)
        except DeployError as error:
            if len(services) == 1:
                raise
            # With several services, one that cannot be read is told in its row.
            return ServiceReport(service.name, service.deploy, None, service.paths, service.suspect_window,
                                 error=str(error)), []

    if len(services) == 1:
        results = [report(services[0])]
    else:
        with ThreadPoolExecutor(min(PARALLEL_SERVICES, len(services))) as pool:
            results = list(pool.map(report, services))
    deploys = sorted((d for _, listed in results for d in listed), key=lambda d: d.when, reverse=True)
    reports = [service_report for service_report, _ in results]
    data: dict[str, Any] = {
        "service": services[0].name if len(services) == 1 else None,
        "window": described,
        "incident": _incident_summary(incident),
        "services": reports,
        "deploys": deploys,
        "shown": SHOWN,
    }
    with_suspects = [r for r in reports if r.suspects]
    if with_suspects:
        # With several services, the top-level answer is that of the suspect closest to the start.
        likeliest = max(with_suspects, key=lambda r: r.suspects[0].when)
        data["last_known_good"] = likeliest.last_known_good
        data["rollback_hint"] = likeliest.rollback_hint
    return data


def _report(ctx: Context, service: DeploySettings, branch: str | None, window: DeployWindow,
            incident: Incident | None) -> tuple[ServiceReport, list[Deploy]]:
    branch = _branch(service, branch)
    with _history(ctx, service, branch) as (history, fetched):
        listing = history.deploys(window)
        deploys = _mark_suspects(listing.deploys, incident, service.suspect_window)
        suspects: list[Deploy] = []
        last_known_good = None
        mitigation = None
        if incident is not None:
            suspects, last_known_good = _suspects(history, window, listing, incident, service.suspect_window)
            if suspects:
                mitigation = _mitigation(history, incident, suspects, last_known_good, ctx.now())
    report = ServiceReport(service.name, service.deploy, None if service.deploy.startswith("tags:") else branch,
                           service.paths, service.suspect_window, len(deploys), listing.truncated,
                           suspects=suspects, last_known_good=last_known_good,
                           rollback_hint=_rollback_hint(service, suspects, last_known_good) if suspects else None,
                           mitigation=mitigation, **_freshness(fetched))
    return report, deploys


def count_deploys(ctx: Context, service: DeploySettings, since: datetime, until: datetime) -> int | None:
    """How many deploys `service` had from `since` to `until`; None when its repo cannot be read."""
    try:
        with _history(ctx, service, _branch(service, None)) as (history, _):
            return len(history.deploys(DeployWindow(since, until, MAX_DEPLOYS)).deploys)
    except DeployError:
        return None


def find_deploy(ctx: Context, service: str | None, ref: str) -> Deploy:
    """The commit `ref` (a short or full sha, or a tag) names in `service`'s repository, or, with
    no service, in the repository of every service that has one.

    A DeployError when no repository has it, when one that might cannot be read, or when it names
    different commits in different repositories.
    """
    try:
        checked_ref(ref)
    except ValueError as error:
        raise UsageError(f"{error}.") from None
    if service is not None:
        services = _services(ctx, DeploysArgs(service=service), None)
    else:
        services = [s for s in map(DeploySettings.of, ctx.config.services.values()) if s.repo is not None]
        if not services:
            raise UnknownRef(f"No service has a repo configured, so {ref!r} cannot be checked; add repo "
                             "to a [services.NAME] table of the config.")
    found: dict[str, Deploy] = {}
    failures: list[DeployError] = []
    for each in services:
        try:
            with _history(ctx, each, _branch(each, None)) as (history, _):
                deploy = history.detail(ref).deploy
            found.setdefault(deploy.sha, deploy)
        except DeployError as error:
            failures.append(error)
    if len(found) == 1:
        return next(iter(found.values()))
    if len(found) > 1:
        where = ", ".join(f"{d.short_sha} in {d.service}" for d in found.values())
        raise UnknownRef(f"{ref!r} names different commits ({where}); give the whole sha.")
    if len(failures) == 1:
        raise failures[0]
    unreadable = [str(error) for error in failures if not isinstance(error, UnknownRef)]
    names = ", ".join(s.name for s in services)
    raise UnknownRef(f"There is no commit or tag {ref!r} in the repo of {names}."
                     + (" " + " ".join(unreadable) if unreadable else ""))


def _detail(ctx: Context, service: DeploySettings, ref: str, incident: Incident | None) -> dict[str, Any]:
    branch = _branch(service, None)
    with _history(ctx, service, branch) as (history, fetched):
        detail: DeployDetail = history.detail(ref)
    deploy = _mark_suspects([detail.deploy], incident, service.suspect_window)[0]
    return {
        "service": service.name,
        "deploy": deploy,
        "message": detail.message,
        "files": detail.files,
        "shown_files": SHOWN_FILES,
        "in_paths": detail.in_paths,
        "paths": service.paths,
        "previous_tag": detail.previous_tag,
        "incident": _incident_summary(incident),
        "suspect_window": service.suspect_window,
        **_freshness(fetched),
    }


def _freshness(fetched: Mirror | None) -> dict[str, Any]:
    if fetched is None:
        return {"fetched_at": None, "stale": None}
    return {"fetched_at": fetched.fetched_at, "stale": fetched.fetch_error}


def _branch(service: DeploySettings, typed: str | None) -> str:
    if typed is not None:
        return typed
    try:
        return checked_ref(service.branch)
    except ValueError as error:
        raise CommandError(f"services.{service.name}.branch: {error}.") from None


@contextmanager
def _history(ctx: Context, service: DeploySettings, branch: str) -> Iterator[tuple[History, Mirror | None]]:
    """The service's history, from its mirror (fetched first) when the repo is remote."""
    fetched = None
    path = service.repo
    if path is None:
        raise CommandError(f"{service.name} has no repo configured.")
    if service.repo_is_remote:
        timeout = min(service.fetch_timeout.total_seconds(), max(0.0, ctx.deadline - time.monotonic()))
        fetched = mirror.refresh(path, mirror.mirrors_dir(ctx.store.local_dir), timeout, service.name)
        path = str(fetched.path)
    with opened(path, service, branch, ctx.deadline) as history:
        yield history, fetched


# -- suspects ---------------------------------------------------------------------------------------


def _suspects(history: History, window: DeployWindow, listing: Listing, incident: Incident,
              suspect_window: timedelta) -> tuple[list[Deploy], Deploy | None]:
    """Every deploy in the suspect window, and the last one before it, listed or not.

    A listing holds every deploy from its newest down to its oldest, so when it reaches past the
    suspect window it already holds the suspects and the last known good; else git is asked.
    """
    start = incident.started_at
    low = start - suspect_window
    older = next((d for d in listing.deploys if d.when < low), None)
    reaches = older is not None or (window.since is not None and window.since <= low and not listing.truncated)
    if reaches and (window.until is None or window.until >= start):
        suspects = [d for d in listing.deploys if low <= d.when <= start]
    else:
        suspects = history.deploys(DeployWindow(low, start, MAX_DEPLOYS)).deploys
    if not suspects:
        return [], None
    if older is None:
        before = history.deploys(DeployWindow(None, low - timedelta(seconds=1), 1)).deploys
        older = before[0] if before else None
    return _mark_suspects(suspects, incident, suspect_window), older


def _mitigation(history: History, incident: Incident, suspects: list[Deploy], last_known_good: Deploy | None,
                now: datetime) -> Mitigation | None:
    """The first deploy after the incident's start that undid its suspects, if git shows one: a
    revert of a suspect (landed with the first deploy holding it), or a tag of the last known good
    commit (a redeploy of it)."""
    after = list(reversed(history.deploys(DeployWindow(incident.started_at, now, MAX_DEPLOYS)).deploys))
    after = [deploy for deploy in after if deploy.when > incident.started_at]
    if history.tag_glob is not None:
        if last_known_good is None:
            return None
        redeploy = next((d for d in after if d.sha == last_known_good.sha and d.tag != last_known_good.tag), None)
        return Mitigation(redeploy, redeploys=last_known_good.tag) if redeploy else None
    suspected = {deploy.sha for deploy in suspects}
    reverts = [(sha, reverted) for sha, reverted in history.reverts(incident.started_at, now) if reverted in suspected]
    for deploy in after:
        for sha, reverted in reverts:
            if history.contains(deploy.sha, sha):
                return Mitigation(deploy, reverts=reverted)
    return None


def _mark_suspects(deploys: list[Deploy], incident: Incident | None, window: timedelta) -> list[Deploy]:
    if incident is None:
        return deploys
    start = incident.started_at
    return [replace(d, suspect=True) if start - window <= d.when <= start else d for d in deploys]


def _rollback_hint(service: DeploySettings, suspects: list[Deploy], last_known_good: Deploy | None) -> str | None:
    """What would undo the suspects: redeploy the last good tag, or revert them newest first."""
    if service.deploy.startswith("tags:"):
        return f"redeploy {last_known_good.tag}" if last_known_good else None
    reverted = suspects
    if service.deploy == "commits":
        # The commits a merge brought in are listed (and reverted) themselves.
        reverted = [d for d in suspects if not d.merge] or suspects
    mainline = "-m 1 " if any(d.merge for d in reverted) else ""
    return f"git revert {mainline}" + " ".join(d.sha for d in reverted)


# -- data -------------------------------------------------------------------------------------------


def _incident_summary(incident: Incident | None) -> dict[str, Any] | None:
    if incident is None:
        return None
    return {"id": incident.id, "title": incident.title, "service": incident.service,
            "started_at": incident.started_at}


def _event(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The timeline's line and data: which deploys were seen and suspected, not the whole listing."""
    suspects = [d for report in data["services"] for d in report.suspects]
    last_known_good = data.get("last_known_good")
    count = len(data["deploys"])
    text = f"/deploys {data['service'] or 'all services'}: {count} deploy{'s' if count != 1 else ''}"
    if suspects:
        named = ", ".join(d.short_sha for d in suspects[:ENTRY_NAMED])
        text += f", suspects {named}{', …' if len(suspects) > ENTRY_NAMED else ''}"
    if last_known_good:
        text += f"; last known good {last_known_good.short_sha}"
    return text, {
        "services": [report.name for report in data["services"]],
        "window": data["window"],
        "deploys": [d.sha for d in data["deploys"]],
        "suspects": [d.sha for d in suspects],
        "suspect_deploys": [entry_deploy(d) for d in suspects],
        "last_known_good": last_known_good.sha if last_known_good else None,
        "rollback_hint": data.get("rollback_hint"),
    }


def entry_deploy(deploy: Deploy) -> dict[str, Any]:
    """A deploy as a timeline entry's data keeps it (/deploys', /triage's): enough to name it in a postmortem."""
    return {"service": deploy.service, "sha": deploy.sha, "short_sha": deploy.short_sha, "when": deploy.when,
            "author": deploy.author, "subject": excerpt(deploy.subject, 200), "pr": deploy.pr, "tag": deploy.tag}


def help_data(config: Config) -> dict[str, Any]:
    return {"default_hours": int(DEFAULT_WINDOW.total_seconds() // 3600),
            "margin_minutes": int(INCIDENT_MARGIN.total_seconds() // 60), "max_last": MAX_LAST,
            "shown": SHOWN, "shown_files": SHOWN_FILES}
