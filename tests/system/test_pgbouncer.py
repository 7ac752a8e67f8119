"""Workers and producers through a real PgBouncer, in transaction and session mode.

Transaction mode hands each transaction whatever server connection is free,
so nothing may rely on session state: psycopg's automatic prepared
statements, session ``SET``s and session advisory locks would collide with or
leak to other clients, and LISTEN hears nothing. Behind it a worker listens on
``listen_dsn`` (a direct connection) or, without one, polls. Session mode
gives each client a server connection of its own, so it behaves like a direct
connection.

The wake-up tests print the measured enqueue-to-start latency of each mode
(docs/deployment.md quotes them); they assert only bounds that tell the
modes apart.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from jobqueue import JobQueue, group
from tests.apps import CustomError, build
from tests.conftest import WorkerProcess, wait_for
from tests.pgbouncer import PgBouncer, PgBouncers, pgbouncer_binary, pgbouncer_version

pytestmark = pytest.mark.skipif(
    pgbouncer_binary() is None,
    reason="pgbouncer is not installed (apt-get install pgbouncer; .ci/run installs it)",
)

TRANSACTION_POOL = 2  # server connections shared by the worker, producers and the test
SESSION_POOL = 40  # one per client connection for as long as it lives: room for all of them
READY = ("SUCCESS", "FAILURE", "REVOKED")
SESSION_SETTINGS = ("plan_cache_mode", "enable_seqscan", "enable_bitmapscan", "jit")


# -- the rig: workers, producers and sessions through a pgbouncer --------------------


@pytest.fixture
def start_pgbouncer(database_dsn: str, tmp_path: Path) -> Iterator[PgBouncers]:
    """``start_pgbouncer(mode, pool_size, max_prepared_statements=0)``: a
    pgbouncer of this test's own in front of the server under test."""
    bouncers = PgBouncers(database_dsn, tmp_path / "pgbouncer")
    try:
        yield bouncers
    finally:
        bouncers.stop_all()


@pytest.fixture
def dbname(database_dsn: str) -> str:
    return str(conninfo_to_dict(database_dsn)["dbname"])


StartWorker = Callable[..., WorkerProcess]


@pytest.fixture
def start_pooled_worker(
    schema: str,
    conn: psycopg.Connection[Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[StartWorker]:
    """``start(dsn, *worker_args, pooler=None, listen_dsn=None)``: a ``jobqueue
    worker`` on ``dsn`` (through a pgbouncer), with ``$JOBQUEUE_POOLER`` and
    ``$JOBQUEUE_LISTEN_DSN`` as given (None: unset). Stopped at teardown."""
    workers: list[WorkerProcess] = []

    def start(
        dsn: str, *args: str, pooler: str | None = None, listen_dsn: str | None = None
    ) -> WorkerProcess:
        with monkeypatch.context() as env:
            for name, value in (("JOBQUEUE_POOLER", pooler), ("JOBQUEUE_LISTEN_DSN", listen_dsn)):
                if value is None:
                    env.delenv(name, raising=False)
                else:
                    env.setenv(name, value)
            log_path = tmp_path / f"worker{len(workers)}.log"
            worker = WorkerProcess(dsn, schema, list(args), log_path)
        workers.append(worker)
        worker.wait_ready(conn)  # asked directly: the test's own connection skips the pooler
        return worker

    yield start
    for worker in workers:
        if worker.proc.poll() is None:
            try:
                worker.terminate(timeout=20)
            except Exception:
                worker.kill()


MakeProducer = Callable[..., SimpleNamespace]


@pytest.fixture
def make_producer(schema: str) -> Iterator[MakeProducer]:
    """``make(dsn, **settings)``: the test tasks on an app of this test's schema."""
    apps: list[JobQueue] = []

    def make(dsn: str, **settings: Any) -> SimpleNamespace:
        app = JobQueue(dsn, schema=schema, auto_migrate=False, **settings)
        apps.append(app)
        return build(app)

    yield make
    for app in apps:
        app.close()


def _session_state(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """What one server session carries that a client could inherit from another."""
    row = conn.execute(
        "SELECT pg_backend_pid(), "
        + ", ".join(f"current_setting('{name}')" for name in SESSION_SETTINGS)
        + ", (SELECT coalesce(array_agg(objid::text ORDER BY objid), '{}') FROM pg_locks"
        "     WHERE pid = pg_backend_pid() AND locktype = 'advisory')"
        ", (SELECT coalesce(array_agg(name ORDER BY name), '{}') FROM pg_prepared_statements)"
    ).fetchone()
    assert row is not None
    pid, *settings, locks, prepared = row
    return {
        "pid": pid,
        "settings": dict(zip(SESSION_SETTINGS, settings, strict=True)),
        "advisory locks": locks,
        "prepared statements": prepared,
    }


def _sample_server_sessions(bouncer: PgBouncer, dbname: str) -> list[dict[str, Any]]:
    """The state of every server connection the pgbouncer holds for ``dbname``,
    as fresh clients see it. Each client stays in a transaction, so holds its
    server connection, until all have looked: in transaction mode ``pool_size``
    clients hold every server connection there can be; in session mode (asked
    when no other client is connected) as many clients as there are server
    connections get one each."""
    known = bouncer.server_pids(dbname)
    count = bouncer.pool_size if bouncer.mode == "transaction" else max(len(known), 1)
    clients = [psycopg.connect(bouncer.dsn(dbname), prepare_threshold=None) for _ in range(count)]
    try:
        samples = [_session_state(client) for client in clients]  # each opens a transaction
    finally:
        for client in clients:
            client.rollback()
            client.close()
    sampled = {sample["pid"] for sample in samples}
    assert len(sampled) == count, f"{count} clients in transactions shared a server connection"
    assert known <= sampled, f"server connections {known - sampled} were not sampled"
    return samples


def _start_delays(conn: psycopg.Connection[Any], schema: str, ids: list[str]) -> list[float]:
    rows = conn.execute(
        f"SELECT extract(epoch FROM started_at - created_at)::float8 "
        f'FROM "{schema}".jobs WHERE id = ANY(%s::uuid[])',
        (ids,),
    ).fetchall()
    assert len(rows) == len(ids)
    return [float(row[0]) for row in rows]


def _wait_for_a_heartbeat(conn: psycopg.Connection[Any], schema: str, worker_id: Any) -> None:
    statement = f'SELECT heartbeat_at FROM "{schema}".workers WHERE id = %s'
    before = conn.execute(statement, (worker_id,)).fetchone()

    def beaten() -> bool:
        now = conn.execute(statement, (worker_id,)).fetchone()
        return now is not None and before is not None and now[0] > before[0]

    wait_for(beaten, 10, "another heartbeat")


def _mode_line(worker: WorkerProcess, mode: str) -> str:
    """The worker's start-up line saying it runs behind a pooler in ``mode``
    ("poll-only" or "listen_dsn")."""

    def line() -> str | None:
        for text in worker.log.splitlines():
            if "pooler" in text and mode in text:
                return text
        return None

    found: str = wait_for(line, 10, f"the worker to log that it runs {mode} behind a pooler")
    return found


# -- drain ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_jobs_enqueued_through_pgbouncer_all_run_exactly_once(
    mode: str,
    dbname: str,
    schema: str,
    conn: psycopg.Connection[Any],
    start_pgbouncer: PgBouncers,
    start_pooled_worker: StartWorker,
    make_producer: MakeProducer,
) -> None:
    """1,000 single delay() calls from two threads and 2,000 in one bulk
    enqueue, while a worker drains them; every job and every task (which
    writes through the worker's own pool) goes through the pgbouncer. In
    transaction mode the pooler is detected (``pooler="auto"``) and the worker
    polls; in session mode it is named and the worker listens through it."""
    bouncer = start_pgbouncer(
        mode, pool_size=TRANSACTION_POOL if mode == "transaction" else SESSION_POOL
    )
    through = bouncer.dsn(dbname)
    pooler = "auto" if mode == "transaction" else "session"
    conn.execute(f'CREATE TABLE "{schema}".runs (key text NOT NULL)')
    table = f"{schema}.runs"
    worker = start_pooled_worker(
        through, "--concurrency", "4", "--poll-interval", "0.5", pooler=pooler
    )
    jq = make_producer(through, pooler=pooler, pool_max_size=4)

    started = time.monotonic()
    with ThreadPoolExecutor(2) as threads:
        singles = threads.map(lambda i: jq.note_run.delay(table, f"single-{i}").id, range(1000))
        bulk = jq.app.enqueue_many(jq.note_run, [(table, f"bulk-{i}") for i in range(2000)])
        ids = [*singles, *(result.id for result in bulk)]
    enqueued = time.monotonic() - started

    def finished() -> bool:
        row = conn.execute(
            f'SELECT count(*) FROM "{schema}".jobs WHERE state = ANY(%s)', (list(READY),)
        ).fetchone()
        return bool(row and row[0] == len(ids))

    wait_for(finished, 60, f"the {len(ids)} jobs to finish")
    drained = time.monotonic() - started
    print(
        f"pgbouncer {mode} mode: {len(ids)} jobs enqueued in {enqueued:.2f} s, "
        f"all finished after {drained:.2f} s"
    )
    states = dict(
        conn.execute(f'SELECT state, count(*) FROM "{schema}".jobs GROUP BY state').fetchall()
    )
    assert states == {"SUCCESS": len(ids)}
    runs = conn.execute(f'SELECT count(*), count(DISTINCT key) FROM "{schema}".runs').fetchone()
    assert runs == (len(ids), len(ids)), "a task ran twice, or not at all"
    attempts = conn.execute(f'SELECT max(attempts) FROM "{schema}".jobs').fetchone()
    assert attempts == (1,), "a job needed more than one attempt"
    assert worker.proc.poll() is None
    assert "DuplicatePreparedStatement" not in worker.log
    assert worker.terminate() == 0


# -- wake-up latency -------------------------------------------------------------------------

# (pool mode, worker listens on listen_dsn, poll interval): poll-only polls every
# second; the listening modes poll every 30 s, so a start within seconds was a NOTIFY.
WAKEUP_CASES = {
    "transaction+listen_dsn": ("transaction", True, 30.0),
    "transaction-poll-only": ("transaction", False, 1.0),
    "session": ("session", False, 30.0),
}


@pytest.mark.parametrize("case", list(WAKEUP_CASES))
def test_enqueue_to_start_latency_through_pgbouncer(
    case: str,
    dbname: str,
    database_dsn: str,
    schema: str,
    conn: psycopg.Connection[Any],
    start_pgbouncer: PgBouncers,
    start_pooled_worker: StartWorker,
    make_producer: MakeProducer,
) -> None:
    """An idle worker behind the pgbouncer starts a new job within ms when it
    hears NOTIFYs (on listen_dsn in transaction mode, through the pooler in
    session mode), within its poll interval when it polls; a pooler detected
    with ``pooler="auto"`` is logged with the mode the worker runs in."""
    mode, listens, poll = WAKEUP_CASES[case]
    bouncer = start_pgbouncer(
        mode, pool_size=TRANSACTION_POOL if mode == "transaction" else SESSION_POOL
    )
    through = bouncer.dsn(dbname)
    pooler = "auto" if mode == "transaction" else "session"
    listen_dsn = database_dsn if listens else None
    worker = start_pooled_worker(
        through, "--poll-interval", str(poll), pooler=pooler, listen_dsn=listen_dsn
    )
    if mode == "transaction":  # detected, not named: pooler="auto"
        _mode_line(worker, "listen_dsn" if listens else "poll-only")
        if listens:
            assert not [
                line for line in worker.log.splitlines() if "pooler" in line and "poll-only" in line
            ], "a worker with listen_dsn said it polls"
    else:  # named: a session pooler keeps sessions, so the worker listens through it
        assert "poll-only" not in worker.log
    jq = make_producer(through, pooler=pooler, listen_dsn=listen_dsn)
    # The first job, enqueued as soon as the worker has registered (a worker
    # that is still settling into its wait must not miss it either).
    first = jq.add.delay(0, 0)
    assert first.get(timeout=poll + 10) == 0
    (first_delay,) = _start_delays(conn, schema, [first.id])
    print(f"{case}: the first job after the worker registered started after {first_delay:.3f} s")
    bound = 3.0 if listens or mode == "session" else poll + 1.0
    assert first_delay < bound, (
        f"{case}: the first job waited {first_delay:.1f} s, for the worker's poll\n"
        + worker.log[-4000:]
    )

    ids = []
    for i in range(5 if poll < 5 else 10):
        result = jq.add.delay(i, i)
        assert result.get(timeout=poll + 10) == 2 * i
        ids.append(result.id)
    delays = sorted(_start_delays(conn, schema, ids))
    print(
        f"enqueue-to-start through pgbouncer, {case} (poll every {poll:g} s): "
        f"p50 {statistics.median(delays) * 1000:.1f} ms, max {delays[-1] * 1000:.1f} ms "
        f"over {len(delays)} jobs"
    )
    assert delays[-1] < bound, (
        f"{case}: a job waited {delays[-1]:.1f} s (poll every {poll:g} s)\n" + worker.log[-4000:]
    )
    assert worker.proc.poll() is None


def test_auto_detects_no_pooler_on_a_direct_connection(
    database_dsn: str,
    schema: str,
    conn: psycopg.Connection[Any],
    start_pgbouncer: PgBouncers,
    start_pooled_worker: StartWorker,
    make_producer: MakeProducer,
    dbname: str,
) -> None:
    """``pooler="auto"`` on a direct DSN: the worker listens (a NOTIFY wakes it
    long before its 30 s poll) and producers keep prepared statements; through
    a transaction-mode pgbouncer the same setting turns them off."""
    worker = start_pooled_worker(database_dsn, "--poll-interval", "30", pooler="auto")
    direct = make_producer(database_dsn, pooler="auto")
    assert direct.add.delay(0, 0).get(timeout=10) == 0
    result = direct.add.delay(1, 2)
    assert result.get(timeout=10) == 3
    (delay,) = _start_delays(conn, schema, [result.id])
    assert delay < 3.0, "a direct worker with pooler='auto' did not listen"
    assert "poll-only" not in worker.log
    with direct.app.db.pool().connection() as pooled:
        assert pooled.prepare_threshold is not None

    bouncer = start_pgbouncer("transaction", pool_size=TRANSACTION_POOL)
    behind = make_producer(bouncer.dsn(dbname), pooler="auto")
    assert behind.add.delay(2, 2).get(timeout=10) == 4
    with behind.app.db.pool().connection() as pooled:
        assert pooled.prepare_threshold is None


# -- AsyncResult.get() ---------------------------------------------------------------------------

GET_CASES = {  # (pool mode, the producer listens on listen_dsn)
    "transaction+listen_dsn": ("transaction", True),
    "transaction-poll-only": ("transaction", False),
    "session": ("session", False),
}


@pytest.mark.parametrize("case", list(GET_CASES))
def test_get_returns_results_through_pgbouncer(
    case: str,
    dbname: str,
    database_dsn: str,
    conn: psycopg.Connection[Any],
    start_pgbouncer: PgBouncers,
    start_pooled_worker: StartWorker,
    make_producer: MakeProducer,
) -> None:
    mode, listens = GET_CASES[case]
    bouncer = start_pgbouncer(
        mode, pool_size=TRANSACTION_POOL if mode == "transaction" else SESSION_POOL
    )
    through = bouncer.dsn(dbname)
    pooler = "auto" if mode == "transaction" else "session"
    listen_dsn = database_dsn if listens else None
    start_pooled_worker(through, "--poll-interval", "0.5", pooler=pooler, listen_dsn=listen_dsn)
    jq = make_producer(through, pooler=pooler, listen_dsn=listen_dsn)

    lags = []
    for _ in range(5):
        result = jq.ticking.delay(0.2)  # finishes while get() waits
        assert result.get(timeout=10) == 0.2
        returned = time.time()
        row = conn.execute(
            f"SELECT extract(epoch FROM finished_at)::float8 FROM "
            f'"{jq.app.conf.schema}".jobs WHERE id = %s',
            (result.id,),
        ).fetchone()
        assert row is not None
        lags.append(returned - row[0])
    print(
        f"get() through pgbouncer, {case}: returned {statistics.median(lags) * 1000:.1f} ms "
        f"(median; max {max(lags) * 1000:.1f} ms) after the job finished"
    )
    recheck = jq.app.conf.result_recheck_interval
    assert max(lags) < recheck + 1.0, "get() waited longer than its re-check interval"

    with pytest.raises(CustomError, match="through the pooler"):
        jq.boom.delay("through the pooler").get(timeout=10)
    assert group(jq.add.s(i, i) for i in range(5))().get(timeout=10) == [0, 2, 4, 6, 8]


# -- nothing leaks to other clients ---------------------------------------------------------------


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_nothing_leaks_to_other_clients_of_the_pool(
    mode: str,
    dbname: str,
    database_dsn: str,
    schema: str,
    conn: psycopg.Connection[Any],
    start_pgbouncer: PgBouncers,
    start_pooled_worker: StartWorker,
    make_producer: MakeProducer,
) -> None:
    """A worker (maintenance leader, heartbeating twice a second) and producers
    run their whole repertoire through a pgbouncer whose server connections
    they share; then fresh clients of the same pgbouncer, holding every server
    connection it has, see stock settings, no advisory lock and no prepared
    statement, several times over: while the worker runs (transaction mode),
    and after it and the producers are gone."""
    with psycopg.connect(database_dsn, autocommit=True) as direct:
        stock = _session_state(direct)["settings"]
    bouncer = start_pgbouncer(
        mode, pool_size=TRANSACTION_POOL if mode == "transaction" else SESSION_POOL
    )
    through = bouncer.dsn(dbname)
    pooler = "auto" if mode == "transaction" else "session"
    worker = start_pooled_worker(
        through,
        "--concurrency",
        "4",
        "--poll-interval",
        "0.5",
        "--heartbeat-interval",
        "0.5",
        pooler=pooler,
    )
    jq = make_producer(through, pooler=pooler, pool_max_size=4)

    with ThreadPoolExecutor(2) as threads:
        singles = list(threads.map(lambda i: jq.add.delay(i, 1), range(200)))
    bulk = jq.app.enqueue_many(jq.add, [(i, 2) for i in range(300)])
    assert [r.get(timeout=30) for r in singles[-5:]] == [i + 1 for i in range(195, 200)]
    assert bulk[-1].get(timeout=30) == 301
    assert (jq.add.s(1, 2) | jq.add.s(10))().get(timeout=10) == 13
    assert group(jq.mul.s(i, 3) for i in range(4))().get(timeout=10) == [0, 3, 6, 9]
    assert jq.once_at_a_time.delay("k").get(timeout=10) == "k"
    assert jq.rate_limited.delay(7).get(timeout=10) == 7
    later = jq.add.apply_async((1, 1), countdown=60)
    later.revoke()
    assert later.state == "REVOKED"

    # The worker leads maintenance and has heartbeaten since: rescue,
    # retention and the vacuum check ran through the pooler too.
    worker_id = wait_for(
        lambda: conn.execute(
            f'SELECT w.id FROM "{schema}".workers AS w JOIN "{schema}".maintenance_leader '
            "AS m ON m.worker_id = w.id WHERE w.pid = %s",
            (worker.proc.pid,),
        ).fetchone(),
        15,
        "the worker to lead maintenance",
    )[0]
    for _ in range(2):
        _wait_for_a_heartbeat(conn, schema, worker_id)

    def check(when: str) -> None:
        for _ in range(3):
            for sample in _sample_server_sessions(bouncer, dbname):
                where = f"server backend {sample['pid']} ({mode} mode, {when})"
                assert sample["settings"] == stock, f"{where}: session settings leaked"
                assert sample["advisory locks"] == [], f"{where}: advisory locks leaked"
                assert sample["prepared statements"] == [], f"{where}: prepared statements leaked"

    if mode == "transaction":  # in session mode the worker's connections are its own
        check("while the worker runs")
    assert worker.terminate() == 0
    jq.app.close()
    wait_for(lambda: bouncer.quiet(dbname), 15, "every client to leave the pgbouncer")
    check("after the worker and producers left")


@pytest.mark.skipif(
    (pgbouncer_version() or (0, 0)) < (1, 21),
    reason=f"pgbouncer {pgbouncer_version()} has no max_prepared_statements (1.21+)",
)
def test_prepared_statements_through_pgbouncer_with_max_prepared_statements(
    dbname: str,
    start_pgbouncer: PgBouncers,
    start_pooled_worker: StartWorker,
    make_producer: MakeProducer,
) -> None:
    """pgbouncer >= 1.21 tracks prepared statements per client: a producer
    with ``prepared_statements=True`` keeps them, in transaction mode."""
    bouncer = start_pgbouncer(
        "transaction", pool_size=TRANSACTION_POOL, max_prepared_statements=100
    )
    through = bouncer.dsn(dbname)
    start_pooled_worker(through, "--poll-interval", "0.5", pooler="transaction")
    jq = make_producer(through, pooler="transaction", prepared_statements=True)
    with ThreadPoolExecutor(2) as threads:
        results = list(threads.map(lambda i: jq.add.delay(i, i), range(200)))
    assert [r.get(timeout=30) for r in results] == [2 * i for i in range(200)]
    with jq.app.db.pool().connection() as pooled:
        assert pooled.prepare_threshold is not None


def test_atomic_tasks_through_pgbouncer_in_transaction_mode(
    dbname: str,
    schema: str,
    conn: psycopg.Connection[Any],
    start_pgbouncer: PgBouncers,
    tmp_path: Path,
) -> None:
    """An atomic task's transaction holds one server connection of the pool for
    its run: its writes and its job's success commit together through the
    pooler, and a time limit ends a transaction stuck in a statement on the
    server (found by its application_name, which the pooler passes on)."""
    from tests.apps_atomic import build as build_atomic

    bouncer = start_pgbouncer("transaction", pool_size=4)
    through = bouncer.dsn(dbname)
    conn.execute(f'CREATE TABLE "{schema}".effects (job uuid, n int)')
    worker = WorkerProcess(
        through,
        schema,
        ["--concurrency", "2", "--poll-interval", "0.2"],
        tmp_path / "atomic-worker.log",
        app="tests.apps_atomic:app",
    )
    try:
        worker.wait_ready(conn)
        app = JobQueue(through, schema=schema, auto_migrate=False, pooler="transaction")
        ja = build_atomic(app)
        try:
            results = [ja.insert.delay(i) for i in range(50)]
            assert [r.get(timeout=60) for r in results] == list(range(50))
            failed = ja.insert_then_fail.delay(99)
            with pytest.raises(ValueError, match="failed after writing 99"):
                failed.get(timeout=60)
            stuck = ja.slow.apply_async((60,), time_limit=1)
            with pytest.raises(Exception, match="time limit"):
                stuck.get(timeout=30)
            assert ja.insert.delay(100).get(timeout=30) == 100  # the worker went on
        finally:
            app.close()
    finally:
        worker.terminate()
    found = conn.execute(f'SELECT n FROM "{schema}".effects ORDER BY n').fetchall()
    assert [n for (n,) in found] == [*range(50), 100]
