"""Our log lines: one JSON object each, with the request id of the Slack request being served.

Every value is redacted (bot.redact): a traceback or a command's text can hold a secret. Then each is
cut (MAX_MESSAGE, MAX_TRACEBACK, MAX_FIELD characters), so no request, however large, makes a log
line larger than a few pages."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import traceback
from datetime import UTC, datetime

from bot.redact import excerpt, redact_data

MAX_MESSAGE = 4000
MAX_TRACEBACK = 16_000
MAX_FIELD = 2000

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName", "request_id"}
_make_record = logging.getLogRecordFactory()


def _record_with_request_id(*args, **kwargs) -> logging.LogRecord:
    # Taken when the record is made, in the thread serving the request, not when it is written.
    record = _make_record(*args, **kwargs)
    record.request_id = request_id.get()
    return record


logging.setLogRecordFactory(_record_with_request_id)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if rid := getattr(record, "request_id", None):
            line["request_id"] = rid
        line.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            line["traceback"] = "".join(traceback.format_exception(*record.exc_info))
        bounded = {key: _bounded(key, value) for key, value in redact_data(line, default=str).items()}
        return json.dumps(bounded, ensure_ascii=False)


def _bounded(key: str, value: object) -> object:
    limit = MAX_MESSAGE if key == "msg" else MAX_TRACEBACK if key == "traceback" else MAX_FIELD
    return excerpt(value, limit) if isinstance(value, str) and len(value) > limit else value


def configure(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
