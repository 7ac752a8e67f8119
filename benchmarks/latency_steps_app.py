"""The app of ``benchmarks.latency_steps``: one task, and a worker whose claim
loop notes when it woke and how long each claim took (wrapping two methods of
``jobqueue.worker.runner.Worker`` in this process only: instrumentation for a
benchmark, never loaded by anything else)."""

from __future__ import annotations

import os
import time
from typing import Any

from jobqueue import JobQueue
from jobqueue.worker import runner

app = JobQueue(auto_migrate=False)
TRACE = os.environ.get("LATENCY_STEPS_TRACE")


def _note(line: str) -> None:
    assert TRACE is not None
    with open(TRACE, "a") as out:
        out.write(line + "\n")


if TRACE:
    _idle_wait, _claim = runner.Worker._idle_wait, runner.Worker._claim

    def idle_wait(self: Any, timeout: float) -> None:
        _idle_wait(self, timeout)
        _note(f"woke {time.time():.6f}")

    def claim(self: Any, conn: Any, limit: int) -> int:
        began = time.time()
        taken: int = _claim(self, conn, limit)
        if taken:
            _note(f"claim {began:.6f} {time.time():.6f}")
        return taken

    runner.Worker._idle_wait = idle_wait  # type: ignore[method-assign]
    runner.Worker._claim = claim  # type: ignore[method-assign]


@app.task(name="stamp")
def stamp(sent: float) -> None:
    if TRACE:
        _note(f"task {time.time():.6f} {sent:.6f}")
