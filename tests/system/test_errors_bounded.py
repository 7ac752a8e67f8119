"""What a worker stores for an error is bounded and always storable, and keeps
the error's type: a huge message or traceback is cut (saying so), a lone
surrogate is replaced, a ``__str__`` that raises gives a placeholder."""

from __future__ import annotations

import json
import queue
from typing import Any

import psycopg
import pytest

from jobqueue import JobQueue, states
from jobqueue.serialization import MAX_ERROR_TEXT, dump_error, loads, rebuild_error
from jobqueue.worker.job import Job
from jobqueue.worker.outcome import Outcome
from jobqueue.worker.pools.threads import ThreadPool
from tests.apps import CustomError


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_a_huge_message_and_traceback_are_cut_saying_so_and_keep_the_type() -> None:
    size = 5_000_000
    stored = dump_error(_raised(CustomError("x" * size)))
    assert len(stored) < 3 * MAX_ERROR_TEXT
    error = loads(stored)
    assert (error["type"], error["module"]) == ("CustomError", "tests.apps")
    assert error["message"] == "x" * MAX_ERROR_TEXT + f"… [truncated: {size} characters in all]"
    assert error["args"] is None  # too large to keep; the message stands for them
    trace = error["traceback"]
    assert trace.startswith("Traceback (most recent call last):")
    assert "[truncated:" in trace and trace.endswith("x\n")
    assert len(trace) < MAX_ERROR_TEXT + 100
    rebuilt = rebuild_error(error)
    assert isinstance(rebuilt, CustomError) and str(rebuilt) == error["message"]


def test_small_errors_are_stored_whole() -> None:
    error = loads(dump_error(_raised(CustomError("short", 2))))
    assert (error["message"], error["args"]) == ("('short', 2)", ["short", 2])
    assert "[truncated" not in error["traceback"]


def test_a_lone_surrogate_in_an_error_is_replaced_and_postgresql_stores_it(
    conn: psycopg.Connection[Any],
) -> None:
    # A lone surrogate, and a pair written as two code points (a character).
    stored = dump_error(_raised(CustomError("bad \ud800 text \ud83d\ude00")))
    stored.encode("utf-8")  # raised UnicodeEncodeError before
    error = loads(stored)
    assert error["type"] == "CustomError"
    assert error["message"] == "bad \ufffd text \U0001f600"
    assert error["args"] == ["bad \ufffd text \U0001f600"]
    row = conn.execute("SELECT %s::jsonb ->> 'type', %s::jsonb ->> 'message'", (stored, stored))
    assert row.fetchone() == ("CustomError", "bad \ufffd text \U0001f600")


def test_an_error_whose_str_raises_keeps_its_type() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    error = loads(dump_error(_raised(Unprintable("x"))))
    assert error["type"] == "test_an_error_whose_str_raises_keeps_its_type.<locals>.Unprintable"
    assert error["message"] == "<Unprintable object: str() failed>"


def test_a_task_error_with_a_lone_surrogate_leaves_a_pool_storable_and_typed(
    conn: psycopg.Connection[Any],
) -> None:
    """The whole way through a slot: the outcome's error is text PostgreSQL takes
    (producers cannot send such a message to a worker task: neither psycopg nor
    jsonb accept a lone surrogate, so the task makes its own)."""
    app = JobQueue("postgresql://unused.invalid/none", auto_migrate=False)

    @app.task(name="surrogate")
    def surrogate() -> None:
        raise CustomError("text \udc80 from a bad decode")

    outcomes: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
    pool = ThreadPool(app, size=1, hostname="test", report=outcomes.put)
    pool.start()
    row = ("s1", "surrogate", "default", "[]", "{}", "{}", 1, None, None, None, False, False)
    pool.submit(Job.from_row(row))
    outcome = outcomes.get(timeout=10)
    assert outcome.state == states.FAILURE
    stored = conn.execute("SELECT %s::jsonb", (outcome.error,)).fetchone()
    assert stored is not None
    assert stored[0]["type"] == "CustomError"
    assert stored[0]["message"] == "text \ufffd from a bad decode"


def test_a_stored_traceback_starts_at_the_task_not_at_the_worker_that_called_it() -> None:
    """The worker's own frames above the task (the slot that called it) are
    noise on a failed job's page; what the task called stays, jobqueue's
    frames included."""
    app = JobQueue("postgresql://unused.invalid/none", auto_migrate=False)

    @app.task(name="deep")
    def deep() -> None:
        json.loads("{not json")

    outcomes: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
    pool = ThreadPool(app, size=1, hostname="test", report=outcomes.put)
    pool.start()
    try:
        row = ("d1", "deep", "default", "[]", "{}", "{}", 1, None, None, None, False, False)
        pool.submit(Job.from_row(row))
        outcome = outcomes.get(timeout=10)
    finally:
        pool.close()
    assert outcome.state == states.FAILURE and outcome.error is not None
    trace = loads(outcome.error)["traceback"]
    frames = [line for line in trace.splitlines() if line.startswith('  File "')]
    assert frames[0].startswith(f'  File "{__file__}"'), trace  # the task itself
    assert not any("jobqueue/worker/" in line for line in frames), trace
    assert any("json/decoder.py" in line for line in frames), trace  # what it called stays
    assert trace.startswith("Traceback (most recent call last):")


@pytest.mark.parametrize("pool", ["threads"])
def test_a_task_error_with_a_20_mb_message_is_stored_cut_with_its_type(
    pool: str, jq: Any, start_worker: Any, conn: psycopg.Connection[Any], schema: str
) -> None:
    size = 20_000_000
    start_worker("--pool", pool, "--concurrency", "1")
    result = jq.boom.delay("y" * size)
    with pytest.raises(CustomError) as raised:
        result.get(timeout=120)
    assert str(raised.value).endswith(f"… [truncated: {size} characters in all]")
    row = conn.execute(
        f"SELECT state, length(error::text), error -> 'args', error ->> 'traceback' "
        f'FROM "{schema}".jobs WHERE id = %s',
        (result.id,),
    ).fetchone()
    assert row is not None
    state, length, args, trace = row
    assert state == states.FAILURE
    assert length < 3 * MAX_ERROR_TEXT  # was three copies of the 20 MB message
    assert args is None
    assert "[truncated:" in trace and len(trace) < MAX_ERROR_TEXT + 100
    assert jq.add.delay(2, 2).get(timeout=30) == 4
