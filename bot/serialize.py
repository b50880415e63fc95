"""JSON for what crosses out of the bot: stored event data, `run --json`, log lines."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import datetime, timedelta, tzinfo
from pathlib import PurePath
from typing import Any

from bot.times import to_iso


def json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return to_iso(value)
    if isinstance(value, (re.Pattern, tzinfo, PurePath)):    # in a help's or a catalog's data
        return getattr(value, "pattern", None) or str(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_ENCODER = json.JSONEncoder(default=json_default, ensure_ascii=False)


def to_json(value: Any, **options: Any) -> str:
    if not options:
        return _ENCODER.encode(value)     # an encoder made once: json.dumps makes one per call
    return json.dumps(value, default=json_default, ensure_ascii=False, **options)
