"""`oncall-bot export`: every incident with all its timestamps and durations, as CSV or JSON.

Rows are streamed from the store's query to the output as they come (no incident objects, no
list of all of them), so 100,000 incidents cost about what the sqlite3 shell takes for the same
rows, and memory stays flat.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime
from typing import TextIO

from bot.store import EXPORT_COLUMNS, Store


def write(store: Store, since: datetime | None, output_format: str, out: TextIO) -> int:
    """Writes the incidents to `out`; returns how many."""
    rows = store.incident_rows(since)
    count = 0
    if output_format == "json":
        out.write("[")
        for row in rows:
            out.write(",\n  " if count else "\n  ")
            out.write(json.dumps(dict(zip(EXPORT_COLUMNS, row, strict=True)), ensure_ascii=False))
            count += 1
        out.write("\n]\n" if count else "]\n")
        return count
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    for row in rows:
        writer.writerow(row)
        count += 1
    return count
