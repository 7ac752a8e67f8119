"""Acceptance 2: NOTIFY wakes an idle worker at once; polling covers a lost NOTIFY.

These tests print the measured delays; they assert only bounds that tell the
two paths apart (the poll interval is 30 s), never a performance figure.
"""

from __future__ import annotations

from typing import Any

from jobqueue.ids import new_id


def _start_delay(conn: Any, schema: str, job_id: str) -> float:
    row = conn.execute(
        f'SELECT extract(epoch FROM started_at - created_at) FROM "{schema}".jobs WHERE id = %s',
        (job_id,),
    ).fetchone()
    return float(row[0])


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
