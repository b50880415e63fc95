"""`oncall-bot export`: every incident with all its timestamps and durations, as CSV or JSON.

The store formats the rows as it reads them and hands them over a batch at a time; each batch is
written at once, so memory stays flat and the output's buffering does not matter. What is
exported was redacted when it was stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import TextIO

from bot.store import EXPORT_COLUMNS, Store


def write(store: Store, since: datetime | None, output_format: str, out: TextIO) -> None:
    """Writes the incidents to `out`: CSV with a header (RFC 4180), or a JSON array of objects."""
    batches = store.export(since, output_format)
    if output_format == "csv":
        out.write(",".join(EXPORT_COLUMNS) + "\r\n")
        for lines in batches:
            out.write("\r\n".join(lines) + "\r\n")
        return
    separator = "\n  "
    out.write("[")
    for objects in batches:
        out.write(separator + ",\n  ".join(objects))
        separator = ",\n  "
    out.write("\n]\n" if separator != "\n  " else "]\n")
