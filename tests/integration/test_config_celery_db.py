"""Celery's settings where they need the database and a worker: the defaults a
pasted configuration maps (priority, time limits, worker concurrency) are stored
with the job and honoured by a real worker process."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg

from jobqueue import JobQueue
from tests.apps_celeryconf import configure
from tests.conftest import WorkerProcess

APP = "tests.apps_celeryconf:app"


def _worker_concurrency(conn: psycopg.Connection[Any], schema: str, pid: int) -> int:
    row = conn.execute(
        f'SELECT concurrency FROM "{schema}".workers WHERE pid = %s', (pid,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_pasted_celery_config_is_stored_with_jobs_and_honoured_by_the_worker(
    dsn: str,
    schema: str,
    conn: psycopg.Connection[Any],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    producer = configure(JobQueue(dsn, schema=schema, auto_migrate=False))
    try:
        limits = producer.tasks["celeryconf.limits"]
        result = limits.delay()
        row = conn.execute(
            f'SELECT priority, options FROM "{schema}".all_jobs WHERE id = %s', (result.id,)
        ).fetchone()
        assert row is not None
        priority, options = row
        options = options if isinstance(options, dict) else json.loads(options)
        # task_default_priority, task_soft_time_limit and task_time_limit, on the row.
        assert priority == 7
        assert (options["soft_time_limit"], options["time_limit"]) == (1, 30)

        worker = start_worker(app=APP)
        # worker_concurrency is the default of -c; the app's lines are logged once.
        assert _worker_concurrency(conn, schema, worker.proc.pid) == 3
        assert result.get(timeout=30) == [1, 30]
        assert producer.tasks["celeryconf.overrun"].delay().get(timeout=30) == "soft limit"

        # A producer that does not know the task (send_task by name, no settings)
        # stores no limits: the worker fills in its app's defaults.
        bare = JobQueue(dsn, schema=schema, auto_migrate=False)
        try:
            sent = bare.send_task("celeryconf.limits")
            assert sent.get(timeout=30) == [1, 30]
        finally:
            bare.close()

        log = worker.log
        assert log.count("Celery setting task_acks_late=True accepted") == 1
        assert "broker_url is not used" in log and "s3cret" not in log

        flagged = start_worker("-c", "2", app=APP)  # the flag wins over the setting
        assert _worker_concurrency(conn, schema, flagged.proc.pid) == 2
    finally:
        producer.close()
