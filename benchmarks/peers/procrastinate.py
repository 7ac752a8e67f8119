"""Procrastinate's side of the comparison (runs in benchmarks/.peers/procrastinate).

.peers/procrastinate/bin/python -m benchmarks.peers.procrastinate --workload drain
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psycopg  # type: ignore[import-not-found,unused-ignore]

from benchmarks.peers import _common

CONCURRENCY = 10


class ProcrastinateSystem:
    name = "procrastinate"
    version = version("procrastinate")
    config = f"1 `procrastinate worker` process, async tasks, --concurrency {CONCURRENCY}"
    has_history = True
    claim_tables: tuple[str, ...] = ("procrastinate_jobs",)

    def __init__(self, workers: _common.Workers) -> None:
        self.workers = workers
        self.dsn = ""
        self.app: Any = None

    def setup(self, dsn: str) -> None:
        self.dsn = os.environ["BENCH_DSN"] = dsn
        from benchmarks.peers import procrastinate_app

        self.app, self.noop, self.stamp = (
            procrastinate_app.app,
            procrastinate_app.noop,
            procrastinate_app.stamp,
        )
        self.app.open()
        self.app.schema_manager.apply_schema()
        self.conn = psycopg.connect(dsn, autocommit=True)

    def close(self) -> None:
        self.conn.close()
        if self.app is not None:
            self.app.close()

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self.conn.execute(query, params).fetchall()
        return rows

    def enqueue_bulk(self, n: int) -> list[Any]:
        ids: list[Any] = self.noop.batch_defer(*({} for _ in range(n)))
        return ids

    def enqueue_one(self) -> None:
        self.noop.defer()

    def enqueue_stamp(self, sent: float) -> Any:
        return self.stamp.defer(sent=sent)

    def start_worker(self) -> subprocess.Popen[bytes]:
        exe = str(Path(sys.executable).with_name("procrastinate"))
        command = [exe, "-a", "benchmarks.peers.procrastinate_app.app", "--log-level", "warning"]
        command += ["worker", "--concurrency", str(CONCURRENCY)]
        before = self.sql("SELECT count(*) FROM procrastinate_workers")[0][0]
        proc = self.workers.spawn(command, {"BENCH_DSN": self.dsn})
        _common.wait_until(
            "the worker to register",
            lambda: (
                self.sql("SELECT count(*) FROM procrastinate_workers")[0][0] > before
                and self._listening()
            ),
            self.workers,
            60,
        )
        return proc

    def _listening(self) -> bool:
        query = (
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%%'"
        )
        return bool(self.sql(query)[0][0])

    def pending(self) -> int:
        query = "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
        return int(self.sql(query)[0][0])

    def span(self, ids: list[Any]) -> tuple[float, float]:
        first, last = self.sql(
            "SELECT extract(epoch FROM min(at) FILTER (WHERE type = 'started')), "
            "extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded')) "
            "FROM procrastinate_events WHERE job_id = ANY(%s::bigint[])",
            ids,
        )[0]
        return float(first), float(last)

    def db_latencies(self, ids: list[Any]) -> list[float] | None:
        rows = self.sql(
            "SELECT extract(epoch FROM max(at) FILTER (WHERE type = 'started') "
            "- min(at) FILTER (WHERE type = 'deferred')) * 1000 "
            "FROM procrastinate_events WHERE job_id = ANY(%s::bigint[]) GROUP BY job_id",
            ids,
        )
        return [float(r[0]) for r in rows]

    def clone_history(self, n: int) -> None:
        """Copies of the succeeded jobs and their events (triggers off, as a restore would)."""
        columns = [
            r[0]
            for r in self.sql(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'procrastinate_jobs' AND column_name <> 'id' "
                "ORDER BY ordinal_position"
            )
        ]
        names = ", ".join(columns)
        done = int(
            self.sql("SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'")[0][0]
        )
        _common.psql(
            self.dsn,
            "SET session_replication_role = replica; "
            "CREATE TEMP TABLE clone AS SELECT j.id AS src, "
            "(SELECT max(id) FROM procrastinate_jobs) + row_number() OVER () AS dst "
            f"FROM procrastinate_jobs j CROSS JOIN generate_series(1, {-(-n // done)}) "
            f"WHERE j.status = 'succeeded' LIMIT {n}; "
            f"INSERT INTO procrastinate_jobs (id, {names}) SELECT c.dst, "
            + ", ".join(f"j.{c}" for c in columns)
            + " FROM clone c JOIN procrastinate_jobs j ON j.id = c.src; "
            "INSERT INTO procrastinate_events (job_id, type, at) SELECT c.dst, e.type, e.at "
            "FROM clone c JOIN procrastinate_events e ON e.job_id = c.src; "
            "SELECT setval(pg_get_serial_sequence('procrastinate_jobs', 'id'), "
            "(SELECT max(id) FROM procrastinate_jobs));",
        )

    def hold(self) -> None:
        pass

    def release(self) -> None:
        pass


if __name__ == "__main__":
    workers = _common.Workers()
    sys.exit(_common.main(ProcrastinateSystem(workers), workers))
