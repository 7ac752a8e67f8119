"""Batches: jobs added in one or many transactions and processes, counted
where they finish (no polling), with callbacks spawned exactly once; real
workers."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from jobqueue import BatchClosedError, JobQueue, states
from jobqueue.ids import new_id
from jobqueue.sql import load
from jobqueue.worker.outcome import Outcome, outcome_params
from tests.apps import build
from tests.conftest import wait_for

FAST = ("--heartbeat-interval", "0.5")


def _callbacks(conn: Any, schema: str, batch_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Every callback job spawned for the batch: (task, the counts it was given)."""
    rows = conn.execute(
        f"SELECT task, args -> 0 FROM \"{schema}\".jobs WHERE args -> 0 ->> 'batch' = %s "
        "ORDER BY task",
        [batch_id],
    ).fetchall()
    return [(task, counts) for task, counts in rows]


def _counts(batch_id: str, succeeded: int, failed: int = 0, revoked: int = 0) -> dict[str, Any]:
    return {
        "batch": batch_id,
        "total": succeeded + failed + revoked,
        "succeeded": succeeded,
        "failed": failed,
        "revoked": revoked,
    }


def _add_from_another_process(dsn: str, schema: str, batch_id: str, n: int) -> None:
    app = JobQueue(dsn, schema=schema, auto_migrate=False)
    try:
        tasks = build(app)
        batch = app.Batch(batch_id)
        for i in range(n):
            batch.add(tasks.add, i, i)
    finally:
        app.close()


def test_adds_across_transactions_and_processes_then_on_complete_once(
    jq: Any, dsn: str, schema: str, conn: Any, start_worker: Any
) -> None:
    batch = jq.app.batch(
        on_complete=jq.echo.s("complete"),
        on_success=jq.echo.s("success"),
        on_failure=jq.echo.s("failure"),
    )
    first = batch.add(jq.add, 1, 2)  # its own transaction
    with psycopg.connect(dsn) as own:  # several jobs in the caller's transaction
        more = batch.add_many(jq.add, [(i, 1) for i in range(5)], connection=own)
        signed = batch.add(jq.add.s(10), 5, connection=own)
        own.commit()
    child = multiprocessing.get_context("spawn").Process(
        target=_add_from_another_process, args=(dsn, schema, batch.id, 3)
    )
    child.start()
    child.join(60)
    assert child.exitcode == 0
    before = batch.progress()
    assert (before.state, before.total, before.pending, before.closed) == ("OPEN", 10, 10, False)

    start_worker("--concurrency", "4", *FAST)
    assert first.get(timeout=30) == 3 and signed.get(timeout=30) == 15
    assert [r.get(timeout=30) for r in more] == [1, 2, 3, 4, 5]
    wait_for(lambda: batch.progress().pending == 0, 30, "every member counted")
    assert batch.progress().completed is False  # not closed yet: no callback
    assert _callbacks(conn, schema, batch.id) == []

    assert batch.close() == "DONE"  # every member settled: callbacks now
    counts = _counts(batch.id, 10)
    assert batch.on_complete is not None and batch.on_success is not None
    assert batch.on_complete.get(timeout=30) == {"args": [counts, "complete"], "kwargs": {}}
    assert batch.on_success.get(timeout=30) == {"args": [counts, "success"], "kwargs": {}}
    assert batch.close() == "DONE"  # closing again changes nothing
    assert _callbacks(conn, schema, batch.id) == [("echo", counts), ("echo", counts)]
    done = batch.progress()
    assert done == ("DONE", 10, 0, 10, 0, 0, True, True)
    assert jq.app.AsyncResult(batch.on_failure.id).state == states.PENDING  # never spawned


def test_closed_before_members_finish_with_failures_and_a_revoked_member(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    batch = jq.app.batch(
        on_complete=jq.echo.s("complete"),
        on_success=jq.echo.s("success"),
        on_failure=jq.echo.s("failure"),
    )
    good = [batch.add(jq.add, i, i) for i in range(3)]
    bad = [batch.add(jq.boom, "no") for _ in range(2)]
    later = batch.add(jq.add.s(1, 1).set(countdown=600))
    assert batch.close() == "CLOSED"
    with pytest.raises(BatchClosedError, match="closed"):
        batch.add(jq.add, 1, 1)
    later.revoke()  # a waiting member revoked: counted by advance()
    start_worker("--concurrency", "2", *FAST)
    assert [r.get(timeout=30) for r in good] == [0, 2, 4]
    for r in bad:
        r.get(timeout=30, propagate=False)
    counts = _counts(batch.id, 3, failed=2, revoked=1)
    wait_for(lambda: batch.progress().completed, 30, "the batch to complete")
    assert batch.on_complete.get(timeout=30)["args"] == [counts, "complete"]
    assert batch.on_failure.get(timeout=30)["args"] == [counts, "failure"]
    assert _callbacks(conn, schema, batch.id) == [("echo", counts), ("echo", counts)]
    assert batch.progress() == ("DONE", 6, 0, 3, 2, 1, True, True)
    # Nothing joined after the close: the refused add wrote no job either.
    assert conn.execute(
        f'SELECT count(*) FROM "{schema}".all_jobs WHERE task = %s', ["add"]
    ).fetchone() == (4,)


def test_a_rolled_back_add_leaves_no_member_and_an_empty_batch_completes_at_once(
    jq: Any, dsn: str, schema: str, conn: Any, start_worker: Any
) -> None:
    batch = jq.app.batch(on_complete=jq.echo.s())
    with psycopg.connect(dsn) as own:
        batch.add(jq.add, 1, 1, connection=own)
        assert batch.progress().total == 0  # not committed: not seen
        own.rollback()
    assert batch.progress().total == 0
    assert conn.execute(f'SELECT count(*) FROM "{schema}".batch_members').fetchone() == (0,)
    start_worker(*FAST)
    assert batch.close() == "DONE"
    assert batch.on_complete.get(timeout=30) == {"args": [_counts(batch.id, 0)], "kwargs": {}}
    with pytest.raises(BatchClosedError):
        batch.add(jq.add, 1, 1)


def test_sql_functions_and_the_progress_view(
    jq: Any, dsn: str, schema: str, conn: Any, start_worker: Any
) -> None:
    s = f'"{schema}"'
    with psycopg.connect(dsn, autocommit=True) as psql:
        batch_id = str(psql.execute(f"SELECT {s}.batch_open()").fetchone()[0])
        joined = psql.execute(
            f"SELECT {s}.batch_add(%s, ARRAY[{s}.enqueue('add', '[1, 2]'), "
            f"{s}.enqueue('boom', '[\"x\"]')])",
            [batch_id],
        ).fetchone()
        assert joined == (2,)
        row = psql.execute(
            f"SELECT state, total, pending, closed, completed FROM {s}.batch_progress "
            "WHERE id = %s",
            [batch_id],
        ).fetchone()
        assert row == ("OPEN", 2, 2, False, False)
        assert psql.execute(f"SELECT {s}.batch_close(%s)", [batch_id]).fetchone() == ("CLOSED",)
        with pytest.raises(psycopg.Error, match="is closed") as refused:
            psql.execute(f"SELECT {s}.batch_add(%s, ARRAY[{s}.enqueue('add', '[1, 1]')])",
                         [batch_id])  # fmt: skip
        assert refused.value.sqlstate == "JQ005"
        with pytest.raises(psycopg.Error, match="no batch"):
            psql.execute(f"SELECT {s}.batch_close('01a24cee-0000-7000-8000-000000000000')")
    start_worker(*FAST)
    batch = jq.app.Batch(batch_id)
    wait_for(lambda: batch.progress().completed, 30, "the batch to complete")
    assert batch.progress() == ("DONE", 2, 0, 1, 1, 0, True, True)
    assert batch.on_complete is None  # opened without callbacks


def test_a_member_that_finished_before_it_joined_and_a_deleted_one_count(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    start_worker(*FAST)
    done = jq.add.delay(2, 2)
    assert done.get(timeout=30) == 4
    waiting = jq.add.apply_async((1, 1), countdown=600)
    batch = jq.app.batch(on_complete=jq.echo.s())
    with jq.app.db.pool().connection() as c, c.transaction():
        jq.app.store.batch_add(c, batch.id, [done.id, waiting.id])
    assert batch.progress()[:6] == ("OPEN", 2, 1, 1, 0, 0)  # the finished one at once
    assert batch.close() == "CLOSED"
    for table, column in (("job_queue", "job_id"), ("jobs", "id")):  # deleted, as purged
        conn.execute(f'DELETE FROM "{schema}".{table} WHERE {column} = %s', [waiting.id])
    wait_for(lambda: batch.progress().completed, 30, "the sweep to count the deleted member")
    assert batch.on_complete.get(timeout=30)["args"] == [_counts(batch.id, 1, revoked=1)]


def test_the_completion_counts_in_its_own_transaction(jq: Any, start_worker: Any) -> None:
    """Not the sweep: with a heartbeat (and so a maintenance round) a minute
    apart, each member is counted by the statement that completed it."""
    start_worker("--heartbeat-interval", "60", "--lease-ttl", "120")
    batch = jq.app.batch()
    for i in range(5):
        assert batch.add(jq.add, i, 1).get(timeout=30) == i + 1
        assert batch.progress()[:4] == ("OPEN", i + 1, 0, i + 1)
    failed = batch.add(jq.boom, "no")
    failed.get(timeout=30, propagate=False)
    assert batch.progress()[:6] == ("OPEN", 6, 0, 5, 1, 0)
    assert batch.close() == "DONE"


def test_close_waits_for_an_open_add_and_a_member_that_finished_meanwhile_counts(
    jq: Any, dsn: str, schema: str, start_worker: Any
) -> None:
    """A job enqueued earlier joins in a transaction that stays open while it
    finishes: its completion cannot see the membership. close() waits for
    that transaction (its FOR KEY SHARE); the maintenance round counts the
    member, and the batch completes."""
    start_worker(*FAST)
    early = jq.sleep.delay(0.2)
    batch = jq.app.batch(on_complete=jq.echo.s())
    with psycopg.connect(dsn) as own, psycopg.connect(dsn, autocommit=True) as watch:
        batch.add_many(jq.add, [(1, 1)], connection=own)
        jq.app.store.batch_add(own, batch.id, [early.id])
        assert early.get(timeout=30) == 0.2  # finished, the add still open
        closed: list[str] = []
        closer = threading.Thread(target=lambda: closed.append(batch.close()))
        closer.start()
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE '%%batch_close%%'"
        )
        wait_for(lambda: watch.execute(waiting).fetchone()[0] == 1, 30, "close to wait")
        assert closed == []
        own.commit()
        closer.join(30)
    assert closed == ["CLOSED"]  # the early member is not counted yet
    counts = _counts(batch.id, 2)
    assert batch.on_complete.get(timeout=30) == {"args": [counts], "kwargs": {}}
    assert batch.progress() == ("DONE", 2, 0, 2, 0, 0, True, True)


def test_refused_adds_write_nothing(jq: Any, schema: str, conn: Any) -> None:
    batch = jq.app.batch()
    ghost = "01a24cee-0000-7000-8000-000000000000"
    with pytest.raises(ValueError, match="does not exist"), jq.app.db.pool().connection() as c:
        batch._join(c, [ghost])
    with pytest.raises(ValueError, match="no batch"):
        jq.app.Batch(ghost).add(jq.add, 1, 1)
    with pytest.raises(TypeError, match="without callbacks"):
        batch.add(jq.add.s(1, 1).set(link=jq.add.s(2)))
    member = batch.add(jq.add, 1, 1)
    other = jq.app.batch()
    with (
        pytest.raises(ValueError, match="belongs to a batch already"),
        jq.app.db.pool().connection() as c,
        c.transaction(),
    ):
        other._join(c, [member.id])
    assert batch.progress().total == 1 and other.progress().total == 0
    with pytest.raises(ValueError, match="exists already"):
        jq.app.batch(batch_id=batch.id)
    assert jq.app.batch(batch_id=ghost).id == ghost  # an id of one's choosing
    assert conn.execute(
        f'SELECT count(*) FROM "{schema}".all_jobs WHERE task = %s', ["add"]
    ).fetchone() == (1,)


def test_a_cancelled_member_counts_at_once_without_any_worker(
    jq: Any, schema: str, conn: Any
) -> None:
    """The operations (cancel_jobs: revoke_waiting()) count members in their
    own transaction: no worker, so no maintenance round, is needed."""
    batch = jq.app.batch(on_complete=jq.echo.s(), on_failure=jq.echo.s("failure"))
    members = batch.add_many(jq.add, [(1, 1), (2, 2)])
    assert jq.app.control.cancel([m.id for m in members]) == 2
    assert batch.progress() == ("OPEN", 2, 0, 0, 0, 2, False, False)
    assert batch.close() == "DONE"
    assert _callbacks(conn, schema, batch.id) == [("echo", _counts(batch.id, 0, revoked=2))] * 2
    assert batch.on_failure is not None and batch.on_failure.state == states.PENDING  # enqueued


def test_async_add_close_and_progress(
    jq: Any, dsn: str, schema: str, conn: Any, start_worker: Any
) -> None:
    batch = jq.app.batch(on_complete=jq.echo.s())

    async def produce() -> tuple[list[Any], Any]:
        one = await batch.aadd(jq.add, 1, 2)
        many = await batch.aadd_many(jq.add, [(2, 2), (3, 3)])
        async with await psycopg.AsyncConnection.connect(dsn) as own:
            rolled_back = await batch.aadd(jq.add.s(9, 9), connection=own)
            await own.rollback()
        progress = await batch.aprogress()
        assert progress[:3] == ("OPEN", 3, 3)
        assert await batch.aclose() == "CLOSED"
        with pytest.raises(BatchClosedError):
            await batch.aadd("add", 1, 1)
        return [one, *many], rolled_back

    members, rolled_back = asyncio.run(produce())
    start_worker(*FAST)
    assert [m.get(timeout=30) for m in members] == [3, 4, 6]
    assert batch.on_complete.get(timeout=30) == {"args": [_counts(batch.id, 3)], "kwargs": {}}
    assert asyncio.run(batch.aprogress()) == ("DONE", 3, 0, 3, 0, 0, True, True)
    never = f'SELECT count(*) FROM "{schema}".all_jobs WHERE id = %s'
    assert conn.execute(never, [rolled_back.id]).fetchone() == (0,)  # rolled back


def test_members_completed_by_a_worker_of_0018_are_counted_by_the_sweep(
    jq: Any, dsn: str, schema: str, start_worker: Any
) -> None:
    """During the rollout a worker of 0018 completes members with its own
    statement, which counts none; a worker of this release counts them on
    its maintenance round, and the batch completes once."""
    releases = Path(__file__).parent.parent / "migrations" / "releases"
    old = load((releases / "0018.sql").read_text(), schema)
    batch = jq.app.batch(on_complete=jq.echo.s())
    members = batch.add_many(jq.add, [(1, 1), (2, 2)])
    assert batch.close() == "CLOSED"
    worker_id = new_id()
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(
            old["worker_register"],
            {
                "id": worker_id,
                "hostname": "old",
                "pid": 0,
                "queues": ["default"],
                "concurrency": 8,
                "version": "0018",
                "lease_ttl": 300,
                "tasks": None,
                "pool": "threads",
            },
        )
        claim = {
            "queues": ["default"],
            "limit": 50,
            "worker_id": worker_id,
            "revision": 18,
            "skip_tasks": [],
        }
        rows = c.execute(old["job_claim"], claim).fetchall()
        done = [Outcome(r[0], r[6], states.SUCCESS, result="0") for r in rows]
        assert len(done) == 2
        c.execute(old["job_complete_many"], outcome_params(done, worker_id))
    assert [m.state for m in members] == [states.SUCCESS] * 2
    assert batch.progress()[:4] == ("CLOSED", 2, 2, 0)  # not counted by 0018's statement
    start_worker(*FAST)
    wait_for(lambda: batch.progress().completed, 30, "the sweep to count them")
    assert batch.on_complete.get(timeout=30) == {"args": [_counts(batch.id, 2)], "kwargs": {}}


def test_retention_deletes_completed_batches_past_their_age(
    jq: Any, schema: str, conn: Any
) -> None:
    from jobqueue.maintenance import Retention

    done, still_open = jq.app.batch(), jq.app.batch()
    assert done.close() == "DONE"  # empty: completes at once
    jq.app.conf.result_expires = jq.app.conf.failed_result_expires = 0.01
    conn.execute(
        f"UPDATE \"{schema}\".batches SET finished_at = now() - interval '1 minute' WHERE id = %s",
        [done.id],
    )
    with jq.app.db.connect() as own:
        Retention(jq.app.store, jq.app.conf).prune(own)
    left = conn.execute(f'SELECT id::text FROM "{schema}".batches').fetchall()
    assert left == [(still_open.id,)]
