"""Atomic tasks: the task's writes and its job's completion commit together,
with real worker processes in both pools."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from jobqueue import AtomicError, chord, group, states
from jobqueue.atomic import slot_connection
from tests.conftest import wait_for

APP = "tests.apps_atomic:app"
POOLS = ["threads", "processes"]


def rows(conn: Any, schema: str, job_id: str | None = None) -> list[int]:
    where, params = ("WHERE job = %s", [job_id]) if job_id else ("", [])
    found = conn.execute(f'SELECT n FROM "{schema}".effects {where} ORDER BY n', params)
    return [n for (n,) in found.fetchall()]


@pytest.mark.parametrize("pool", POOLS)
def test_success_commits_writes_and_completion_together(
    pool: str, ja: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    start_worker("--pool", pool, "--concurrency", "2", app=APP)
    results = [ja.insert.delay(i) for i in range(20)]
    assert [r.get(timeout=30) for r in results] == list(range(20))
    assert rows(conn, schema) == list(range(20))
    # Recorded in the task's transaction: no lease left, nothing refused.
    assert conn.execute(f'SELECT count(*) FROM "{schema}".job_lease').fetchone() == (0,)


@pytest.mark.parametrize("pool", POOLS)
def test_failure_rolls_the_writes_back(
    pool: str, ja: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    start_worker("--pool", pool, app=APP)
    result = ja.insert_then_fail.delay(7)
    with pytest.raises(Exception, match="failed after writing 7"):
        result.get(timeout=30)
    assert result.state == states.FAILURE
    assert rows(conn, schema) == []


def test_each_retry_starts_from_nothing(ja: Any, schema: str, conn: Any, start_worker: Any) -> None:
    start_worker(app=APP)
    result = ja.flaky.delay(1)
    assert result.get(timeout=30) == 1
    assert rows(conn, schema, result.id) == [3]  # only the third attempt's write
    history = conn.execute(
        f'SELECT attempt, state FROM "{schema}".job_history WHERE job_id = %s ORDER BY attempt',
        [result.id],
    ).fetchall()
    assert history == [(1, states.RETRY), (2, states.RETRY), (3, states.SUCCESS)]


@pytest.mark.parametrize("pool", POOLS)
def test_sqlalchemy_session_shares_the_transaction(
    pool: str, ja: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    start_worker("--pool", pool, app=APP)
    ok = ja.orm.delay(10)
    assert ok.get(timeout=30) == 10
    assert rows(conn, schema, ok.id) == [10, 11]  # the savepoint's row and the pending one
    failed = ja.orm.delay(20, fail=True)
    with pytest.raises(RuntimeError, match="rolled back"):
        failed.get(timeout=30)
    assert rows(conn, schema, failed.id) == []


@pytest.mark.parametrize("how", ["method", "orm"])
def test_a_task_cannot_commit_its_transaction(
    how: str, ja: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    start_worker(app=APP)
    result = ja.commits_itself.delay(how)
    with pytest.raises(Exception, match=r"forbidden|commits with its job"):
        result.get(timeout=30)
    assert rows(conn, schema) == []


def test_a_swallowed_statement_error_fails_the_job(ja: Any, start_worker: Any) -> None:
    start_worker(app=APP)
    result = ja.swallows_error.delay()
    with pytest.raises(AtomicError, match=r"failed|ended"):
        result.get(timeout=30)


def test_a_task_that_is_not_atomic_has_no_connection(ja: Any, start_worker: Any) -> None:
    start_worker(app=APP)
    with pytest.raises(AtomicError, match="atomic=True"):
        ja.plain.delay().get(timeout=30)


def test_workflow_steps_start_in_the_same_transaction(
    ja: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    start_worker("--concurrency", "4", app=APP)
    result = chord(group(ja.insert.s(i) for i in range(5)), ja.total.s()).delay()
    assert result.get(timeout=30) == 10
    assert rows(conn, schema) == [0, 1, 2, 3, 4]
    then = (ja.insert.s(2) | ja.insert.s()).delay()  # a chain: the result flows on
    assert then.get(timeout=30) == 2


@pytest.mark.parametrize("pool", POOLS)
def test_hard_time_limit_rolls_back_and_the_worker_goes_on(
    pool: str, ja: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    start_worker("--pool", pool, "--concurrency", "2", app=APP)
    stuck = ja.slow.apply_async((60,), time_limit=1)
    with pytest.raises(Exception, match="time limit"):
        stuck.get(timeout=30)
    assert rows(conn, schema, stuck.id) == []
    # The lease was freed by the rollback, the completer was not blocked on it.
    assert ja.insert.delay(5).get(timeout=30) == 5


def test_terminate_rolls_back(ja: Any, schema: str, conn: Any, start_worker: Any) -> None:
    start_worker(app=APP)
    running = ja.slow.delay(60)
    wait_for(lambda: running.state == states.STARTED, 20, "the job to start")
    wait_for(lambda: rows(conn, schema) == [] and _in_transaction(conn), 20, "its transaction")
    ja.app.control.revoke(running.id, terminate=True)
    wait_for(lambda: running.state == states.REVOKED, 30, "the job to be revoked")
    assert rows(conn, schema) == []


@pytest.mark.parametrize("pool", POOLS)
def test_terminate_at_once_is_a_revocation_not_the_connection_error(
    pool: str, ja: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    """Revoked the moment it starts: ending its transaction makes the task's
    statement fail at once, and the job must still end REVOKED (the stop is
    marked before the transaction is ended), not FAILURE with AdminShutdown."""
    start_worker("--pool", pool, app=APP)
    for _ in range(3):
        running = ja.slow.delay(60)
        wait_for(lambda running=running: running.state == states.STARTED, 20, "a start")
        ja.app.control.revoke(running.id, terminate=True)
        wait_for(lambda running=running: running.ready(), 30, "the job to end")
        assert running.state == states.REVOKED, running.result
    assert rows(conn, schema) == []


def _in_transaction(conn: Any) -> bool:
    found = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name LIKE 'jobqueue-atomic %%' AND state <> 'idle'"
    ).fetchone()
    return bool(found and found[0])


def test_a_rescue_skips_a_lease_held_by_an_open_transaction(
    ja: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    """The worker is presumed dead (its row deleted, as a partition would do)
    while its atomic task is still in its transaction: the rescue must not
    take the job, which then commits once."""
    worker = start_worker(app=APP)
    running = ja.slow.delay(3)
    wait_for(lambda: _in_transaction(conn), 20, "its transaction")
    conn.execute(f'DELETE FROM "{schema}".workers')
    conn.execute("SET lock_timeout = '500ms'")  # the rescue must not even wait for it
    rescued = ja.app.store.rescue(conn)
    conn.execute("RESET lock_timeout")
    assert rescued[1] == 0  # skipped: its lease is locked by the open transaction
    assert running.get(timeout=30) is None
    assert running.state == states.SUCCESS and rows(conn, schema, running.id) == [0]
    assert conn.execute(
        f'SELECT attempts FROM "{schema}".jobs WHERE id = %s', [running.id]
    ).fetchone() == (1,)
    worker.terminate()


def test_apply_runs_in_a_transaction_of_its_own(ja: Any, schema: str, conn: Any) -> None:
    assert ja.insert.apply(args=(3,)).get() == 3
    assert rows(conn, schema) == [3]
    failed = ja.insert_then_fail.apply(args=(4,))
    assert failed.state == states.FAILURE
    assert rows(conn, schema) == [3]


def test_calling_an_atomic_task_directly_has_no_transaction(ja: Any) -> None:
    with pytest.raises(AtomicError, match="not running as a job"):
        ja.insert(1)


def test_attempt_committed_reads_the_lease_and_the_state(
    ja: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    """What a worker asks when its commit went unanswered."""
    start_worker(app=APP)
    done = ja.insert.delay(1)
    done.get(timeout=30)
    store = ja.app.store
    assert store.attempt_committed(conn, done.id, 1) is True
    failed = ja.insert_then_fail.delay(2)
    with pytest.raises(ValueError):
        failed.get(timeout=30)
    assert store.attempt_committed(conn, failed.id, 1) is False


def test_slot_connection_is_reopened_after_it_broke(ja: Any, conn: Any) -> None:
    app = ja.app
    results: list[Any] = []

    def slot() -> None:
        first = slot_connection(app)
        conn.execute("SELECT pg_terminate_backend(%s)", [first.info.backend_pid])
        with pytest.raises(psycopg.OperationalError):
            first.execute("SELECT 1")
        second = slot_connection(app)
        results.append((first is second, second.execute("SELECT 1").fetchone()))
        second.close()

    thread = threading.Thread(target=slot)
    thread.start()
    thread.join(30)
    assert results == [(False, (1,))]


def test_async_def_cannot_be_atomic(ja: Any) -> None:
    with pytest.raises(TypeError, match="atomic=True is for `def` tasks"):

        @ja.app.task(name="atomic.async", atomic=True)
        async def coro() -> None: ...


def test_events_of_atomic_jobs_reach_a_listener(
    ja: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    """The completion inside the task's transaction meets a listener (the
    form without events refuses, in a savepoint): the task's writes survive
    that retry, and the event is sent with the commit."""
    start_worker(app=APP)
    assert ja.insert.delay(0).get(timeout=30) == 0  # the worker settled on the quiet form
    with ja.app.events.stream(types=["task-succeeded"], timeout=30) as stream:
        result = ja.insert.delay(1)
        assert next(stream)["uuid"] == result.id
    assert result.get(timeout=30) == 1
    assert rows(conn, schema, result.id) == [1]
