"""Celery's side of the comparison (runs in benchmarks/.peers/celery; Redis, no PostgreSQL).

.peers/celery/bin/python -m benchmarks.peers.celery --workload drain
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import deque
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

from celery import group  # type: ignore[import-not-found]

from benchmarks.peers import _common
from benchmarks.peers.celery_app import REDIS, app, noop, stamp

CHUNK = 1000


class CelerySystem:
    name = "celery"
    version = version("celery")
    config = (
        f"1 `celery worker` process, prefork pool, default concurrency ({os.cpu_count()}), "
        f"Redis {REDIS.rsplit('/', 1)[-1]} as broker and result backend"
    )
    has_history = False
    claim_tables: tuple[str, ...] = ()

    def __init__(self, workers: _common.Workers) -> None:
        self.workers = workers
        self.outstanding: deque[str] = deque()
        self.started = 0

    def setup(self, dsn: str) -> None:
        self.redis = app.backend.client
        self.redis.flushdb()  # our own database number only

    def close(self) -> None:
        self.redis.flushdb()
        app.close()

    def enqueue_bulk(self, n: int) -> list[Any]:
        result = group(noop.s() for _ in range(n)).apply_async()
        ids = [r.id for r in result.results]
        self.outstanding.extend(ids)
        return ids

    def enqueue_one(self) -> None:
        noop.delay()

    def enqueue_stamp(self, sent: float) -> Any:
        job_id: str = stamp.delay(sent).id
        self.outstanding.append(job_id)
        return job_id

    def start_worker(self, *options: str) -> subprocess.Popen[bytes]:
        """A worker (more ``celery worker`` options: its pool, its concurrency),
        once it answers a ping."""
        self.started += 1
        exe = str(Path(sys.executable).with_name("celery"))
        name = f"bench{self.started}-{os.getpid()}@%h"
        command = [exe, "-A", "benchmarks.peers.celery_app", "worker", "-n", name]
        command += ["--loglevel", "WARNING", *options]
        proc = self.workers.spawn(command, {})
        _common.wait_until(
            "the worker to answer a ping",
            lambda: len(app.control.ping(timeout=0.5)) >= len(self.workers.procs),
            self.workers,
            60,
        )
        return proc

    def pending(self) -> int:
        """Results arrive nearly in order: check the oldest outstanding ids in chunks."""
        while self.outstanding:
            chunk = [self.outstanding[i] for i in range(min(CHUNK, len(self.outstanding)))]
            if self.redis.exists(*[key(i) for i in chunk]) < len(chunk):
                break
            for _ in chunk:
                self.outstanding.popleft()
        return len(self.outstanding)

    def results(self, ids: list[Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for start in range(0, len(ids), 5000):
            values = self.redis.mget([key(i) for i in ids[start : start + 5000]])
            out.extend(json.loads(v) for v in values)
        return out

    def span(self, ids: list[Any]) -> tuple[float, float]:
        records = self.results(ids)
        first = min(float(r["result"]) for r in records)
        return first, max(epoch(r["date_done"]) for r in records)

    def db_latencies(self, ids: list[Any]) -> list[float] | None:
        return None

    def clone_history(self, n: int) -> None:
        raise NotImplementedError("Celery keeps no history in PostgreSQL")

    def hold(self) -> None:
        """Idle workers stop consuming while the bulk enqueue runs (it takes a while)."""
        app.control.cancel_consumer("celery", reply=True)

    def release(self) -> None:
        app.control.add_consumer("celery", reply=True)
        time.sleep(0)


def key(job_id: str) -> str:
    return f"celery-task-meta-{job_id}"


def epoch(stamp: str) -> float:
    moment = datetime.fromisoformat(stamp)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


if __name__ == "__main__":
    workers = _common.Workers()
    sys.exit(_common.main(CelerySystem(workers), workers, needs_database=False))
