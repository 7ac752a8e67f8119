"""One row per enqueue: a delayed job waits in job_queue with its arguments and
gets its record in jobs from the claim that first takes it (migration 0007)."""

from __future__ import annotations

from typing import Any

import pytest

from jobqueue import DuplicateJobError, states


def _rows(conn: Any, schema: str, table: str, column: str, job_id: str) -> int:
    row = conn.execute(
        f'SELECT count(*) FROM "{schema}".{table} WHERE {column} = %s', (job_id,)
    ).fetchone()
    return int(row[0])


def test_a_delayed_job_is_one_row_until_claimed_then_a_record(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    waiting = jq.echo.apply_async((1, "two"), {"k": [3]}, expires=3600)
    named = jq.add.apply_async((2, 3), task_id="0190a0a0-0000-7000-8000-0000000001a1")
    assert _rows(conn, schema, "jobs", "id", waiting.id) == 0
    assert _rows(conn, schema, "jobs", "id", named.id) == 1  # a caller's id: recorded at once
    created_at, expires_at = conn.execute(
        f'SELECT created_at, expires_at FROM "{schema}".job_queue WHERE job_id = %s',
        (waiting.id,),
    ).fetchone()
    # Every reader sees the waiting job as PENDING with its arguments.
    assert waiting.state == states.PENDING
    assert conn.execute(
        f'SELECT state, args, kwargs, attempts FROM "{schema}".all_jobs WHERE id = %s',
        (waiting.id,),
    ).fetchone() == ("PENDING", [1, "two"], {"k": [3]}, 0)
    pending = conn.execute(
        f'SELECT pending FROM "{schema}".task_stats WHERE task = %s', (jq.echo.name,)
    ).fetchone()
    assert pending == (1,)

    start_worker()  # one claim may take both kinds of waiting job
    assert waiting.get(timeout=30) == {"args": [1, "two"], "kwargs": {"k": [3]}}
    assert named.get(timeout=30) == 5
    record = conn.execute(
        f"SELECT state, args, kwargs, attempts, created_at, expires_at, started_at >= created_at "
        f'FROM "{schema}".jobs WHERE id = %s',
        (waiting.id,),
    ).fetchone()
    assert record == ("SUCCESS", [1, "two"], {"k": [3]}, 1, created_at, expires_at, True)
    assert _rows(conn, schema, "job_queue", "job_id", waiting.id) == 0
    assert _rows(conn, schema, "all_jobs", "id", waiting.id) == 1


def test_an_id_is_refused_whether_its_job_waits_in_one_row_or_has_run(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    """job_insert_recorded (a caller's id, and the retry of a one-row insert whose
    commit reply was lost) must find the id in either table."""
    first = jq.add.delay(1, 2)
    with pytest.raises(DuplicateJobError, match="already exists"):
        jq.add.apply_async((5, 6), task_id=first.id)  # still waiting: job_queue's key
    start_worker()
    assert first.get(timeout=30) == 3
    with pytest.raises(DuplicateJobError, match="already exists"):
        jq.add.apply_async((5, 6), task_id=first.id)  # claimed: jobs' key
    assert _rows(conn, schema, "all_jobs", "id", first.id) == 1
    assert conn.execute(
        f'SELECT args FROM "{schema}".jobs WHERE id = %s', (first.id,)
    ).fetchone() == ([1, 2],)


def test_revoking_a_waiting_one_row_job_records_it_revoked(jq: Any, schema: str, conn: Any) -> None:
    result = jq.echo.apply_async(("x",), countdown=600)
    assert jq.app.revoke([result.id]) == 1
    assert _rows(conn, schema, "job_queue", "job_id", result.id) == 0
    row = conn.execute(
        f"SELECT state, args, attempts, revoked_at IS NOT NULL, error ->> 'type' "
        f'FROM "{schema}".jobs WHERE id = %s',
        (result.id,),
    ).fetchone()
    assert row == ("REVOKED", ["x"], 0, True, "TaskRevokedError")
    assert result.state == states.REVOKED
    assert jq.app.revoke([result.id]) == 0  # already finished: nothing to revoke
