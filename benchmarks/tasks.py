"""Tasks for the benchmark workers (``-A benchmarks.tasks:app``).

The worker subprocesses get their DSN and schema from the command line; the
benchmark builds its own app per schema and registers the same task names with
``register``, so both sides agree.
"""

from __future__ import annotations

import time
from typing import Any

from psycopg import sql

from jobqueue import JobQueue, Task


def register(app: JobQueue) -> Task[[], None]:
    @app.task(name="noop")
    def noop() -> None:
        return None

    def insert(schema: str) -> sql.Composed:
        return sql.SQL("INSERT INTO {}.effects (n) VALUES (%s)").format(sql.Identifier(schema))

    @app.task(name="write_row")
    def write_row(n: int) -> None:
        """One row, the usual way: through the worker's task pool, in autocommit."""
        with app.db.pool().connection() as conn:
            conn.execute(insert(app.conf.schema), [n])

    @app.task(name="write_row_atomic", atomic=True, bind=True)
    def write_row_atomic(self: Any, n: int) -> None:
        """One row in the job's own transaction (benchmarks/atomic.py)."""
        self.connection.execute(insert(app.conf.schema), [n])

    @app.task(name="tenant_fair", fair_key=lambda tenant: tenant)
    def tenant_fair(tenant: str) -> None:
        """A tenant's no-op job, claimed round-robin across tenants (benchmarks/fair.py)."""
        return None

    @app.task(name="tenant_unfair")
    def tenant_unfair(tenant: str) -> None:
        """The same job without a fair key: claimed in plain order."""
        return None

    @app.task(name="collect")
    def collect(results: list[Any]) -> int:
        """A chord's body (benchmarks/features.py): how many headers it got."""
        return len(results)

    @app.task(name="step")
    def step(n: int = 0) -> int:
        """A chain's step (benchmarks/features.py): the previous step's n, plus one."""
        return n + 1

    @app.task(name="noop_rated")
    def noop_rated() -> None:
        """A no-op whose rate limit the benchmark sets (app.control.rate_limit)."""
        return None

    @app.task(name="sleep_ms")
    def sleep_ms() -> None:
        """A job that takes a millisecond (benchmarks/priority_latency.py's backlog)."""
        time.sleep(0.001)

    @app.task(name="stamp")
    def stamp() -> float:
        """A no-op that returns when it started (benchmarks/priority_latency.py)."""
        return time.time()

    @app.task(name="noop_capped", concurrency_limit=8)
    def noop_capped() -> None:
        """A no-op with a cluster-wide concurrency limit (the benchmark may change it)."""
        return None

    return noop


app = JobQueue()
noop = register(app)
