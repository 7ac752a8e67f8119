"""Tasks of the self.replace() and add_to_chord() tests (tests/integration/
test_replace.py, tests/system/test_replace_kill.py): workers load
``tests.apps_replace:app``; a test builds its own app on the same schema."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace
from typing import Any

from psycopg import sql

from jobqueue import JobQueue, chain, chord, group


class ReplacementError(Exception):
    """Raised by a replacement, importable on both sides."""


def build(app: JobQueue) -> SimpleNamespace:
    @app.task(name="add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="tsum")
    def tsum(numbers: list[int]) -> int:
        return sum(numbers)

    @app.task(name="identity")
    def identity(value: Any) -> Any:
        return value

    @app.task(name="fail", max_retries=0)
    def fail(*args: Any) -> None:
        raise ReplacementError(f"failed with {list(args)}")

    @app.task(name="record_error")
    def record_error(failed_job_id: str, tag: str) -> str:
        return f"{tag}: {failed_job_id}"

    @app.task(name="become", bind=True)
    def become(self: Any, x: int, kind: str) -> Any:
        """Replaces itself with a canvas of ``kind`` built on ``x``."""
        replacements = {
            "task": add.s(x, 100),
            "chain": add.s(x, 1) | add.s(10),
            "group": group(add.s(x, 1), add.s(x, 2)),
            "chord": chord([add.s(x, x), add.s(1, 1)], tsum.s()),
            "fail": fail.s(x),
            "become": become.s(x + 1, "chain"),  # replaced twice
        }
        raise self.replace(replacements[kind])

    @app.task(name="grow", bind=True)
    def grow(self: Any, x: int, extra: int) -> int:
        """A chord header member that adds ``extra`` members to its chord."""
        for i in range(extra):
            self.add_to_chord(add.s(x, 1000 * (i + 1)))
        return x

    @app.task(name="grow_late", bind=True)
    def grow_late(self: Any, chord_id: str) -> str:
        """add_to_chord() misuse, reported as a result: the error's type and message."""
        try:
            self.add_to_chord(add.s(1, 1))
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return "added"

    @app.task(name="spread", bind=True)
    def spread(self: Any, x: int, extra: int) -> int:
        """A plain group's member that adds ``extra`` members to its group."""
        for i in range(extra):
            self.add_to_group(add.s(x, 1000 * (i + 1)))
        return x

    @app.task(name="spread_misused", bind=True)
    def spread_misused(self: Any) -> str:
        """add_to_group() misuse, reported as a result: the error's type and message."""
        try:
            self.add_to_group(add.s(1, 1))
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return "added"

    @app.task(name="mark", bind=True)
    def mark(self: Any, table: str, tag: str) -> str:
        """One row per run (idempotent per job: a job run twice keeps one row)."""
        schema_name, _, table_name = table.partition(".")
        statement = sql.SQL(
            "INSERT INTO {} (job, tag) VALUES (%s, %s) ON CONFLICT (job) DO NOTHING"
        ).format(sql.Identifier(schema_name, table_name))
        with app.db.pool().connection() as conn:
            conn.execute(statement, [self.request.id, tag])
        return tag

    @app.task(name="swap", bind=True)
    def swap(self: Any, table: str, tag: str, pause: float = 0.0) -> Any:
        """After ``pause`` seconds, replaces itself with ``mark(table, tag)``
        then ``identity(tag)`` (the kill test)."""
        time.sleep(pause)
        raise self.replace(chain(mark.si(table, tag), identity.si(tag)))

    @app.task(name="swap_gated", bind=True)
    def swap_gated(self: Any, table: str, tag: str, gate: str) -> Any:
        """``swap`` once the file ``gate`` is gone."""
        while os.path.exists(gate):
            time.sleep(0.005)
        raise self.replace(chain(mark.si(table, tag), identity.si(tag)))

    return SimpleNamespace(app=app, **app.tasks)


app = JobQueue()
tasks = build(app)
