"""Findings of an adversarial run: spoofed messages, revoked or expired jobs
waiting in a prefetch buffer, errors retrying cannot cure, NUL characters in
names, tenants sharing one database."""

from __future__ import annotations

import json
import secrets
import signal
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from jobqueue import JobQueue, embedded, migrate, states
from jobqueue.db import transient
from jobqueue.exceptions import TaskRevokedError
from jobqueue.worker import Worker
from tests.apps import build
from tests.conftest import WorkerProcess, wait_for


def test_a_spoofed_control_message_does_not_stop_a_running_job(
    jq: Any, schema: str, dsn: str, conn: Any, start_worker: Any
) -> None:
    """Anyone who can connect can NOTIFY: a role with no privileges at all
    once ended a running job REVOKED this way. The worker now acts only on
    what the job's row says."""
    start_worker("--concurrency", "2")
    running = jq.sleep.delay(1.5)
    wait_for(lambda: running.state == states.STARTED, 20, "the job to start")
    role = f"nobody_{secrets.token_hex(3)}"
    conn.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        params = conninfo_to_dict(dsn)
        params["user"] = role
        with psycopg.connect(make_conninfo("", **params), autocommit=True) as intruder:
            payload = json.dumps({"revoke": running.id, "worker": None})
            intruder.execute("SELECT pg_notify(%s, %s)", [f"{schema}_control", payload])
    finally:
        conn.execute(f'DROP ROLE "{role}"')
    assert running.get(timeout=20) == 1.5
    assert running.state == states.SUCCESS


def test_a_job_revoked_or_expired_while_prefetched_never_runs(
    jq: Any, schema: str, dsn: str, conn: Any, start_worker: Any
) -> None:
    """After a run of short jobs a worker claims well ahead of its free slots,
    and a claimed job waits in its buffer. Revoked (without terminate) or
    expired while it waits, it must not run, as Celery never runs a reserved
    task that was revoked or has expired."""
    start_worker("--concurrency", "1")
    warmup = jq.app.enqueue_many(jq.add, [(i, i) for i in range(300)])
    warmup[-1].get(timeout=30)  # the worker now prefetches: its jobs are short
    with psycopg.connect(dsn) as tx:  # one commit: one claim takes all three
        blocker = jq.sleep.apply_async((2.0,), connection=tx)
        revoked = jq.echo.apply_async(("revoked",), connection=tx)
        expiring = jq.echo.apply_async(("expiring",), connection=tx, expires=1.0)
    wait_for(lambda: blocker.state == states.STARTED, 20, "the blocker to start")
    claimed = conn.execute(
        f'SELECT count(*) FROM "{schema}".job_lease WHERE job_id = ANY(%s::uuid[])',
        ([revoked.id, expiring.id],),
    ).fetchone()
    assert claimed == (2,)  # both wait in the worker's buffer behind the blocker
    revoked.revoke()
    assert blocker.get(timeout=20) == 2.0
    for result in (revoked, expiring):
        with pytest.raises(TaskRevokedError):
            result.get(timeout=20)
    rows = conn.execute(
        f'SELECT state, result FROM "{schema}".jobs WHERE id = ANY(%s::uuid[])',
        ([revoked.id, expiring.id],),
    ).fetchall()
    assert rows == [(states.REVOKED, None)] * 2


def test_only_errors_retrying_can_cure_are_transient(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        with pytest.raises(psycopg.OperationalError) as too_long:  # 54000, as psycopg files it
            c.execute("SELECT repeat('x', 1100000000)")
        assert too_long.value.sqlstate == "54000"
        assert not transient(too_long.value)
        with pytest.raises(psycopg.errors.DataError) as bad:
            c.execute("SELECT 'x'::int")
        assert not transient(bad.value)
        pid = c.info.backend_pid
        with psycopg.connect(dsn, autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", [pid])
        with pytest.raises(psycopg.OperationalError) as gone:
            c.execute("SELECT 1")
        assert transient(gone.value)


def test_an_outcome_refused_for_good_fails_its_job_and_the_completer_goes_on(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    """PostgreSQL refused an outcome with 54000 (string too long), which psycopg
    files under OperationalError: the completer took the database for away
    and retried the same batch for ever, recording nothing more. Here a
    trigger refuses one result with that very code."""
    conn.execute(
        f"""CREATE FUNCTION "{schema}".refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.result = '"refuse me"'::jsonb THEN
                RAISE EXCEPTION 'string too long' USING ERRCODE = '54000';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse BEFORE UPDATE ON "{schema}".jobs
        FOR EACH ROW EXECUTE FUNCTION "{schema}".refuse();"""
    )
    worker = start_worker("--concurrency", "2")
    refused = jq.identity.delay("refuse me")
    with pytest.raises(RuntimeError, match="refused this job's outcome: string too long"):
        refused.get(timeout=30)
    assert jq.add.delay(2, 3).get(timeout=30) == 5  # later outcomes are recorded
    assert worker.terminate(timeout=30) == 0  # and a warm shutdown finishes


@pytest.mark.parametrize(
    "field, options",
    [("task", {}), ("queue", {"queue": "default\x00-private"})],
)
def test_a_nul_in_a_name_is_refused_not_cut_off(
    jq: Any, schema: str, conn: Any, field: str, options: dict[str, Any]
) -> None:
    """libpq sends text as C strings: "a.b\\x00c" was stored and ran as "a.b"."""
    name = "tests.apps.add\x00c" if field == "task" else "add"
    with pytest.raises(ValueError, match=f"{field} .* contains a NUL character"):
        jq.app.send_task(name, (1, 2), **options)
    count = conn.execute(f'SELECT count(*) FROM "{schema}".all_jobs').fetchone()
    assert count == (0,)


def test_tenants_in_other_schemas_do_not_share_unique_locks(
    jq: Any, dsn: str, schema: str, database_dsn: str
) -> None:
    """The advisory lock behind a unique key did not include the schema: an
    open enqueue of key K in one schema blocked every other schema's K."""
    other_schema = f"tenant_{secrets.token_hex(3)}"
    migrate.upgrade(database_dsn, other_schema)
    other = build(JobQueue(dsn, schema=other_schema, auto_migrate=False))
    done = threading.Event()
    try:
        with psycopg.connect(dsn) as tx:
            jq.once_at_a_time.apply_async(("k",), connection=tx)  # holds the key's lock
            threading.Thread(
                target=lambda: (other.once_at_a_time.delay("k"), done.set()), daemon=True
            ).start()
            assert done.wait(20), "the other tenant's enqueue waited on this transaction"
    finally:
        other.app.close()


def test_a_warm_shutdown_with_the_database_away_ends_after_the_grace_period(
    own_server: tuple[str, Path], tmp_path: Path
) -> None:
    """It used to wait for ever for the completer, which retried its batch
    until the database came back. Now it waits the grace period, then at most
    10 s more, and leaves the jobs to be rescued."""
    server, data_dir = own_server
    migrate.upgrade(server, "away")
    app = JobQueue(server, schema="away", auto_migrate=False)
    tasks = build(app)
    worker = WorkerProcess(
        server, "away", ["--concurrency", "1", "--shutdown-timeout", "3"], tmp_path / "w.log"
    )
    try:
        with psycopg.connect(server, autocommit=True) as conn:
            worker.wait_ready(conn)
            running = tasks.sleep.delay(1.0)
            wait_for(lambda: running.state == states.STARTED, 20, "the job to start")
        app.close()
        embedded.stop(data_dir)
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(40) == 0
        assert "could not record the outcomes of 1 job(s)" in worker.log
    finally:
        if worker.proc.poll() is None:
            worker.kill()


def test_a_heartbeat_in_flight_at_a_clean_exit_does_not_register_the_worker_again(
    jq: Any, schema: str, dsn: str, conn: Any
) -> None:
    """The heartbeat found the row the exit had just removed, took the worker
    for presumed dead and registered it again: a stale row for ever."""
    jq.app.conf.heartbeat_interval = 3600.0  # no beat of its own during the test
    jq.app.conf.lease_ttl = 7200.0
    worker = Worker(jq.app, concurrency=1)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    assert jq.add.delay(1, 1).get(timeout=20) == 2
    worker.stop()
    thread.join(30)
    assert not thread.is_alive()
    try:
        worker.lease.beat()  # the beat that was on its way when the worker left
    finally:
        worker._work.close()
    rows = conn.execute(f'SELECT count(*) FROM "{schema}".workers').fetchone()
    assert rows == (0,)


def test_a_lone_surrogate_in_arguments_is_refused_naming_the_argument(
    jq: Any, schema: str, conn: Any
) -> None:
    """psycopg failed with a UnicodeEncodeError naming no task nor argument."""
    with pytest.raises(ValueError, match="argument 1 of task 'echo' contains a lone surrogate"):
        jq.echo.delay("fine", "bytes\udcffdecoded")
    with pytest.raises(ValueError, match="keyword argument 'k' of task 'echo'"):
        jq.echo.delay(k="\ud800")
    assert jq.echo.delay("é", k="ü").id  # other text beyond ASCII goes through
    count = conn.execute(f'SELECT count(*) FROM "{schema}".all_jobs').fetchone()
    assert count == (1,)


def test_prefetched_jobs_stay_held_until_their_release_commits(
    jq: Any, schema: str, conn: Any
) -> None:
    """A warm shutdown let go of its prefetched jobs before releasing them: a
    second signal arriving in between (a cold exit releases what the worker
    holds, then leaves at once) released the others, and those stayed STARTED
    until their lease lapsed (test_cli's second-signal test, under load)."""
    worker = Worker(jq.app, concurrency=2)
    worker._register()
    jobs = [jq.sleep.delay(0.01).id for _ in range(2)]
    with worker._work as session:
        assert worker._claim(session, 2) == 2  # the pool is not started: both wait in it
    held_during_release: list[set[str]] = []
    release = worker._store.release

    def watched(c: Any, ids: list[str], worker_id: str) -> None:
        held_during_release.append(set(worker._in_flight) & set(ids))
        release(c, ids, worker_id)

    worker._store.release = watched  # type: ignore[method-assign]
    completer = threading.Thread(target=worker._completer.run, daemon=True)
    completer.start()
    try:
        worker._shutdown()
    finally:
        worker._work.close()
    assert held_during_release[0] == set(jobs)  # still held while released
    assert not worker._in_flight
    states_now = conn.execute(
        f'SELECT DISTINCT state FROM "{schema}".jobs WHERE id = ANY(%s::uuid[])', (jobs,)
    ).fetchall()
    assert states_now == [(states.PENDING,)]
