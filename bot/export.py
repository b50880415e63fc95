"""`oncall-bot export`: every incident with all its timestamps and durations, as CSV or JSON."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any, TextIO

from bot.store import Store

COLUMNS = (
    "id", "title", "severity", "service", "status", "cause",
    "opened_by", "opened_at", "started_at", "acknowledged_by", "acknowledged_at",
    "resolved_by", "resolved_at", "resolution", "reopened",
    "time_to_acknowledge_seconds", "time_to_resolve_seconds", "announce_channel", "thread_ts",
)


def rows(store: Store, since: datetime | None) -> Iterable[dict[str, Any]]:
    for incident in store.incidents_opened_since(since):
        row = incident.to_dict()
        row["time_to_acknowledge_seconds"] = (
            int((incident.acknowledged_at - incident.opened_at).total_seconds()) if incident.acknowledged_at else None)
        row["time_to_resolve_seconds"] = (
            int((incident.resolved_at - incident.started_at).total_seconds()) if incident.resolved_at else None)
        yield {column: row[column] for column in COLUMNS}


def write(store: Store, since: datetime | None, output_format: str, out: TextIO) -> int:
    """Writes the incidents to `out`; returns how many."""
    count = 0
    if output_format == "json":
        incidents = list(rows(store, since))
        json.dump(incidents, out, indent=2, ensure_ascii=False)
        out.write("\n")
        return len(incidents)
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows(store, since):
        writer.writerow(row)
        count += 1
    return count
