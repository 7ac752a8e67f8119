"""PgQueuer's side of the comparison (runs in benchmarks/.peers/pgqueuer).

.peers/pgqueuer/bin/python -m benchmarks.peers.pgqueuer --workload drain
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-not-found,import-untyped,unused-ignore]
from pgqueuer import Queries  # type: ignore[import-not-found]
from pgqueuer.db import AsyncpgDriver  # type: ignore[import-not-found]

from benchmarks.peers import _common

T = TypeVar("T")
BATCH = 10


class PgQueuerSystem:
    name = "pgqueuer"
    version = version("pgqueuer")
    config = (
        f"1 process (`pgq run` equivalent), async entrypoints, batch size {BATCH} (default), "
        "`pgq autovac` applied (its documented per-table autovacuum settings)"
    )
    has_history = True
    claim_tables: tuple[str, ...] = ("pgqueuer",)

    def __init__(self, workers: _common.Workers) -> None:
        self.workers = workers
        self.dsn = ""
        self.local = threading.local()
        self.opened: list[tuple[asyncio.AbstractEventLoop, Any]] = []
        self.lock = threading.Lock()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Each thread has its own event loop and connection."""
        if not hasattr(self.local, "loop"):
            self.local.loop = asyncio.new_event_loop()
            conn = self.local.loop.run_until_complete(asyncpg.connect(self.dsn))
            self.local.conn = conn
            self.local.queries = Queries(AsyncpgDriver(conn))
            with self.lock:
                self.opened.append((self.local.loop, conn))
        result: T = self.local.loop.run_until_complete(coro)
        return result

    def setup(self, dsn: str) -> None:
        self.dsn = dsn
        pgq = str(Path(sys.executable).with_name("pgq"))
        subprocess.run([pgq, "--pg-dsn", dsn, "install"], check=True, capture_output=True)
        # What PgQueuer ships for a queue table's churn: per-table autovacuum
        # settings (more frequent vacuums and analyzes of its tables).
        subprocess.run([pgq, "--pg-dsn", dsn, "autovac"], check=True, capture_output=True)

    def close(self) -> None:
        for loop, conn in self.opened:
            loop.run_until_complete(conn.close())
            loop.close()

    def sql(self, query: str, *params: Any) -> list[Any]:
        self.run(asyncio.sleep(0))
        rows: list[Any] = self.run(self.local.conn.fetch(query, *params))
        return rows

    def enqueue_bulk(self, n: int) -> list[Any]:
        self.run(asyncio.sleep(0))
        ids: list[Any] = self.run(self.local.queries.enqueue(["noop"] * n, [None] * n, [0] * n))
        return ids

    def enqueue_one(self) -> None:
        self.run(asyncio.sleep(0))
        self.run(self.local.queries.enqueue("noop", None))

    def enqueue_stamp(self, sent: float) -> Any:
        self.run(asyncio.sleep(0))
        return self.run(self.local.queries.enqueue("stamp", repr(sent).encode()))[0]

    def start_worker(self) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "benchmarks.peers.pgqueuer_app", str(BATCH)]
        before = self._sessions()
        proc = self.workers.spawn(command, {"BENCH_DSN": self.dsn})
        # PgQueuer keeps no worker registry: wait for its connection, then give it
        # a second to LISTEN and make its first dequeue.
        _common.wait_until(
            "the worker to connect", lambda: self._sessions() > before, self.workers, 60
        )
        time.sleep(1.0)
        return proc

    def _sessions(self) -> int:
        query = (
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(self.sql(query)[0][0])

    def pending(self) -> int:
        query = "SELECT count(*) FROM pgqueuer WHERE status IN ('queued', 'picked')"
        return int(self.sql(query)[0][0])

    def span(self, ids: list[Any]) -> tuple[float, float]:
        row = self.sql(
            "SELECT extract(epoch FROM min(created) FILTER (WHERE status = 'picked')), "
            "extract(epoch FROM max(created) FILTER (WHERE status = 'successful')) "
            "FROM pgqueuer_log WHERE job_id = ANY($1::bigint[])",
            ids,
        )[0]
        return float(row[0]), float(row[1])

    def db_latencies(self, ids: list[Any]) -> list[float] | None:
        rows = self.sql(
            "SELECT extract(epoch FROM max(created) FILTER (WHERE status = 'picked') "
            "- min(created) FILTER (WHERE status = 'queued')) * 1000 "
            "FROM pgqueuer_log WHERE job_id = ANY($1::bigint[]) GROUP BY job_id",
            ids,
        )
        return [float(r[0]) for r in rows]

    def clone_history(self, n: int) -> None:
        """Finished jobs live on as log rows (queued, picked, successful): copy those
        of ``n`` jobs under new job ids, past the id sequence."""
        done = int(self.sql("SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'")[0][0])
        _common.psql(
            self.dsn,
            "CREATE TEMP TABLE clone AS SELECT l.job_id AS src, "
            "(SELECT last_value FROM pgqueuer_id_seq) + row_number() OVER () AS dst "
            f"FROM pgqueuer_log l CROSS JOIN generate_series(1, {-(-n // done)}) "
            f"WHERE l.status = 'successful' LIMIT {n}; "
            "INSERT INTO pgqueuer_log (created, job_id, status, priority, entrypoint, "
            "traceback, aggregated) SELECT l.created, c.dst, l.status, l.priority, "
            "l.entrypoint, l.traceback, true FROM clone c JOIN pgqueuer_log l ON l.job_id = c.src; "
            "SELECT setval('pgqueuer_id_seq', (SELECT max(dst) FROM clone));",
        )

    def hold(self) -> None:
        pass

    def release(self) -> None:
        pass


if __name__ == "__main__":
    workers = _common.Workers()
    sys.exit(_common.main(PgQueuerSystem(workers), workers))
