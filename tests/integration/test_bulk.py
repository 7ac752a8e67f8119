"""Acceptance 3: 10,000 jobs from enqueue_many, 3 worker processes, each job once."""

from __future__ import annotations

from typing import Any

from tests.conftest import wait_for


def test_ten_thousand_jobs_three_workers_exactly_once(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    total = 10_000
    results = jq.app.enqueue_many(jq.add, [(i, i) for i in range(total)])
    assert len({r.id for r in results}) == total
    workers = [start_worker("--concurrency", "8", "--loglevel", "warning") for _ in range(3)]

    def finished() -> bool:
        row = conn.execute(
            f"SELECT count(*) FROM \"{schema}\".jobs WHERE state = 'SUCCESS'"
        ).fetchone()
        return bool(row and row[0] == total)

    wait_for(finished, timeout=240, what=f"{total} jobs to finish")
    rows = conn.execute(
        f'SELECT attempts, count(*) FROM "{schema}".jobs GROUP BY attempts'
    ).fetchall()
    assert rows == [(1, total)]  # claimed, hence run, exactly once each
    runners = conn.execute(f'SELECT count(DISTINCT worker_id) FROM "{schema}".jobs').fetchone()
    print(f"\n{total} jobs ran on {runners[0]} workers")
    leftovers = conn.execute(
        f'SELECT (SELECT count(*) FROM "{schema}".job_queue), '
        f'(SELECT count(*) FROM "{schema}".job_lease)'
    ).fetchone()
    assert leftovers == (0, 0)
    assert [r.get(timeout=5) for r in results] == [2 * i for i in range(total)]
    for worker in workers:
        assert worker.terminate() == 0


def test_key_functions_get_each_items_arguments(dsn: str, schema: str, conn: Any) -> None:
    """A limit key function that needs the task's arguments: enqueue_many once
    called it with none before reading any item (TypeError, nothing enqueued)."""
    from jobqueue import JobQueue

    app = JobQueue(dsn, schema=schema, auto_migrate=False)
    try:

        @app.task(name="per_user", rate_limit="10/s", rate_limit_key=lambda user: user)
        def per_user(user: str) -> str:
            return user

        results = app.enqueue_many(per_user, [("u1",), ("u2",)])
        keys = conn.execute(
            f'SELECT rate_key FROM "{schema}".job_queue WHERE job_id = ANY(%s::uuid[]) '
            "ORDER BY rate_key",
            [[r.id for r in results]],
        ).fetchall()
        assert keys == [("per_user:u1",), ("per_user:u2",)]
    finally:
        app.close()
