"""How workers and beats write their logs: text (the default) or JSON lines.

``configure`` sets up the root logger of a ``jobqueue worker``/``beat``
process (and of each process-pool child, so a child's lines match its
parent's). A JSON line is one object: ``time`` (UTC, ISO 8601), ``level``,
``logger``, ``message``, ``process``, ``pid``, ``thread``, then whatever
fields the call passed as ``extra`` (every per-job line passes job_id, task,
queue, attempt, state, duration and exception: ``worker.executor._say``),
and ``exc_info`` with the traceback when there is one. Only the rendered
message is written, never a record's raw arguments.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

LOG_FORMAT_ENV = "JOBQUEUE_LOG_FORMAT"
LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(name)s: %(message)s"

# A LogRecord's own attributes; anything else on a record came from ``extra``.
_OWN = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",  # Python 3.12+
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in a message or a
    traceback are escaped by JSON)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.processName,
            "pid": record.process,
            "thread": record.threadName,
        }
        for key, value in record.__dict__.items():
            if key not in _OWN and key not in line:
                line[key] = value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        # default=repr: a field that JSON cannot hold is written as its repr, not lost
        return json.dumps(line, default=repr, ensure_ascii=False)


def _iso(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def check_format(value: object, where: str = "app.conf.log_format") -> str:
    if value not in LOG_FORMATS:
        raise ValueError(f"{where} must be one of {', '.join(LOG_FORMATS)}, got {value!r}")
    return str(value)


def env_format() -> str:
    """``$JOBQUEUE_LOG_FORMAT``, else "text" (checked by ``Settings.validate``)."""
    return os.environ.get(LOG_FORMAT_ENV, "").strip().lower() or "text"


def current_format() -> str:
    """The format this process's root logger writes ("json" if a handler of
    it formats JSON), for process-pool children to write the same."""
    handlers = logging.getLogger().handlers
    return "json" if any(isinstance(h.formatter, JsonFormatter) for h in handlers) else "text"


def configure(level: int | str, log_format: str = "text") -> None:
    """The root logger writes ``log_format`` lines to stderr at ``level``;
    called again, it replaces what it set before (an app may ask for JSON
    after the command line set up text to load it)."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    if isinstance(level, str):
        level = level.upper()
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLogger().level))
