"""What a source POSTs -> one `Notification`: its group's dedup key, a title, its alerts.

Alertmanager's webhook (version 4) and Grafana alerting's (which is Alertmanager's, with a few
fields more) carry a group: `groupKey` and the group's `alerts`, each with a `status` (firing or
resolved), `labels`, `annotations`, `startsAt`, `endsAt` and a `fingerprint`. The generic payload
is one alert: `title`, `status`, `dedup_key`, and optionally `severity`, `service`, `started`,
`labels`, `link`. Anything else is `Malformed`, with the reason the sender is answered.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from bot.command import Malformed
from bot.times import to_iso
from commands.alerts.settings import AlertSettings, Source

FIRING, RESOLVED = "firing", "resolved"
MAX_ALERTS = 1000            # Alertmanager's max_alerts (in the receiver) keeps a group's notification below it
MAX_KEY_CHARS = 1024
MAX_TEXT_CHARS = 2000        # a title, a summary, a link, a label's value
_MOMENT = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$")
_NEVER = "0001-01-01T00:00:00Z"   # Go's zero time: Alertmanager's "no end yet"


@dataclass(frozen=True)
class Alert:
    fingerprint: str
    status: str                      # firing or resolved
    name: str                        # alertname, or the generic title
    labels: dict[str, str]
    summary: str | None
    starts_at: str                   # ISO 8601 UTC
    ends_at: str | None
    url: str | None

    @property
    def firing(self) -> bool:
        return self.status == FIRING


@dataclass(frozen=True)
class Notification:
    """One POST from a source, as queued: JSON values only."""

    source: str                      # "alertmanager:prom"
    dedup_key: str
    title: str
    alerts: tuple[Alert, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Notification:
        return cls(**{**data, "alerts": tuple(Alert(**alert) for alert in data["alerts"])})

    def service(self, settings: AlertSettings) -> str | None:
        """The service label's value, from the first firing alert that has one (else any alert)."""
        ordered = sorted(self.alerts, key=lambda alert: not alert.firing)
        return next((alert.labels[settings.service_label] for alert in ordered
                     if alert.labels.get(settings.service_label)), None)

    def severity(self, settings: AlertSettings, default: int) -> int:
        """The worst SEV the firing alerts' severity labels map to (`default` when none maps)."""
        firing = [alert for alert in self.alerts if alert.firing] or list(self.alerts)
        levels = [settings.severity(alert.labels.get(settings.severity_label)) for alert in firing]
        return min((level for level in levels if level is not None), default=default)


def parse(settings: AlertSettings, source: Source, body: bytes, now: datetime) -> Notification:
    """The notification `body` holds, or Malformed saying why it is not one."""
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise Malformed("the body is not UTF-8") from None
    except ValueError as error:
        raise Malformed(f"the body is not JSON ({error})") from None
    if not isinstance(data, dict):
        raise Malformed("the body is not a JSON object")
    if source.kind == "generic":
        return _generic(settings, source, data, now)
    return _grouped(source, data)


def _grouped(source: Source, data: dict[str, Any]) -> Notification:
    """Alertmanager's and Grafana's payloads: a group of alerts."""
    key = _required(data, "groupKey", limit=MAX_KEY_CHARS)
    alerts = data.get("alerts")
    if not isinstance(alerts, list) or not alerts:
        raise Malformed("alerts: must be a non-empty list")
    if len(alerts) > MAX_ALERTS:
        raise Malformed(f"alerts: {len(alerts)} alerts, at most {MAX_ALERTS} (set max_alerts in the receiver)")
    parsed = tuple(_grouped_alert(alert, f"alerts[{index}]") for index, alert in enumerate(alerts))
    common = _labels(data, "commonLabels")
    annotations = _labels(data, "commonAnnotations")
    title = common.get("alertname") or annotations.get("summary") or parsed[0].name
    return Notification(source.label, key, _cut(title), parsed)


def _grouped_alert(alert: Any, where: str) -> Alert:
    if not isinstance(alert, dict):
        raise Malformed(f"{where}: must be an object")
    status = alert.get("status")
    if status not in (FIRING, RESOLVED):
        raise Malformed(f"{where}.status: must be firing or resolved, not {_shown(status)}")
    labels = _labels(alert, "labels", where)
    annotations = _labels(alert, "annotations", where)
    ends = _text(alert, "endsAt", where=where)
    return Alert(
        fingerprint=_text(alert, "fingerprint", where=where, limit=MAX_KEY_CHARS) or _fingerprint(labels),
        status=status, name=_cut(labels.get("alertname") or annotations.get("summary") or "alert"), labels=labels,
        summary=_cut(annotations["summary"]) if annotations.get("summary") else None,
        starts_at=_moment(_required(alert, "startsAt", where=where), f"{where}.startsAt"),
        ends_at=_moment(ends, f"{where}.endsAt") if ends and ends != _NEVER else None,
        url=_url(_text(alert, "generatorURL", where=where)),
    )


def _generic(settings: AlertSettings, source: Source, data: dict[str, Any], now: datetime) -> Notification:
    title = _cut(_required(data, "title"))
    status = data.get("status", FIRING)
    if status not in (FIRING, RESOLVED):
        raise Malformed(f"status: must be firing or resolved, not {_shown(status)}")
    key = _required(data, "dedup_key", limit=MAX_KEY_CHARS)
    labels = _labels(data, "labels")
    for field, label in (("severity", settings.severity_label), ("service", settings.service_label)):
        value = _text(data, field, limit=MAX_TEXT_CHARS)
        if value is not None:
            labels[label] = value
    started = _text(data, "started")
    link = _url(_text(data, "link"))
    alert = Alert(fingerprint=key, status=status, name=title, labels=labels, summary=None,
                  starts_at=_moment(started, "started") if started else to_iso(now) or "", ends_at=None, url=link)
    return Notification(source.label, key, title, (alert,))


def _required(data: dict[str, Any], key: str, *, where: str = "", limit: int = MAX_TEXT_CHARS) -> str:
    value = _text(data, key, where=where, limit=limit)
    if value is None:
        raise Malformed(f"{where}.{key}: missing" if where else f"{key}: missing")
    return value


def _text(data: dict[str, Any], key: str, *, where: str = "",
          limit: int = MAX_TEXT_CHARS) -> str | None:
    value = data.get(key)
    name = f"{where}.{key}" if where else key
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise Malformed(f"{name}: must be a string, not {_shown(value)}")
    if len(value) > limit:
        raise Malformed(f"{name}: {len(value)} characters, at most {limit}")
    return value


def _labels(data: dict[str, Any], key: str, where: str = "") -> dict[str, str]:
    value = data.get(key) or {}
    name = f"{where}.{key}" if where else key
    if not isinstance(value, dict) or not all(isinstance(v, str) and len(v) <= MAX_TEXT_CHARS for v in value.values()):
        raise Malformed(f"{name}: must be an object of strings (at most {MAX_TEXT_CHARS} characters each)")
    return dict(value)


def _moment(text: str | None, name: str) -> str:
    """RFC 3339 (any fraction of a second, as Go writes it) -> our ISO 8601 UTC to the second."""
    match = _MOMENT.match(text or "")
    if not match:
        raise Malformed(f"{name}: {_shown(text)} is not an RFC 3339 time like 2026-11-24T14:05:00Z")
    try:
        moment = datetime.fromisoformat(match.group(1) + match.group(3).replace("Z", "+00:00")).astimezone(UTC)
    except (ValueError, OverflowError):    # February 30th; year 1 or 9999 past UTC
        raise Malformed(f"{name}: {_shown(text)} is not a time") from None
    return to_iso(moment) or ""


def _url(text: str | None) -> str | None:
    """A link people may follow: http(s) only (anything else is left out)."""
    return text if text and text.startswith(("https://", "http://")) else None


def _fingerprint(labels: dict[str, str]) -> str:
    """An alert's identity when its sender gives none: its labels."""
    return hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]


def _cut(text: str, limit: int = 200) -> str:
    """One line, at most `limit` characters (a title or a name)."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 1] + "…"


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:39] + "…"
