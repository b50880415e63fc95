"""Alerts in: Alertmanager, Grafana and generic webhooks open incidents, one per alert group.

The frame takes each POST /alerts/NAME (`[alerts.sources.NAME]`), checks its credentials, and
queues what `read` makes of its body; a worker then hands it to `handle`, in one unit of work, so a
notification is acted on once, whatever the number of replicas and redeliveries, and two
notifications of one group never open two incidents:

- a group with an open incident: its new firing and resolved alerts go to the incident's thread
  and timeline;
  once none fires, the thread says so and offers Resolve (`auto_resolve`: the bot resolves it);
- a group firing again after its incident was resolved reopens it within `reopen_within`, else opens
  a new one that says it was seen before (#N);
- otherwise a firing alert that `open_when` matches opens an incident (its source and dedup key
  kept, started when the earliest firing alert started), whose triage the bot runs at once in its
  thread; a group none of whose alerts match is only posted to the channel.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

from bot.command import Audience, Context, Credentials, Inbound, Malformed, Reply
from bot.config import Config, ConfigError
from bot.store import OPEN, RESOLVED, AlertGroup, Incident
from bot.times import from_iso
from commands import milestones
from commands.alerts.payloads import FIRING, Alert, Notification, parse
from commands.alerts.settings import AlertSettings
from commands.incident import COMMAND as INCIDENT
from commands.incident import DEFAULT_SEVERITY, card_data, lead_ask
from commands.triage import duties_at_open

SETTINGS = (AlertSettings,)

MAX_BODY_BYTES = 1 << 20          # a group of MAX_ALERTS alerts with their labels fits
SHOWN_ALERTS = 20                 # alerts listed in one message; the others are counted
KEPT_ALERTS = 1000                # alerts a group remembers; past it, the resolved ones started longest ago go


def endpoints(config: Config) -> dict[str, Credentials]:
    """POST /alerts/NAME for each source; ConfigError when alerts would have nowhere to go."""
    if AlertSettings.of(config).sources and channel(config) is None:
        raise ConfigError(f"{config.source}: alerts.channel: not set, nor [slack] incident_channel: "
                          "the incidents alerts open need a channel")
    return {source.name: Credentials(source.token, source.username, source.password)
            for source in AlertSettings.of(config).sources}


def read(config: Config, name: str, body: bytes, now: datetime) -> dict[str, Any]:
    settings = AlertSettings.of(config)
    source = settings.source(name)
    if source is None:   # the frame only routes configured names here
        raise Malformed(f"no source {name!r}")
    return parse(settings, source, body, now).to_dict()


def channel(config: Config) -> str | None:
    return AlertSettings.of(config).channel or config.slack.incident_channel


def handle(ctx: Context, payload: dict[str, Any]) -> list[Reply]:
    """What one notification does (see the module's docstring); the replies to post."""
    settings = AlertSettings.of(ctx.config)
    note = Notification.from_dict(payload)
    now = ctx.now()
    with ctx.store.write():
        group = ctx.store.alert_group(note.source, note.dedup_key)
        known = dict(group.alerts) if group else {}
        was_firing = {fingerprint for fingerprint, alert in known.items() if alert["status"] == FIRING}
        known.update({alert.fingerprint: asdict(alert) for alert in note.alerts})
        news = _News(
            firing=[alert for alert in note.alerts if alert.firing and alert.fingerprint not in was_firing],
            resolved=[alert for alert in note.alerts if not alert.firing and alert.fingerprint in was_firing],
            still_firing=sum(alert["status"] == FIRING for alert in known.values()))
        incident = ctx.store.incident(group.incident_id) if group and group.incident_id else None
        replies, incident = _act(ctx, settings, note, news, incident, now)
        ctx.store.save_alert_group(AlertGroup(note.source, note.dedup_key, incident.id if incident else None,
                                              _bounded(known), now))
    return replies


def _bounded(known: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """At most KEPT_ALERTS alerts, forgetting resolved ones first (a firing one forgotten would be news again)."""
    resolved = sorted((fingerprint for fingerprint, alert in known.items() if alert["status"] != FIRING),
                      key=lambda fingerprint: known[fingerprint]["starts_at"])
    for fingerprint in resolved[:max(0, len(known) - KEPT_ALERTS)]:
        del known[fingerprint]
    return known


@dataclass(frozen=True)
class _News:
    """What a notification tells that the group did not know."""

    firing: list[Alert]               # alerts firing now that were not
    resolved: list[Alert]             # alerts resolved now that were firing
    still_firing: int                 # alerts of the group firing after this notification


def _act(ctx: Context, settings: AlertSettings, note: Notification, news: _News, incident: Incident | None,
         now: datetime) -> tuple[list[Reply], Incident | None]:
    """The replies, and the group's incident after this notification."""
    if incident is not None and incident.status != RESOLVED:
        _record(ctx, incident, note, news, now)
        if news.resolved and not news.still_firing:
            if settings.auto_resolve:
                return [_notice(note, news, incident, "auto_resolved"),
                        _incident(ctx, f"resolve #{incident.id} every alert of {note.source} resolved")], incident
            return [_notice(note, news, incident, "all_resolved")], incident
        return ([_notice(note, news, incident, "update")] if news.firing or news.resolved else []), incident
    if not news.firing:
        if incident is not None and news.resolved:
            return [_notice(note, news, incident, "update")], incident
        return ([_notice(note, news, None, "unmatched")] if news.resolved else []), incident
    if incident is not None and incident.resolved_at and now - incident.resolved_at <= settings.reopen_within:
        reopened = _incident(ctx, f"reopen #{incident.id} {note.source} fires again")
        incident = ctx.store.incident(incident.id) or incident
        triage = duties_at_open(ctx.config, incident)
        return [replace(reopened, duties=triage), _notice(note, news, incident, "refired", triage=bool(triage))], \
            incident
    if not any(settings.opens(alert.labels) for alert in news.firing):
        return [_notice(note, news, None, "unmatched")], incident
    card, opened = _open(ctx, settings, note, news, now, seen_before=incident)
    return [card, _notice(note, news, opened, "opened", seen_before=incident, triage=bool(card.duties)),
            lead_ask(opened)], opened


def _open(ctx: Context, settings: AlertSettings, note: Notification, news: _News, now: datetime, *,
          seen_before: Incident | None) -> tuple[Reply, Incident]:
    """The new incident's announcement (with its triage to run), and the incident."""
    where = channel(ctx.config)
    service = note.service(settings)
    severity = note.severity(settings, DEFAULT_SEVERITY)
    # When the impact began: the earliest firing alert's start (never after now: a clock ahead).
    started = min([from_iso(alert.starts_at) for alert in news.firing] + [now])
    incident_id = ctx.store.insert_incident(
        title=note.title, severity=severity, service=service, status=OPEN, opened_by=ctx.user, opened_at=now,
        started_at=started, channel=where, announce_channel=where, source=note.source, dedup_key=note.dedup_key)
    ctx.store.add_event(incident_id, at=now, user=ctx.user, kind="opened", text=note.title, data={
        "severity": severity, "service": service, "started_at": started, "source": note.source,
        "dedup_key": note.dedup_key, "seen_before": seen_before.id if seen_before else None})
    milestones.record(ctx.store, incident_id, "detected_at", started, {"kind": "alert", "source": note.source})
    incident = ctx.store.incident(incident_id)
    assert incident is not None
    return Reply("incident_card", card_data(incident, now), Audience.ANNOUNCE, incident_id=incident_id,
                 duties=duties_at_open(ctx.config, incident)), incident


def _record(ctx: Context, incident: Incident, note: Notification, news: _News, now: datetime) -> None:
    """The alerts that fired or resolved, in the incident's timeline."""
    if not news.firing and not news.resolved:
        return
    said = [f"{what} {', '.join(alert.name for alert in alerts[:SHOWN_ALERTS])}"
            + (f" and {len(alerts) - SHOWN_ALERTS} more" if len(alerts) > SHOWN_ALERTS else "")
            for what, alerts in (("firing:", news.firing), ("resolved:", news.resolved)) if alerts]
    ctx.store.add_event(incident.id, at=now, user=ctx.user, kind="alerts", text=f"{note.source} " + "; ".join(said),
                        data={"source": note.source, "firing": [alert.fingerprint for alert in news.firing],
                              "resolved": [alert.fingerprint for alert in news.resolved],
                              "still_firing": news.still_firing})


def _incident(ctx: Context, text: str) -> Reply:
    """/incident <text>, run as the bot: a resolve or reopen, with its timeline event and card."""
    return INCIDENT.run(ctx, INCIDENT.parse(text))


def _notice(note: Notification, news: _News, incident: Incident | None, event: str, **more: Any) -> Reply:
    data = {
        "event": event, "incident": incident, "source": note.source, "title": note.title,
        "firing": news.firing[:SHOWN_ALERTS], "firing_more": max(0, len(news.firing) - SHOWN_ALERTS),
        "resolved": news.resolved[:SHOWN_ALERTS], "resolved_more": max(0, len(news.resolved) - SHOWN_ALERTS),
        "still_firing": news.still_firing, **more,
    }
    if incident is None:
        return Reply("alert_notice", data, Audience.CHANNEL)
    return Reply("alert_notice", data, Audience.THREAD, incident_id=incident.id)


INBOUND = Inbound(prefix="alerts", max_bytes=MAX_BODY_BYTES, endpoints=endpoints, read=read, handle=handle,
                  channel=channel)
