"""Moving a history from one store into another, either backend to either (`oncall-bot db copy`).

Every table of HISTORY is read in key order, a batch at a time (memory stays bounded whatever the
history's size), and each row is added to the target unless it holds that key already: ids are
kept, so incident numbers people know stay theirs, and running the copy again adds only what is
new. A target holding other rows under the same keys (other incidents under the same numbers, a
timeline that went on in both places) holds another history: the copy refuses before it writes
anything, rather than merging two histories silently.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bot.store import HISTORY, Store, Table

BATCH = 1000
SHOWN = 10          # the keys a refusal names


@dataclass(frozen=True)
class Copied:
    table: str
    copied: int
    present: int     # rows the target held already


class HistoriesDiffer(Exception):
    """The target holds other rows under keys the source uses."""

    def __init__(self, table: Table, keys: list[Any], count: int):
        super().__init__(f"{table.name}: other rows under {count} of the same keys")
        self.table = table
        self.keys = keys       # the first SHOWN of them
        self.count = count


def copy_history(source: Store, target: Store, batch: int = BATCH) -> list[Copied]:
    """Copies what `target` lacks of `source`'s history; per table, how many rows were copied and
    how many were there already. Raises HistoriesDiffer, having written nothing, when the target
    holds another history."""
    for table in HISTORY:
        _check(source, target, table, batch)
    copied = [_copy(source, target, table, batch) for table in HISTORY]
    if any(table.copied for table in copied):
        target.optimize()
    return copied


def _batches(store: Store, table: Table, batch: int) -> Iterator[list[dict[str, Any]]]:
    after = None
    while rows := store.rows(table, after=after, limit=batch):
        yield rows
        after = rows[-1][table.key]


def _check(source: Store, target: Store, table: Table, batch: int) -> None:
    differing: list[Any] = []
    count = 0
    for rows in _batches(source, table, batch):
        theirs = {row[table.key]: row for row in target.rows_with_keys(table, [row[table.key] for row in rows])}
        for row in rows:
            held = theirs.get(row[table.key])
            if held is not None and any(held[column] != row[column] for column in table.identity):
                count += 1
                if len(differing) < SHOWN:
                    differing.append(row[table.key])
    if count:
        raise HistoriesDiffer(table, differing, count)


def _copy(source: Store, target: Store, table: Table, batch: int) -> Copied:
    copied = seen = 0
    for rows in _batches(source, table, batch):
        copied += target.insert_rows(table, rows)
        seen += len(rows)
    return Copied(table.name, copied, seen - copied)
