"""The Celery benchmark app (``celery -A benchmarks.peers.celery_app worker``).

Broker and result backend: Redis database ``$BENCH_REDIS`` (default 9), which
the benchmark owns and flushes.
"""

from __future__ import annotations

import os
import time

from celery import Celery  # type: ignore[import-not-found]

from benchmarks.peers._common import record_latency

REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/9")
app = Celery("bench", broker=REDIS, backend=REDIS)
app.conf.broker_connection_retry_on_startup = True


@app.task(name="noop")  # type: ignore[untyped-decorator]
def noop() -> float:
    """Returns when it started: the drain is timed from the first start."""
    return time.time()


@app.task(name="stamp")  # type: ignore[untyped-decorator]
def stamp(sent: float) -> None:
    record_latency(sent)


@app.task(name="collect")  # type: ignore[untyped-decorator]
def collect(results: list[object]) -> int:
    """A chord's body (benchmarks/features.py): how many headers it got."""
    return len(results)


@app.task(name="step")  # type: ignore[untyped-decorator]
def step(n: int = 0) -> int:
    """A chain's step (benchmarks/features.py): the previous step's n, plus one."""
    return n + 1
