"""An incident's milestones: the moments of its life, the order they keep, and recording one from evidence.

Beside the moments people mark (opened, acknowledged, resolved, and `/incident mitigate`), the bot
records what evidence shows: *detected* (an alert's start, the first error of the service in its
logs), *mitigated* (a revert of a suspect deploy or a redeploy of the last known good one, seen in
git) and *recovered* (the watch after a fix). Evidence never overwrites a moment already recorded
(a person's correction, `/incident update --detected WHEN`, does), and never breaks the order.

What a milestone came from (`source`, kept in its timeline event and said by templates/_incident.j2):
    {"kind": "alert", "source": "alertmanager:prom"}            detected: the alert's start
    {"kind": "logs", "service": …, "error": …}                   detected: the first error in the logs
    {"kind": "git", "service": …, "sha": …, "reverts": …, "redeploys": …}   mitigated: seen in git
    {"kind": "watch", "errors_per_minute": …, "minutes": …, …}   recovered: the watch after the fix
    {"kind": "person"}                                           mitigated: /incident mitigate
An incident opened by an alert gets its detected time by `record(store, id, "detected_at", start,
{"kind": "alert", "source": name})` in the unit that opens it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.store import Incident, Store


@dataclass(frozen=True)
class Milestone:
    """A moment in an incident's life; one with an `option` a user may correct with `--<option> WHEN`."""

    option: str | None
    field: str                        # the incident's column
    reached_by: str | None = None     # the action that reaches it; it cannot be corrected before
    not_before: tuple[str, ...] = ()  # the columns it may not precede (its durations count from some)


# In the order they happen. A mitigation may come before anyone acknowledges (a rollback by a
# pipeline), and a resolve typed late may be set before the opening (an incident opened afterwards).
MILESTONES = (
    Milestone("started", "started_at"),
    Milestone("detected", "detected_at", not_before=("started_at",)),
    Milestone(None, "opened_at", not_before=("detected_at",)),
    Milestone("acked", "acknowledged_at", reached_by="ack", not_before=("started_at", "detected_at", "opened_at")),
    Milestone("mitigated", "mitigated_at", not_before=("started_at", "detected_at")),
    Milestone("resolved", "resolved_at", reached_by="resolve",
              not_before=("started_at", "detected_at", "acknowledged_at", "mitigated_at")),
    Milestone(None, "recovered_at", not_before=("started_at", "mitigated_at")),
)


def out_of_order(times: dict[str, datetime | None]) -> tuple[str, str] | None:
    """The first (later, earlier) pair of columns whose times in `times` break the order, if any."""
    for later in MILESTONES:
        for column in later.not_before:
            moment, bound = times.get(later.field), times.get(column)
            if moment is not None and bound is not None and moment < bound:
                return later.field, column
    return None


def record(store: Store, incident_id: int, field: str, at: datetime, source: dict[str, Any]) -> Incident | None:
    """Records the milestone `field` at `at` from evidence (`source` says which: `{"kind": "logs", …}`),
    with its timeline event, unless the incident already has it or `at` would break the order.
    The incident as it now is when recorded, else None."""
    with store.write():
        incident = store.incident(incident_id)
        if incident is None or getattr(incident, field) is not None:
            return None
        times = {milestone.field: getattr(incident, milestone.field) for milestone in MILESTONES}
        if out_of_order({**times, field: at}) is not None:
            return None
        store.update_incident(incident_id, **{field: at})
        store.add_event(incident_id, at=at, user=None, kind=field.removesuffix("_at"), data={"source": source})
        return store.incident(incident_id)
