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
import threading
import time
from typing import Any

LOG_FORMAT_ENV = "JOBQUEUE_LOG_FORMAT"
LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(name)s: %(message)s"
#: BatchingHandler: a line below WARNING that comes within BURST seconds of the
#: line before it waits, at most FLUSH_INTERVAL seconds, to be written with others.
FLUSH_INTERVAL = 0.1
BURST = 0.01

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


class BatchingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes lines in batches while they come in a
    burst (a line per job): a line below WARNING that comes within ``BURST``
    of the line before it waits at most ``FLUSH_INTERVAL`` to be written with the
    others; any other line is written at once (with those before it, in
    order). Everything is flushed at exit (logging.shutdown).

    Why: a worker at INFO writes a line per job, and one write() per line
    cost a no-op drain up to a third of its rate (benchmarks/log_cost.py, 1
    thread-pool worker, 4 interleaved runs on a busy 2-core machine: 6,900
    jobs/s, 10,600 batched, 11,900 without the lines): each write gives up
    the GIL, and the job's thread then queues to get it back. A record's
    time is taken when it is logged, not when it is written."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._last = 0.0  # time.monotonic() of the last line
        self._wake = threading.Event()
        threading.Thread(target=self._flusher, name="jobqueue-log-flush", daemon=True).start()

    def emit(self, record: logging.LogRecord) -> None:  # under self.lock (Handler.handle)
        try:
            self._pending.append(self.format(record) + self.terminator)
            now = time.monotonic()
            alone, self._last = now - self._last > BURST, now
            if alone or record.levelno >= logging.WARNING:
                self.flush()
            elif len(self._pending) == 1:
                self._wake.set()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self.acquire()
        try:
            if self._pending:
                text, self._pending = "".join(self._pending), []
                self.stream.write(text)
            super().flush()
        finally:
            self.release()

    def _flusher(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(FLUSH_INTERVAL)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # stderr closed: nothing to write to, nothing to say it with
                return


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


def configure(level: int | str, log_format: str = "text", batched: bool = False) -> None:
    """The root logger writes ``log_format`` lines to stderr at ``level``;
    called again, it replaces what it set before (an app may ask for JSON
    after the command line set up text to load it). ``batched``: through a
    ``BatchingHandler`` (a worker's, a beat's main process)."""
    handler = BatchingHandler(sys.stderr) if batched else logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    if isinstance(level, str):
        level = level.upper()
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLogger().level))
