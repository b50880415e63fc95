"""`[triage]`: how long /triage waits for all its parts together; whether `/incident open` runs it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from bot.config import Table, TableSection

MAX_DEADLINE = timedelta(seconds=25)   # a command's whole answer must come within 30 s


@dataclass(frozen=True)
class TriageSettings(TableSection):
    TABLE = "triage"

    deadline: timedelta = timedelta(seconds=15)
    on_open: bool = False     # an incident opened with /incident open is triaged at once (alerts' always are)

    @classmethod
    def read(cls, table: Table) -> TriageSettings:
        deadline = table.duration("deadline", cls.deadline)
        if deadline > MAX_DEADLINE:
            table.fail("deadline", "at most 25s: a command's whole answer must come within 30 s")
        return cls(deadline=deadline, on_open=table.boolean("on_open", cls.on_open))
