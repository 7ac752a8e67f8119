"""Atomic tasks (``@app.task(atomic=True)``) for the tests: each writes into a
table of the test's schema through its job's transaction
(``-A tests.apps_atomic:app``)."""

from __future__ import annotations

import contextlib
import random
import time
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from psycopg import sql

from jobqueue import JobQueue


def _table(app: JobQueue) -> sql.Composed:
    return sql.SQL("{}.effects").format(sql.Identifier(app.conf.schema))


def build(app: JobQueue) -> SimpleNamespace:
    @app.task(name="atomic.insert", atomic=True, bind=True, max_retries=None)
    def insert(self: Any, n: int, pause: float = 0.0) -> int:
        """One row per job, then (for the kill tests) a random pause, so a kill
        can land before, during or after the writes and the commit."""
        statement = sql.SQL("INSERT INTO {} (job, n) VALUES (%s, %s)").format(_table(app))
        self.connection.execute(statement, [self.request.id, n])
        if pause:
            time.sleep(random.uniform(0, pause))
        return n

    @app.task(name="atomic.insert_then_fail", atomic=True, bind=True, max_retries=0)
    def insert_then_fail(self: Any, n: int) -> None:
        statement = sql.SQL("INSERT INTO {} (job, n) VALUES (%s, %s)").format(_table(app))
        self.connection.execute(statement, [self.request.id, n])
        raise ValueError(f"failed after writing {n}")

    @app.task(name="atomic.flaky", atomic=True, bind=True, max_retries=3)
    def flaky(self: Any, n: int) -> int:
        """Writes on every attempt, fails the first two: one row survives."""
        statement = sql.SQL("INSERT INTO {} (job, n) VALUES (%s, %s)").format(_table(app))
        self.connection.execute(statement, [self.request.id, self.request.attempt])
        if self.request.attempt < 3:
            raise self.retry(countdown=0)
        return n

    @app.task(name="atomic.orm", atomic=True, bind=True, max_retries=0)
    def orm(self: Any, n: int, fail: bool = False) -> int:
        """Through SQLAlchemy: a committed nested unit (a savepoint) and pending
        changes never flushed by the task; both are written with the job."""
        table = sa.table("effects", sa.column("job"), sa.column("n"), schema=app.conf.schema)
        self.session.execute(sa.insert(table).values(job=self.request.id, n=n))
        self.session.commit()  # a savepoint released, not the transaction
        self.session.execute(sa.insert(table).values(job=self.request.id, n=n + 1))
        if fail:
            raise RuntimeError("rolled back, with both rows")
        return n

    @app.task(name="atomic.commits_itself", atomic=True, bind=True, max_retries=0)
    def commits_itself(self: Any, how: str) -> None:
        statement = sql.SQL("INSERT INTO {} (job, n) VALUES (%s, 0)").format(_table(app))
        self.connection.execute(statement, [self.request.id])
        if how == "method":
            self.connection.commit()
        elif how == "orm":
            self.session.connection().commit()

    @app.task(name="atomic.swallows_error", atomic=True, bind=True, max_retries=0)
    def swallows_error(self: Any) -> str:
        """Catches a failed statement and returns: its transaction is aborted,
        so the job fails instead of reporting success over lost writes."""
        with contextlib.suppress(Exception):
            self.connection.execute("SELECT 1/0")
        return "pretends it worked"

    @app.task(name="atomic.slow", atomic=True, bind=True, max_retries=0)
    def slow(self: Any, seconds: float) -> None:
        statement = sql.SQL("INSERT INTO {} (job, n) VALUES (%s, 0)").format(_table(app))
        self.connection.execute(statement, [self.request.id])
        self.connection.execute("SELECT pg_sleep(%s)", [seconds])

    @app.task(name="atomic.batch_done", atomic=True, bind=True, max_retries=None)
    def batch_done(self: Any, counts: dict[str, Any]) -> dict[str, Any]:
        """A batch's on_complete: one row (n: the batch's total) per run."""
        statement = sql.SQL("INSERT INTO {} (job, n) VALUES (%s, %s)").format(_table(app))
        self.connection.execute(statement, [self.request.id, counts["total"]])
        return counts

    @app.task(name="atomic.total")
    def total(values: list[int]) -> int:
        return sum(values)

    @app.task(name="atomic.plain", bind=True)
    def plain(self: Any) -> str:
        return str(self.connection)  # not atomic: AtomicError

    found = {name.removeprefix("atomic."): task for name, task in app.tasks.items()}
    return SimpleNamespace(app=app, **found)


app = JobQueue()
tasks = build(app)
