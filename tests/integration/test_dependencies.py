"""depends_on: a job waits for other jobs, however and wherever they were
enqueued, counted where they finish (no polling), with real workers."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from jobqueue import TaskRevokedError, states
from tests.conftest import wait_for

FAST = ("--heartbeat-interval", "0.5")


def _times(conn: Any, schema: str, job_id: str) -> tuple[Any, Any]:
    row = conn.execute(
        f'SELECT started_at, finished_at FROM "{schema}".jobs WHERE id = %s', [job_id]
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def test_waits_for_jobs_enqueued_by_other_transactions_and_sql(
    jq: Any, dsn: str, schema: str, conn: Any, start_worker: Any
) -> None:
    start_worker("--concurrency", "4", *FAST)
    slow = jq.sleep.delay(1.0)
    with psycopg.connect(dsn, autocommit=True) as other:  # another process's enqueue, in SQL
        from_sql = other.execute(f"SELECT \"{schema}\".enqueue('add', '[20, 22]')").fetchone()[0]
    after = jq.add.apply_async((1, 2), depends_on=[slow, str(from_sql)])
    wait_for(lambda: jq.app.AsyncResult(str(from_sql)).state == states.SUCCESS, 20, "from_sql")
    assert after.state == states.PENDING  # slow is still running
    assert after.get(timeout=30) == 3
    started, _ = _times(conn, schema, after.id)
    assert started >= _times(conn, schema, slow.id)[1]
    assert conn.execute(f'SELECT count(*) FROM "{schema}".job_waits').fetchone() == (0,)
    assert conn.execute(f'SELECT count(*) FROM "{schema}".job_dependencies').fetchone() == (0,)


def test_finished_dependencies_count_at_once(jq: Any, start_worker: Any) -> None:
    start_worker(*FAST)
    done = [jq.add.delay(i, i) for i in range(3)]
    assert [r.get(timeout=30) for r in done] == [0, 2, 4]
    assert jq.add.apply_async((5, 5), depends_on=done).get(timeout=30) == 10
    assert jq.add.apply_async((1, 1), depends_on=[]).get(timeout=30) == 2  # nothing to wait for


@pytest.mark.parametrize(
    ("policy", "state"),
    [("fail", states.FAILURE), ("cancel", states.REVOKED), ("run", states.SUCCESS)],
)
def test_a_failed_dependency_fails_cancels_or_runs_the_dependent(
    policy: str, state: str, jq: Any, start_worker: Any
) -> None:
    start_worker(*FAST)
    bad = jq.boom.delay("dependency exploded")
    good = jq.add.delay(1, 1)
    after = jq.add.apply_async((2, 2), depends_on=[bad, good], on_dependency_failure=policy)
    nested = jq.add.apply_async((3, 3), depends_on=[after])  # fails with it, unless it ran
    wait_for(lambda: after.state == state, 30, f"the dependent to end {state}")
    if policy == "run":
        assert after.get(timeout=30) == 4 and nested.get(timeout=30) == 6
        return
    error = after.result
    assert isinstance(error, Exception) and bad.id in str(error)
    assert "dependency exploded" in str(error)
    if policy == "cancel":
        assert isinstance(error, TaskRevokedError)
    else:
        assert type(error).__name__ == "DependencyFailed"
    wait_for(lambda: nested.state == states.FAILURE, 30, "what waits on it to fail too")
    assert after.id in str(nested.result)


def test_bad_dependencies_are_refused_and_write_nothing(jq: Any, schema: str, conn: Any) -> None:
    ghost = "01a24cee-0000-7000-8000-000000000000"
    with pytest.raises(ValueError, match=f"depends on job {ghost}, which does not exist"):
        jq.add.apply_async((1, 2), depends_on=[ghost])
    me = "01a24cee-0000-7000-8000-000000000001"
    with pytest.raises(ValueError, match="cannot depend on itself"):
        jq.add.apply_async((1, 2), task_id=me, depends_on=[me])
    with pytest.raises(ValueError, match="on_dependency_failure must be one of"):
        jq.add.apply_async((1, 2), depends_on=[], on_dependency_failure="ignore")
    with pytest.raises(ValueError, match="must be a UUID"):
        jq.add.apply_async((1, 2), depends_on=["not-an-id"])
    with pytest.raises(TypeError, match="needs depends_on"):
        jq.add.apply_async((1, 2), on_dependency_failure="run")
    assert conn.execute(f'SELECT count(*) FROM "{schema}".jobs').fetchone() == (0,)
    assert conn.execute(f'SELECT count(*) FROM "{schema}".job_queue').fetchone() == (0,)


def test_dependency_and_dependent_in_one_transaction(jq: Any, dsn: str, start_worker: Any) -> None:
    start_worker(*FAST)
    with psycopg.connect(dsn) as own:
        first = jq.add.apply_async((1, 1), connection=own)
        second = jq.add.apply_async((2, 2), connection=own, depends_on=[first])
        own.rollback()
    assert second.state == states.PENDING and first.state == states.PENDING  # never existed
    with psycopg.connect(dsn) as own:
        first = jq.add.apply_async((1, 1), connection=own)
        second = jq.add.apply_async((2, 2), connection=own, depends_on=[first])
        own.commit()
    assert second.get(timeout=30) == 4


def test_sql_form_with_depends_on(jq: Any, schema: str, conn: Any, start_worker: Any) -> None:
    start_worker(*FAST)
    first = jq.sleep.delay(0.3)
    job_id = conn.execute(
        f"SELECT \"{schema}\".enqueue('add', '[4, 5]', depends_on => ARRAY[%s]::uuid[], "
        "on_dependency_failure => 'cancel')",
        [first.id],
    ).fetchone()[0]
    assert jq.app.AsyncResult(str(job_id)).get(timeout=30) == 9


def test_a_waiting_dependent_can_be_revoked_and_cancelled(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    start_worker(*FAST)
    slow = jq.sleep.delay(1.0)
    revoked = jq.add.apply_async((1, 1), depends_on=[slow])
    cancelled = jq.add.apply_async((2, 2), depends_on=[slow])
    revoked.revoke()
    assert conn.execute(
        f'SELECT "{schema}".cancel_jobs(ids => ARRAY[%s]::uuid[])', [cancelled.id]
    ).fetchone() == (1,)
    assert slow.get(timeout=30) == 1.0
    assert revoked.state == states.REVOKED and cancelled.state == states.REVOKED
    wait_for(
        lambda: conn.execute(f'SELECT count(*) FROM "{schema}".job_waits').fetchone() == (0,),
        30,
        "the waits of the revoked jobs to be cleared",
    )


def test_a_dependency_that_finishes_while_the_dependent_is_uncommitted(
    jq: Any, dsn: str, schema: str, conn: Any, start_worker: Any
) -> None:
    """Neither side sees the other: the completion commits before the
    transaction that adds the dependent does. The maintenance round counts it."""
    start_worker(*FAST)
    slow = jq.sleep.delay(0.5)
    wait_for(lambda: slow.state == states.STARTED, 20, "the dependency to start")
    with psycopg.connect(dsn) as own:
        after = jq.add.apply_async((3, 4), connection=own, depends_on=[slow])
        wait_for(lambda: slow.state == states.SUCCESS, 20, "the dependency to finish")
        own.commit()
    assert after.get(timeout=30) == 7
