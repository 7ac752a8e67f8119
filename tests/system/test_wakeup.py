"""Acceptance 2: NOTIFY wakes an idle worker at once; polling covers a lost NOTIFY.

These tests print the measured delays; they assert only bounds that tell the
two paths apart (the poll interval is 30 s), never a performance figure.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from jobqueue.ids import new_id
from jobqueue.sql import channels, lock_classes, queries
from tests.conftest import wait_for


def _start_delay(conn: Any, schema: str, job_id: str) -> float:
    row = conn.execute(
        f'SELECT extract(epoch FROM started_at - created_at) FROM "{schema}".jobs WHERE id = %s',
        (job_id,),
    ).fetchone()
    return float(row[0])


def _waiting_sessions(conn: Any, schema: str) -> set[int]:
    """The worker sessions flagged as waiting for NOTIFYs (``waiting.WaitFlag``)."""
    rows = conn.execute(
        "SELECT l.pid FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.mode = 'ShareLock' AND l.granted "
        "AND l.classid = %s::bigint::oid AND a.application_name LIKE 'jobqueue-worker%%'",
        (lock_classes(schema)["waiting"] & 0xFFFFFFFF,),
    ).fetchall()
    return {row[0] for row in rows}


def _assert_the_next_job_wakes(jq: Any, conn: Any, schema: str, when: str) -> None:
    """The next job starts long before the worker's 30 s poll: NOTIFY woke it."""
    result = jq.add.delay(2, 3)
    assert result.get(timeout=10) == 5
    delay = _start_delay(conn, schema, result.id)
    print(f"enqueue-to-start {when}, 30 s poll interval: {delay * 1000:.1f} ms")
    assert delay < 5, f"{when}, the worker waited for its poll: NOTIFY did not wake it"


def test_notify_wakes_an_idle_worker(jq: Any, schema: str, conn: Any, start_worker: Any) -> None:
    start_worker("--poll-interval", "30")
    jq.add.delay(0, 0).get(timeout=10)  # let the worker settle into its idle wait
    delays = []
    for i in range(5):
        result = jq.add.delay(i, i)
        assert result.get(timeout=10) == 2 * i
        delays.append(_start_delay(conn, schema, result.id))
    print(f"enqueue-to-start with a 30 s poll interval: {[f'{d * 1000:.1f} ms' for d in delays]}")
    assert max(delays) < 5, "the worker waited for its poll, so NOTIFY did not wake it"


def test_lost_notify_is_covered_by_polling(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    start_worker("--poll-interval", "2")
    jq.add.delay(0, 0).get(timeout=10)  # the worker is now idle, waiting for a hint or its poll
    job_id = new_id()
    # Written by hand with no pg_notify: the worker gets no hint at all.
    conn.execute(
        f'''WITH j AS (INSERT INTO "{schema}".jobs (id, task, args) VALUES (%s, 'add', '[20, 22]')
                       RETURNING id, queue, priority, run_at, task)
            INSERT INTO "{schema}".job_queue (job_id, queue, priority, run_at, task)
            SELECT * FROM j''',
        (job_id,),
    )
    assert jq.app.AsyncResult(job_id).get(timeout=20) == 42
    delay = _start_delay(conn, schema, job_id)
    print(f"lost NOTIFY picked up by polling after {delay:.2f} s (poll interval 2 s)")
    assert delay < 10


def test_countdown_job_waits_until_due(jq: Any, schema: str, conn: Any, start_worker: Any) -> None:
    start_worker("--poll-interval", "30")
    result = jq.add.apply_async((1, 2), countdown=1.5)
    assert result.get(timeout=20) == 3
    row = conn.execute(
        f"SELECT extract(epoch FROM started_at - created_at), "
        f'extract(epoch FROM started_at - run_at) FROM "{schema}".jobs WHERE id = %s',
        (result.id,),
    ).fetchone()
    print(f"countdown 1.5 s: started after {row[0]:.3f} s, {row[1] * 1000:.1f} ms past due")
    assert row[0] >= 1.5  # never early
    assert row[1] < 5  # the idle worker slept until due, not for its 30 s poll


def _notified_queue(listener: Any, timeout: float = 10.0) -> str:
    for notice in listener.notifies(timeout=timeout, stop_after=1):
        return str(notice.payload)
    raise AssertionError(f"no NOTIFY within {timeout}s")


def test_enqueue_notifies_only_while_a_worker_waits(jq: Any, dsn: str, schema: str) -> None:
    """A NOTIFY serialises commits cluster-wide, so an enqueue sends one only
    while some worker waits for its queue. Notices arrive in commit order, so
    the first one received tells which enqueue sent it."""
    statements = queries(schema)
    with (
        psycopg.connect(dsn, autocommit=True) as listener,
        psycopg.connect(dsn, autocommit=True) as waiter,
    ):
        listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channels(schema)["jobs"])))
        jq.add.apply_async((1, 1), queue="nobody_waits")
        flagged = waiter.execute(statements["worker_wait_flag"], {"queues": ["waited"]})
        assert [row[0] for row in flagged] == ["waited"]
        jq.add.apply_async((1, 2), queue="waited")
        assert _notified_queue(listener) == "waited"

        waiter.execute(statements["worker_wait_unflag"], {"queues": ["waited"]})
        jq.add.apply_async((1, 3), queue="waited")  # nobody waits any more: silent
        waiter.execute(statements["worker_wait_flag"], {"queues": ["nobody_waits"]})
        jq.add.apply_async((1, 4), queue="nobody_waits")
        assert _notified_queue(listener) == "nobody_waits"


def test_a_worker_starting_to_wait_sees_enqueues_in_flight(jq: Any, dsn: str, schema: str) -> None:
    """An enqueue that looked before the worker flagged itself sends no NOTIFY:
    the worker must not count itself settled (and sleep) until it commits."""
    statements = queries(schema)
    with (
        psycopg.connect(dsn) as producer,
        psycopg.connect(dsn, autocommit=True) as waiter,
    ):
        result = jq.add.apply_async((20, 22), connection=producer)  # not committed yet
        waiter.execute(statements["worker_wait_flag"], {"queues": ["default"]})
        settled = statements["worker_wait_settled"]
        assert waiter.execute(settled, {"queues": ["default"]}).fetchone() == (False,)
        producer.commit()
        assert waiter.execute(settled, {"queues": ["default"]}).fetchone() == (True,)
        # Once settled, one more claim sees the job the worker was never told of.
        waiting = waiter.execute(
            f'SELECT job_id::text FROM "{schema}".job_queue WHERE queue = %s', ("default",)
        ).fetchall()
        assert (result.id,) in waiting


def test_a_worker_busy_with_a_backlog_is_woken_when_idle_again(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    """Full claims make the worker stop asking for NOTIFYs; once the backlog is
    gone it asks again, so the next job still wakes it (its poll is 30 s)."""
    worker = start_worker("--concurrency", "1", "--poll-interval", "30")
    results = jq.app.enqueue_many(jq.add, [(i, i) for i in range(500)])
    assert results[-1].get(timeout=60) == 998
    done = f"SELECT count(*) FROM \"{schema}\".jobs WHERE state = 'SUCCESS'"
    wait_for(lambda: conn.execute(done).fetchone()[0] == 500, what="the backlog to drain")
    wait_for(
        lambda: _waiting_sessions(conn, schema), what="the drained worker to wait for NOTIFYs again"
    )
    _assert_the_next_job_wakes(jq, conn, schema, "after a backlog of 500")
    assert worker.proc.poll() is None


def test_an_idle_worker_is_woken_again_after_its_connections_drop(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    """Every worker connection dropped at once: the listener LISTENs again on a
    new one and wakes the claim loop, which reconnects and flags itself as
    waiting again, so the next job still wakes it (its poll is 30 s)."""
    worker = start_worker("--poll-interval", "30")
    jq.add.delay(0, 0).get(timeout=10)
    before = wait_for(lambda: _waiting_sessions(conn, schema), what="the worker to wait")
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name LIKE 'jobqueue-worker%%'"
    )
    wait_for(
        lambda: "connection lost" in worker.log or "claim failed" in worker.log,
        10,
        "the claim loop to notice",
    )
    wait_for(lambda: _waiting_sessions(conn, schema) - before, what="the new session to wait again")
    _assert_the_next_job_wakes(jq, conn, schema, "after the worker's connections dropped")
    assert worker.proc.poll() is None
