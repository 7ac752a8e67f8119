"""The test app with signal receivers connected at import, as a user's would be.

``jobqueue worker -A tests.signals_app:app`` imports this module in the worker
and, with ``--pool processes``, in each pool child: the receivers below run
wherever their signal is sent. Each appends one JSON line (the signal, the
process id, what it saw) to the file named by ``$JOBQUEUE_TEST_SIGNALS``, and
does nothing when that is unset. ``explode`` raises in every signal: the
tests check that it changes no outcome. Only worker subprocesses import this
module: its receivers are process-wide, and would touch every test's jobs.
"""

from __future__ import annotations

import json
import os
from typing import Any

from jobqueue import JobQueue, Task, signals
from tests.apps import build

SIGNALS_FILE = "JOBQUEUE_TEST_SIGNALS"
ALL_SIGNALS = [name for name in signals.__all__ if name not in ("ExceptionInfo", "Signal")]


def _note(signal: str, **fields: Any) -> None:
    path = os.environ.get(SIGNALS_FILE)
    if not path:
        return
    line = json.dumps({"signal": signal, "pid": os.getpid(), **fields}, default=repr)
    with open(path, "a") as file:  # one short append per line: lines never interleave
        file.write(line + "\n")


def note(sender: Any = None, signal: Any = None, **kwargs: Any) -> None:
    fields: dict[str, Any] = {}
    if isinstance(sender, Task):
        fields["task"] = sender.name
        fields["job"] = sender.request.id  # the job's request is pushed while it runs
        fields["headers"] = sender.request.headers
    for key in ("task_id", "state", "result", "retval", "terminated", "expired", "pid"):
        if key in kwargs:
            fields[key] = kwargs[key]
    if "exception" in kwargs:
        fields["exception"] = type(kwargs["exception"]).__name__
    _note(signal.name, **fields)


def explode(sender: Any = None, **kwargs: Any) -> None:
    raise RuntimeError("a receiver's bug")


def add_trace(sender: Any = None, headers: Any = None, **kwargs: Any) -> None:
    headers["traceparent"] = f"trace-of-{headers['id']}"


for _name in ALL_SIGNALS:
    getattr(signals, _name).connect(note)
    getattr(signals, _name).connect(explode)
signals.before_task_publish.connect(add_trace)

app = JobQueue()
tasks = build(app)
