"""Rolling deploys: a worker hands back a job of a task it does not know."""

from __future__ import annotations

from typing import Any

from jobqueue import states
from tests.conftest import wait_for


def test_a_job_only_the_new_release_knows_waits_for_a_worker_of_it(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    """A worker of the previous release failed such jobs for good
    (TaskNotRegistered) while the new release's workers were still starting.
    Now it hands them back, unrun and uncounted, and they run on the first
    worker that knows the task."""
    old = start_worker("--concurrency", "2")
    job = jq.app.send_task("v2.only", (4,))
    wait_for(lambda: "handed back for a worker that knows it" in old.log, 20, "a hand-back")
    # Logged when handed back, recorded by the completer a moment later.
    wait_for(lambda: job.state == states.PENDING, 20, "the job back in its queue")
    unserved = conn.execute(
        f'SELECT queue, task, waiting FROM "{schema}".unserved_tasks'
    ).fetchall()
    assert unserved in ([], [("default", "v2.only", 1)])  # [] while it is claimed
    new = start_worker("--concurrency", "2", app="tests.apps_v2:app")
    assert job.get(timeout=30) == 40
    row = conn.execute(
        f'SELECT attempts, worker_id::text FROM "{schema}".jobs WHERE id = %s', [job.id]
    ).fetchone()
    new_id = conn.execute(
        f'SELECT id::text FROM "{schema}".workers WHERE pid = %s', [new.proc.pid]
    ).fetchone()
    assert row == (1, new_id[0])  # one attempt: the hand-backs did not count
    history = conn.execute(
        f'SELECT count(*) FROM "{schema}".job_attempts WHERE job_id = %s', [job.id]
    ).fetchone()
    assert history == (0,)
    served = conn.execute(
        f'SELECT count(*) FROM "{schema}".workers WHERE %s = ANY(tasks)', ["v2.only"]
    ).fetchone()
    assert served == (1,)  # workers record the tasks they serve


def test_stats_warns_of_jobs_no_live_worker_serves(
    jq: Any, dsn: str, schema: str, start_worker: Any
) -> None:
    from tests.integration.test_cli import jobqueue

    start_worker("--concurrency", "1", "--queues", "other")  # serves another queue only
    jq.add.delay(1, 1)
    done = jobqueue("--dsn", dsn, "--schema", schema, "stats")
    assert done.returncode == 0, done.stderr
    assert "1 job(s) of task 'add' in queue 'default' wait for a worker" in done.stderr
    start_worker("--concurrency", "1")
    wait_for(
        lambda: (
            "wait for a worker" not in jobqueue("--dsn", dsn, "--schema", schema, "stats").stderr
        ),
        30,
        "the warning to go once a worker serves the queue",
    )
