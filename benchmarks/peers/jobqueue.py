"""jobqueue's side of the comparison (repository venv).

.venv/bin/python -m benchmarks.peers.jobqueue --workload drain --jobs 50000
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import psycopg

import jobqueue
from benchmarks.peers import _common
from benchmarks.peers.jobqueue_app import app, noop, stamp
from jobqueue import migrate


class JobQueueSystem:
    name = "jobqueue"
    version = jobqueue.__version__
    concurrency = min(32, (os.cpu_count() or 1) * 4)
    config = f"1 worker process, thread pool, default concurrency ({concurrency})"
    has_history = True
    claim_tables: tuple[str, ...] = ("job_queue",)  # what the claim reads: only waiting jobs

    def __init__(self, workers: _common.Workers) -> None:
        self.workers = workers
        self.dsn = ""

    def setup(self, dsn: str) -> None:
        self.dsn = dsn
        migrate.upgrade(dsn, "jobqueue")
        app.conf.dsn = dsn
        self.conn = psycopg.connect(dsn, autocommit=True)

    def close(self) -> None:
        self.conn.close()
        app.close()

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        return self.conn.execute(query, params).fetchall()

    def enqueue_bulk(self, n: int) -> list[Any]:
        return [r.id for r in app.enqueue_many(noop, [() for _ in range(n)])]

    def enqueue_one(self) -> None:
        noop.delay()

    def enqueue_stamp(self, sent: float) -> Any:
        return stamp.delay(sent).id

    def start_worker(self) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "jobqueue", "-A", "benchmarks.peers.jobqueue_app:app"]
        command += ["--dsn", self.dsn, "worker", "--loglevel", "warning"]
        proc = self.workers.spawn(command, {})
        _common.wait_until(
            "the worker to register",
            lambda: bool(self.sql("SELECT 1 FROM jobqueue.workers WHERE pid = %s", proc.pid)),
            self.workers,
            60,
        )
        return proc

    def pending(self) -> int:
        query = (
            "SELECT (SELECT count(*) FROM jobqueue.job_queue) "
            "+ (SELECT count(*) FROM jobqueue.job_lease)"
        )
        return int(self.sql(query)[0][0])

    def span(self, ids: list[Any]) -> tuple[float, float]:
        first, last = self.sql(
            "SELECT extract(epoch FROM min(started_at)), extract(epoch FROM max(finished_at)) "
            "FROM jobqueue.jobs WHERE id = ANY(%s::uuid[]) AND state = 'SUCCESS'",
            ids,
        )[0]
        return float(first), float(last)

    def db_latencies(self, ids: list[Any]) -> list[float] | None:
        rows = self.sql(
            "SELECT extract(epoch FROM started_at - created_at) * 1000 FROM jobqueue.jobs "
            "WHERE id = ANY(%s::uuid[])",
            ids,
        )
        return [float(r[0]) for r in rows]

    def clone_history(self, n: int) -> None:
        """Copies of the finished rows, under new time-ordered ids."""
        columns = [
            r[0]
            for r in self.sql(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = 'jobqueue' AND table_name = 'jobs' AND column_name <> 'id' "
                "ORDER BY ordinal_position"
            )
        ]
        names = ", ".join(columns)
        done = int(self.sql("SELECT count(*) FROM jobqueue.jobs WHERE state = 'SUCCESS'")[0][0])
        _common.psql(
            self.dsn,
            f"INSERT INTO jobqueue.jobs (id, {names}) SELECT jobqueue.uuid7(), {names} "
            f"FROM jobqueue.jobs CROSS JOIN generate_series(1, {-(-n // done)}) "
            f"WHERE state = 'SUCCESS' LIMIT {n}",
        )

    def hold(self) -> None:
        pass

    def release(self) -> None:
        pass


if __name__ == "__main__":
    workers = _common.Workers()
    sys.exit(_common.main(JobQueueSystem(workers), workers))
