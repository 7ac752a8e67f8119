"""metrics() and the counters behind it (revision 0015), driven by the claim
and completion statements themselves: what each outcome counts, what the
histograms observe, and that nothing a counter has counted ever goes back
(retention, deletes, an operator's retry, the fold)."""

from __future__ import annotations

import bisect
from typing import Any

import psycopg

from jobqueue import migrate, states
from jobqueue.ids import new_id
from jobqueue.sql import queries
from jobqueue.worker.outcome import Outcome, outcome_params
from tests.conftest import wait_for

REVISION = int(migrate.head_revision())
BOUNDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
BOUNDS += [120, 300, 600, 1800, 3600]


def _claim(conn: Any, schema: str, worker: str, limit: int = 100) -> list[tuple[Any, ...]]:
    params = {
        "queues": ["default"],
        "limit": limit,
        "worker_id": worker,
        "revision": REVISION,
        "skip_tasks": [],
    }
    return conn.execute(queries(schema)["job_claim"], params).fetchall()


def _complete(conn: Any, schema: str, worker: str, outcomes: list[Outcome]) -> None:
    conn.execute(queries(schema)["job_complete_many"], outcome_params(outcomes, worker))


def metrics(conn: Any, schema: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    rows = conn.execute(f'SELECT metric, labels, value FROM "{schema}".metrics()').fetchall()
    out = {(name, tuple(sorted(labels.items()))): value for name, labels, value in rows}
    assert len(out) == len(rows), "a series appears twice"
    return out


def value(got: dict[Any, float], name: str, **labels: str) -> float:
    return got.get((name, tuple(sorted(labels.items()))), 0.0)


def test_outcomes_are_counted_and_attempts_observed(jq: Any, schema: str, conn: Any) -> None:
    worker = new_id()
    for i in range(6):
        jq.add.delay(i, i)  # one row each: the claim writes the record
    jq.app.enqueue_many(jq.add, [(i, i) for i in range(4)])  # recorded at once
    rows = _claim(conn, schema, worker)
    assert len(rows) == 10
    planned = [states.SUCCESS] * 5 + [states.RETRY] * 3 + [states.FAILURE] * 2
    first = [
        Outcome(r[0], r[6], s, result="1" if s == states.SUCCESS else None, delay=0)
        for r, s in zip(rows, planned, strict=True)
    ]
    _complete(conn, schema, worker, first)
    retried = _claim(conn, schema, worker)
    assert len(retried) == 3
    _complete(conn, schema, worker, [Outcome(r[0], r[6], states.SUCCESS, "2") for r in retried])

    got = metrics(conn, schema)
    labels = {"queue": "default", "task": "add"}
    assert value(got, "jobqueue_jobs_succeeded_total", **labels) == 8
    assert value(got, "jobqueue_jobs_retried_total", **labels) == 3
    assert value(got, "jobqueue_jobs_failed_total", **labels) == 2
    assert value(got, "jobqueue_jobs_revoked_total", **labels) == 0
    assert value(got, "jobqueue_queue_due_jobs", queue="default") == 0
    assert value(got, "jobqueue_queue_running_jobs", queue="default") == 0
    for kind in ("wait", "run"):  # every attempt that ran: 13
        name = f"jobqueue_job_{kind}_seconds"
        assert value(got, f"{name}_count", **labels) == 13
        buckets = [value(got, f"{name}_bucket", **labels, le=le) for le in _les()]
        assert buckets == sorted(buckets), "cumulative buckets never go down"
        assert buckets[-1] == 13
        assert value(got, f"{name}_sum", **labels) >= 0

    # The run-time histogram, bucket by bucket, from the rows themselves:
    # successes from jobs, the other attempts from job_attempts.
    spans = conn.execute(
        f"SELECT extract(epoch FROM finished_at - started_at)::float8 "
        f"FROM \"{schema}\".jobs WHERE state = 'SUCCESS' "
        f"UNION ALL SELECT extract(epoch FROM finished_at - started_at)::float8 "
        f'FROM "{schema}".job_attempts'
    ).fetchall()
    assert len(spans) == 13
    expected = [0] * (len(BOUNDS) + 1)
    for (seconds,) in spans:
        expected[bisect.bisect_left(BOUNDS, seconds)] += 1
    cumulative = [sum(expected[: i + 1]) for i in range(len(expected))]
    name = "jobqueue_job_run_seconds_bucket"
    assert [value(got, name, **labels, le=le) for le in _les()] == cumulative
    total = sum(s for (s,) in spans)
    assert abs(value(got, "jobqueue_job_run_seconds_sum", **labels) - total) < 1e-5


def _les() -> list[str]:
    return [str(b) for b in BOUNDS] + ["+Inf"]


def _counted(got: dict[Any, float]) -> dict[Any, float]:
    """The counters and histograms (the gauges move with time)."""
    return {k: v for k, v in got.items() if k[0].startswith(("jobqueue_jobs_", "jobqueue_job_"))}


def test_revoked_released_and_expired_jobs(jq: Any, schema: str, conn: Any) -> None:
    worker = new_id()
    waiting = jq.add.apply_async((1, 1), countdown=600)  # revoked while waiting
    waiting.revoke()
    jq.add.apply_async((1, 1), expires=0.001)  # claimed expired: recorded REVOKED unrun
    jq.add.delay(2, 2)  # handed back unrun (an unknown task): counts nowhere
    rows = conn.execute(f'SELECT job_id FROM "{schema}".job_queue WHERE run_at <= now()').fetchall()
    assert len(rows) == 2
    # Past its expiry before the claim looks (three statements can take less
    # than its millisecond on a fast machine: the claim then found it fresh).
    expiry = f'SELECT bool_and(expires_at < now()) FROM "{schema}".job_queue WHERE run_at <= now()'
    wait_for(lambda: conn.execute(expiry).fetchone()[0], 10, "the job's expiry")
    claimed = _claim(conn, schema, worker)
    expired = [r for r in claimed if r[10]]
    fresh = [r for r in claimed if not r[10]]
    assert len(expired) == 1 and len(fresh) == 1
    _complete(
        conn,
        schema,
        worker,
        [
            Outcome(expired[0][0], expired[0][6], states.REVOKED),
            Outcome(fresh[0][0], fresh[0][6], "RELEASED", delay=0, unknown_task="add"),
        ],
    )
    got = metrics(conn, schema)
    labels = {"queue": "default", "task": "add"}
    assert value(got, "jobqueue_jobs_revoked_total", **labels) == 2
    assert value(got, "jobqueue_jobs_retried_total", **labels) == 0
    assert value(got, "jobqueue_job_run_seconds_count", **labels) == 0
    assert value(got, "jobqueue_queue_due_jobs", queue="default") == 1  # the one handed back


def test_counters_never_go_back(jq: Any, schema: str, conn: Any) -> None:
    """Deleting history, retrying failures and folding sessions' rows: the
    totals stay (job_counts, which queue_stats reads, goes down with them)."""
    worker = new_id()
    jq.app.enqueue_many(jq.add, [(i, i) for i in range(20)])
    rows = _claim(conn, schema, worker)
    _complete(
        conn,
        schema,
        worker,
        [
            Outcome(r[0], r[6], states.SUCCESS if i % 2 else states.FAILURE)
            for i, r in enumerate(rows)
        ],
    )
    labels = {"queue": "default", "task": "add"}
    before = metrics(conn, schema)
    assert value(before, "jobqueue_jobs_succeeded_total", **labels) == 10
    assert value(before, "jobqueue_jobs_failed_total", **labels) == 10

    assert jq.app.store.delete_jobs(state=states.SUCCESS) == 10
    assert jq.app.store.retry_jobs(state=states.FAILURE) == 10  # back to the queue: not a retry
    after = metrics(conn, schema)
    for name in ("succeeded", "failed", "retried"):
        series = f"jobqueue_jobs_{name}_total"
        assert value(after, series, **labels) == value(before, series, **labels), name
    assert value(after, "jobqueue_queue_due_jobs", queue="default") == 10

    again = _claim(conn, schema, worker)
    _complete(conn, schema, worker, [Outcome(r[0], r[6], states.SUCCESS, "1") for r in again])
    grown = metrics(conn, schema)
    assert value(grown, "jobqueue_jobs_succeeded_total", **labels) == 20
    assert value(grown, "jobqueue_job_run_seconds_count", **labels) == 30

    # The rows written by sessions that have closed fold into one, totals unchanged.
    with psycopg.connect(conn.info.dsn, autocommit=True) as other:
        [(row,)] = other.execute("SELECT pg_backend_pid()").fetchall()
        jq.app.enqueue_many(jq.add, [(1, 1)])
        [claimed] = _claim(other, schema, worker)
        _complete(other, schema, worker, [Outcome(claimed[0], claimed[6], states.SUCCESS, "1")])
    slots = f'SELECT count(DISTINCT slot) FROM "{schema}".job_metrics WHERE slot = %s'
    assert conn.execute(slots, [row]).fetchone() == (1,)
    before_fold = metrics(conn, schema)

    def closed() -> bool:
        active = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [row])
        return active.fetchone() == (0,)

    wait_for(closed, 10, "the other session to end")
    assert jq.app.store.fold_metrics(conn) > 0
    assert conn.execute(slots, [row]).fetchone() == (0,)
    assert _counted(metrics(conn, schema)) == _counted(before_fold)
    own = f'SELECT count(*) FROM "{schema}".job_metrics WHERE slot = pg_backend_pid()'
    assert conn.execute(own).fetchone()[0] > 0  # a live session's rows stay where they are


def test_queue_gauges(jq: Any, schema: str, conn: Any) -> None:
    jq.add.apply_async((1, 1), queue="mail")
    jq.add.apply_async((1, 1), queue="mail", countdown=3600)
    jq.app.store.pause_queue("idle")
    conn.execute(
        f'INSERT INTO "{schema}".schedules (name, task, interval_secs, next_run_at) '
        "VALUES ('late', 'add', 60, now() - interval '90 seconds'), "
        "('on_time', 'add', 60, now() + interval '30 seconds')"
    )
    got = metrics(conn, schema)
    assert value(got, "jobqueue_queue_due_jobs", queue="mail") == 1
    assert value(got, "jobqueue_queue_scheduled_jobs", queue="mail") == 1
    assert value(got, "jobqueue_queue_oldest_due_age_seconds", queue="mail") >= 0
    assert value(got, "jobqueue_queue_paused", queue="mail") == 0
    assert value(got, "jobqueue_queue_paused", queue="idle") == 1
    assert value(got, "jobqueue_queue_due_jobs", queue="idle") == 0
    assert 90 <= value(got, "jobqueue_schedule_lag_seconds", schedule="late") < 200
    assert value(got, "jobqueue_schedule_lag_seconds", schedule="on_time") == 0
