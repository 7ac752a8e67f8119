"""self.snooze(): run again later without using a retry; retry_backoff as a
function. Real workers, both pools."""

from __future__ import annotations

from typing import Any

import pytest

from jobqueue import JobQueue, states
from tests.apps import build
from tests.conftest import wait_for


def _history(conn: Any, schema: str, job_id: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        f"SELECT attempt, state, error_type, started_at, finished_at "
        f'FROM "{schema}".job_history WHERE job_id = %s ORDER BY attempt',
        (job_id,),
    ).fetchall()


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_snoozes_use_no_retry_and_are_kept_in_history(
    pool: str, jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    start_worker("--pool", pool)
    result = jq.snoozer.delay(3, 0.2)  # max_retries=0: a retry would fail it
    assert result.get(timeout=30) == {"attempt": 4, "retries": 0}
    history = _history(conn, schema, result.id)
    assert [(a, s, e) for a, s, e, _, _ in history] == [
        (1, "SNOOZED", "Snooze"),
        (2, "SNOOZED", "Snooze"),
        (3, "SNOOZED", "Snooze"),
        (4, states.SUCCESS, None),
    ]
    gaps = [(history[i + 1][3] - history[i][4]).total_seconds() for i in range(3)]
    assert min(gaps) >= 0.2  # each waited its snooze


def test_a_snoozed_job_waits_pending_and_can_be_revoked(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    start_worker()
    result = jq.snoozer.delay(1, 60)
    history = f'SELECT count(*) FROM "{schema}".job_history WHERE job_id = %s'
    wait_for(lambda: conn.execute(history, [result.id]).fetchone() == (1,), 20, "a snooze")
    assert result.state == states.PENDING
    result.revoke()
    assert result.state == states.REVOKED


def test_returning_snooze_and_a_delay_that_cannot_be_stored(jq: Any, start_worker: Any) -> None:
    start_worker()
    assert jq.snooze_returned.delay().get(timeout=30) == "woke"
    forever = jq.snooze_forever.delay()
    with pytest.raises(ValueError, match="snooze of task 'snooze_forever' asked for a delay"):
        forever.get(timeout=30)


def test_retry_backoff_function(jq: Any, schema: str, conn: Any, start_worker: Any) -> None:
    start_worker()
    result = jq.backoff_fn.delay()
    assert result.get(timeout=30) == 3
    history = _history(conn, schema, result.id)
    gaps = [(history[i + 1][3] - history[i][4]).total_seconds() for i in range(2)]
    assert gaps[0] >= 0.3 and gaps[1] >= 0.6  # 0.3 x attempt, from the function
    broken = jq.backoff_broken.delay()
    with pytest.raises(ValueError, match="must return a finite number of seconds"):
        broken.get(timeout=30)


def test_backoff_option_is_checked_when_declared(jq: Any) -> None:
    with pytest.raises(TypeError, match="retry_backoff must be"):

        @jq.app.task(name="bad_backoff_option", retry_backoff="fast")
        def bad() -> None: ...

    with pytest.raises(ValueError, match="finite factor"):

        @jq.app.task(name="bad_backoff_factor", retry_backoff=-2)
        def worse() -> None: ...


def test_snooze_in_eager_mode_runs_again_at_once() -> None:
    app = JobQueue(eager=True)
    tasks = build(app)
    assert tasks.snoozer.delay(2, 30).get() == {"attempt": 3, "retries": 0}
