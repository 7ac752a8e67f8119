"""Retries, time limits, pools, revocation and shutdown, with real worker processes."""

from __future__ import annotations

import signal
import threading
from typing import Any

import psycopg
import pytest

from jobqueue import (
    MaxRetriesExceededError,
    SoftTimeLimitExceeded,
    TaskRevokedError,
    TimeLimitExceeded,
    WorkerLostError,
    states,
)
from tests.apps import CustomError
from tests.conftest import wait_for


def _attempts(conn: Any, schema: str, job_id: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        f"SELECT attempt, state, error_type, started_at, finished_at "
        f'FROM "{schema}".job_history WHERE job_id = %s ORDER BY attempt',
        (job_id,),
    ).fetchall()


def test_retry_with_backoff_runs_three_times_with_growing_delays(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    start_worker()
    result = jq.flaky.delay(2)
    assert result.get(timeout=30) == "ok after 2 retries"
    history = _attempts(conn, schema, result.id)
    assert [(a, s, e) for a, s, e, _, _ in history] == [
        (1, states.RETRY, "OSError"),
        (2, states.RETRY, "OSError"),
        (3, states.SUCCESS, None),
    ]
    gaps = [(history[i + 1][3] - history[i][4]).total_seconds() for i in range(2)]
    print(f"\ndelays before retries: {[f'{g:.2f}s' for g in gaps]} (backoff 0.5 s, 1 s)")
    assert gaps[0] >= 0.5 and gaps[1] >= 1.0 and gaps[1] > gaps[0]


def test_always_failing_task_ends_failure_after_max_retries_plus_one_runs(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    start_worker()
    result = jq.hopeless.delay()
    with pytest.raises(ValueError, match="never works"):
        result.get(timeout=30)
    assert result.state == states.FAILURE and result.retries == 2
    assert "ValueError: never works" in (result.traceback or "")
    history = _attempts(conn, schema, result.id)
    assert [(a, s) for a, s, *_ in history] == [
        (1, states.RETRY),
        (2, states.RETRY),
        (3, states.FAILURE),
    ]
    tracebacks = conn.execute(
        f'SELECT count(*) FROM "{schema}".job_history WHERE job_id = %s '
        "AND traceback LIKE '%%ValueError: never works%%'",
        (result.id,),
    ).fetchone()
    assert tracebacks == (3,)  # every attempt keeps its own traceback


def test_self_retry_past_its_limit_raises_max_retries_exceeded(jq: Any, start_worker: Any) -> None:
    start_worker()
    result = jq.explicit_retry.delay()
    with pytest.raises(MaxRetriesExceededError, match=r"max retries \(1\)"):
        result.get(timeout=30)
    assert result.retries == 1


def test_retry_state_is_visible_while_waiting(jq: Any, start_worker: Any) -> None:
    start_worker()
    result = jq.flaky.apply_async((1,))
    wait_for(lambda: result.state == states.RETRY, 10, "the RETRY state")
    assert isinstance(result.result, OSError)
    assert result.get(timeout=30) == "ok after 1 retries"


def test_kill_9_mid_jobs_all_complete_on_another_worker(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    fast_lease = ("--lease-ttl", "2", "--heartbeat-interval", "0.5")
    victim = start_worker("--concurrency", "20", *fast_lease)
    jobs = [jq.sleep.delay(2) for _ in range(20)]
    wait_for(lambda: all(r.state == states.STARTED for r in jobs), 20, "all 20 to start")
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(10)
    start_worker("--concurrency", "20", *fast_lease)
    assert [r.get(timeout=60) for r in jobs] == [2] * 20
    runs = conn.execute(f'SELECT attempts, count(*) FROM "{schema}".jobs GROUP BY 1').fetchall()
    print(f"\nkill -9 with 20 running jobs: runs per job {dict(runs)}")
    assert runs == [(2, 20)]  # each ran at most twice: the killed run and the rescued one
    lost = conn.execute(
        f"SELECT count(*) FROM \"{schema}\".job_history WHERE error_type = 'WorkerLostError'"
    ).fetchone()
    assert lost == (20,)
    left = conn.execute(
        f'SELECT (SELECT count(*) FROM "{schema}".job_lease), '
        f"(SELECT count(*) FROM \"{schema}\".jobs WHERE state = 'STARTED'), "
        f'(SELECT count(*) FROM "{schema}".workers)'
    ).fetchone()
    assert left == (0, 0, 1)  # nothing running, the dead worker's row is gone


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_soft_time_limit_lets_the_task_clean_up(pool: str, jq: Any, start_worker: Any) -> None:
    start_worker("--pool", pool, "--concurrency", "1")
    assert jq.tidy.delay().get(timeout=20) == "cleaned up"


def test_hard_time_limit_in_process_pool_kills_the_task_and_serves_the_next(
    jq: Any, start_worker: Any
) -> None:
    start_worker("--pool", "processes", "--concurrency", "1")
    before = jq.pid.delay().get(timeout=30)
    runaway = jq.runaway.delay()
    with pytest.raises(TimeLimitExceeded, match="its process was killed"):
        runaway.get(timeout=30)
    after = jq.pid.delay().get(timeout=30)
    assert after != before  # the killed child was replaced


def test_hard_time_limit_in_thread_pool_fails_the_job_and_frees_the_slot(
    jq: Any, start_worker: Any
) -> None:
    start_worker("--concurrency", "1")
    with pytest.raises(TimeLimitExceeded):
        jq.runaway.delay().get(timeout=30)
    assert jq.add.delay(1, 1).get(timeout=10) == 2


def test_per_call_limits_override_and_are_validated(jq: Any, start_worker: Any) -> None:
    with pytest.raises(ValueError, match=r"soft_time_limit .* must not exceed time_limit"):
        jq.sleep.apply_async((1,), soft_time_limit=5, time_limit=2)
    start_worker("--pool", "processes", "--concurrency", "1")
    with pytest.raises(TimeLimitExceeded):
        jq.sleep.apply_async((30,), time_limit=1).get(timeout=30)


def test_crashing_child_is_retried_then_fails_and_the_worker_lives_on(
    jq: Any, start_worker: Any
) -> None:
    worker = start_worker("--pool", "processes", "--concurrency", "1")
    result = jq.crash.delay()
    with pytest.raises(WorkerLostError, match="child process died"):
        result.get(timeout=30)
    assert result.retries == 1  # max_retries=1: one more try after the first crash
    assert jq.add.delay(2, 3).get(timeout=30) == 5
    assert worker.proc.poll() is None


def test_max_tasks_per_child_replaces_children(jq: Any, start_worker: Any) -> None:
    start_worker("--pool", "processes", "--concurrency", "1", "--max-tasks-per-child", "1")
    pids = [jq.pid.delay().get(timeout=30) for _ in range(3)]
    assert len(set(pids)) == 3


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_async_tasks_run_in_any_pool(pool: str, jq: Any, start_worker: Any) -> None:
    start_worker("--pool", pool, "--concurrency", "2")
    results = [jq.async_add.delay(i, i) for i in range(10)]
    assert [r.get(timeout=30) for r in results] == [2 * i for i in range(10)]
    with pytest.raises(SoftTimeLimitExceeded):
        jq.async_slow.delay().get(timeout=30)


def test_revoke_before_start_means_it_never_runs(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    result = jq.add.apply_async((1, 2), countdown=2)
    result.revoke()
    assert result.state == states.REVOKED
    start_worker()
    assert jq.add.delay(0, 0).get(timeout=10) == 0  # the worker is up and claiming
    with pytest.raises(TaskRevokedError):
        result.get(timeout=1)
    row = conn.execute(
        f'SELECT attempts, started_at FROM "{schema}".jobs WHERE id = %s', (result.id,)
    ).fetchone()
    assert row == (0, None)


@pytest.mark.parametrize("pool, task", [("threads", "ticking"), ("processes", "sleep")])
def test_revoke_terminate_stops_a_running_job(
    pool: str, task: str, jq: Any, start_worker: Any
) -> None:
    worker = start_worker("--pool", pool, "--concurrency", "2")
    running = getattr(jq, task).delay(60)
    wait_for(lambda: running.state == states.STARTED, 20, "the job to start")
    running.revoke(terminate=True)
    with pytest.raises(TaskRevokedError):
        running.get(timeout=20)  # long before the job's 60 s
    assert running.state == states.REVOKED
    assert jq.add.delay(2, 2).get(timeout=20) == 4
    assert worker.proc.poll() is None


def test_revoke_without_terminate_lets_a_running_job_finish_but_not_retry(
    jq: Any, start_worker: Any
) -> None:
    start_worker()
    # The retry is a minute away, so the revoke lands before it whatever the
    # machine's pace (flaky's 0.5 s retry once ran first on a slow CI run).
    running = jq.retries_later.delay()
    wait_for(lambda: running.state in (states.STARTED, states.RETRY), 20, "the first run")
    running.revoke()
    with pytest.raises(TaskRevokedError):
        running.get(timeout=20)


def test_a_revoke_racing_the_completion_of_a_retry_still_revokes(
    jq: Any, dsn: str, schema: str, conn: Any, start_worker: Any
) -> None:
    """The completer puts the job back in the queue for its retry while a revoke
    waits on the same row: the revoke must find it there and end it, not leave
    it waiting to be claimed and run again."""
    worker = start_worker()
    job = jq.retries_after.delay(1.0)
    wait_for(lambda: job.state == states.STARTED, 20, "the job to start")

    def waiting_on_locks() -> int:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'"
        ).fetchone()
        return int(row[0])

    revoked: list[int] = []
    with psycopg.connect(dsn) as holder:  # holds the row, so both must queue behind it
        holder.execute(f'SELECT 1 FROM "{schema}".jobs WHERE id = %s FOR UPDATE', (job.id,))
        wait_for(lambda: waiting_on_locks() == 1, 20, "the completer to wait for the row")
        revoker = threading.Thread(target=lambda: revoked.append(jq.app.revoke(job.id)))
        revoker.start()
        wait_for(lambda: waiting_on_locks() == 2, 20, "the revoke to wait behind it")
        holder.rollback()
    revoker.join(20)
    assert revoked == [1]
    assert job.state == states.REVOKED
    queued = conn.execute(
        f'SELECT count(*) FROM "{schema}".job_queue WHERE job_id = %s', (job.id,)
    ).fetchone()
    assert queued == (0,)
    assert worker.proc.poll() is None


def test_warm_shutdown_grace_period_releases_slow_jobs_to_another_worker(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    first = start_worker("--shutdown-timeout", "1")
    slow = jq.sleep.delay(4)
    wait_for(lambda: slow.state == states.STARTED, 20, "the job to start")
    assert first.terminate() == 0
    assert slow.state == states.PENDING  # released, not lost and not counted
    assert "grace period over" in first.log
    start_worker()
    assert slow.get(timeout=30) == 4
    row = conn.execute(f'SELECT attempts FROM "{schema}".jobs WHERE id = %s', (slow.id,)).fetchone()
    assert row == (1,)


def test_a_task_raising_system_exit_fails_its_job_not_the_worker(
    jq: Any, start_worker: Any
) -> None:
    worker = start_worker("--concurrency", "1")
    with pytest.raises(SystemExit):
        jq.exits.delay().get(timeout=20)
    assert jq.add.delay(1, 2).get(timeout=20) == 3  # the only slot still serves
    assert worker.proc.poll() is None


def test_children_die_with_a_killed_worker(jq: Any, start_worker: Any) -> None:
    import os

    worker = start_worker("--pool", "processes", "--concurrency", "1")
    child = jq.pid.delay().get(timeout=30)
    worker.proc.send_signal(signal.SIGKILL)
    worker.proc.wait(10)

    def gone() -> bool:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(gone, 10, "the orphaned child to exit")


def test_outcomes_the_database_cannot_store_fail_their_jobs_not_the_worker(
    jq: Any, start_worker: Any
) -> None:
    """A retry asked for at an infinite delay, and a result jsonb refuses (a
    NUL character), each fail their own job with the reason; outcomes batched
    with them are recorded and the worker goes on."""
    worker = start_worker("--concurrency", "4")
    never = jq.retry_never.delay()
    with pytest.raises(ValueError, match="finite number of seconds"):
        never.get(timeout=20)
    nul = jq.nul_result.delay()
    neighbours = [jq.add.delay(i, i) for i in range(20)]
    with pytest.raises(RuntimeError, match="database refused this job's outcome"):
        nul.get(timeout=20)
    assert [r.get(timeout=20) for r in neighbours] == [2 * i for i in range(20)]
    # An error message with a NUL keeps the task's own error, the NUL shown as text.
    with pytest.raises(CustomError, match=r"bad byte: \\u0000"):
        jq.nul_error.delay().get(timeout=20)
    assert jq.add.delay(1, 2).get(timeout=20) == 3
    assert worker.proc.poll() is None
