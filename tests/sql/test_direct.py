"""Single enqueues through libpq (jobqueue.direct): the same rows and the same
errors as through psycopg, and recovery when the session forgets its statement."""

from __future__ import annotations

import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

from jobqueue import DuplicateJobError, JobQueue
from jobqueue.direct import compile_statement
from jobqueue.ids import new_id
from jobqueue.options import resolve
from jobqueue.store.base import insert_statement
from tests.apps import build
from tests.conftest import ROOT, wait_for

_COLUMNS = (
    "task, queue, priority, state, args, kwargs, options, "
    "run_at - created_at > interval '50 seconds', expires_at, root_id, parent_id"
)
_WAITING = "queue, priority, task, rate_key, concurrency_key, args, kwargs, options, expires_at"


def _job(conn: Any, schema: str, job_id: str) -> tuple[Any, ...]:
    record = conn.execute(
        f'SELECT {_COLUMNS} FROM "{schema}".all_jobs WHERE id = %s', (job_id,)
    ).fetchone()
    waiting = conn.execute(
        f'SELECT {_WAITING} FROM "{schema}".job_queue WHERE job_id = %s', (job_id,)
    ).fetchone()
    return record, waiting


def _prepared_here(pooled: psycopg.Connection[Any]) -> list[str]:
    rows = pooled.execute(
        "SELECT name FROM pg_prepared_statements WHERE name LIKE 'jobqueue\\_%'"
    ).fetchall()
    return [r[0] for r in rows]


def test_compiled_statement_numbers_each_name_once() -> None:
    statement = compile_statement("SELECT %(a)s::int, %(b)s, %(a)s + 1, 'x' LIKE '%%y', %(c)s")
    assert statement.text == b"SELECT $1::int, $2, $1 + 1, 'x' LIKE '%y', $3"
    assert statement.params == ("a", "b", "c")
    assert statement.name.startswith(b"jobqueue_")
    # Named after the text the server sees: the same statement, the same name.
    assert compile_statement("SELECT %(a)s").name == compile_statement("SELECT %(b)s").name
    assert compile_statement("SELECT %(a)s").name != compile_statement("SELECT -%(a)s").name


def test_libpq_enqueue_writes_what_psycopg_writes(jq: Any, schema: str, conn: Any) -> None:
    expires = datetime(2031, 1, 2, 3, 4, 5, 678000, tzinfo=timezone(timedelta(hours=2)))
    options: dict[str, Any] = {"countdown": 60.5, "expires": expires, "priority": 7}
    cases = [
        (jq.echo, (1, "two", None), {"k": [1.5, True]}, {"queue": "other", **options}),
        (jq.per_account, ("acct-1", 0.1), {}, options),
        (jq.rate_limited, (3,), {}, {}),
        (jq.echo, ("plain",), {}, {}),  # none of the optional values: job_insert_plain
    ]
    db = jq.app.db
    with db.direct_connection() as c:
        c.execute("DEALLOCATE ALL")
    for task, args, kwargs, extra in cases:
        direct = task.apply_async(args, kwargs, **extra)
        with conn.transaction():
            through_psycopg = task.apply_async(args, kwargs, connection=conn, **extra)
        record, waiting = _job(conn, schema, direct.id)
        assert record is not None and waiting is not None
        assert (record, waiting) == _job(conn, schema, through_psycopg.id)
    with db.direct_connection() as c:  # one set-aside connection: the one delay() used
        assert len(_prepared_here(c)) == 2  # job_insert and job_insert_plain


def test_the_plain_enqueue_writes_what_the_full_one_writes(jq: Any, schema: str, conn: Any) -> None:
    """job_insert_plain is job_insert with its optional values as the constants
    they stand for: a job with none of them set is the same row either way,
    and a job with any of them set takes job_insert."""
    app = jq.app
    spec = resolve(app, jq.echo.name, jq.echo, (1, "two"), {"k": [3]}, {"priority": 4})
    rows = []
    for name in ("job_insert", "job_insert_plain"):
        params = spec._replace(id=new_id()).params()
        assert insert_statement(params) == "job_insert_plain"
        app.db.execute(name, params)
        rows.append(_job(conn, schema, params["id"]))
    assert rows[0][0] is not None and rows[0] == rows[1]
    moment = datetime.now(timezone.utc) + timedelta(hours=1)
    for task, call in [
        (jq.echo, {"countdown": 5}),
        (jq.echo, {"eta": moment}),
        (jq.echo, {"expires": 30}),
        (jq.echo, {"expires": moment}),
        (jq.echo, {"fair_key": "tenant-1"}),
        (jq.rate_limited, {}),
        (jq.per_account, {}),
    ]:
        args = ("acct-1", 0.1) if task is jq.per_account else (1,)
        params = resolve(app, task.name, task, args, {}, call).params()
        assert insert_statement(params) == "job_insert", (task.name, call)


def test_a_session_that_forgot_the_statement_prepares_it_again(
    jq: Any, schema: str, conn: Any
) -> None:
    first = jq.add.delay(1, 2)
    db = jq.app.db
    with db.direct_connection() as c:
        [name] = _prepared_here(c)
        c.execute("DISCARD ALL")
        assert _prepared_here(c) == []
    second = jq.add.delay(3, 4)
    with db.direct_connection() as c:
        assert _prepared_here(c) == [name]
    count = conn.execute(
        f'SELECT count(*) FROM "{schema}".job_queue WHERE job_id IN (%s, %s)',
        (first.id, second.id),
    ).fetchone()
    assert count == (2,)


def test_errors_keep_psycopg_diagnostics_and_the_pooled_connection(
    jq: Any, schema: str, conn: Any
) -> None:
    first = jq.add.delay(1, 2)
    with pytest.raises(DuplicateJobError, match="already exists"):
        jq.add.apply_async((5, 6), task_id=first.id)
    assert jq.add.delay(7, 8).id != first.id
    rows = conn.execute(f'SELECT args FROM "{schema}".all_jobs ORDER BY id').fetchall()
    assert rows == [([1, 2],), ([7, 8],)]  # the duplicate wrote nothing
    with jq.app.db.direct_connection() as c:
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_a_killed_pooled_connection_is_replaced(jq: Any, schema: str, conn: Any) -> None:
    jq.add.delay(1, 2)
    with jq.app.db.direct_connection() as c:
        pid = c.info.backend_pid
    assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
    retried = jq.add.delay(3, 4)  # the dead session fails in libpq; the retry takes a new one
    rows = conn.execute(f'SELECT args FROM "{schema}".all_jobs ORDER BY id').fetchall()
    assert rows == [([1, 2],), ([3, 4],)]
    # The retry wrote the record at once (job_insert_recorded): had the lost try
    # committed and been claimed meanwhile, the key of jobs would refuse it.
    record = conn.execute(
        f'SELECT args FROM "{schema}".jobs WHERE id = %s', (retried.id,)
    ).fetchone()
    assert record == ([3, 4],)
    with jq.app.db.direct_connection() as c:
        assert c.info.backend_pid != pid


_BLOCKED_ENQUEUE = """
import sys
from jobqueue import JobQueue
from tests.apps import build
app = JobQueue(sys.argv[1], schema=sys.argv[2], auto_migrate=False)
tasks = build(app)
try:
    tasks.add.apply_async((1, 2), task_id=sys.argv[3])
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(3)
"""


def test_ctrl_c_interrupts_an_enqueue_waiting_on_a_duplicate_id(
    jq: Any, dsn: str, schema: str, conn: Any
) -> None:
    """A caller's task_id can wait on another transaction's uncommitted insert of
    the same id; Ctrl-C must reach it (libpq's blocking call would swallow it)."""
    job_id = "0190a0a0-0000-7000-8000-00000000c7c1"
    with psycopg.connect(dsn) as holder:
        jq.add.apply_async((1, 1), task_id=job_id, connection=holder)  # not committed
        proc = subprocess.Popen(
            [sys.executable, "-c", _BLOCKED_ENQUEUE, dsn, schema, job_id],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            waiting = (
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
            wait_for(lambda: conn.execute(waiting).fetchone()[0] == 1, what="the enqueue to wait")
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 3, out.decode()
        assert b"interrupted" in out
        # psycopg cancelled the statement on the server too: nothing waits any more.
        wait_for(lambda: conn.execute(waiting).fetchone()[0] == 0, what="the wait to end")
        holder.rollback()
    assert conn.execute(f'SELECT count(*) FROM "{schema}".all_jobs').fetchone() == (0,)


def test_connections_set_aside_for_enqueues_close_with_the_app(
    dsn: str, schema: str, conn: Any
) -> None:
    """Enqueues from several threads keep up to half the pool aside between
    calls; closing the app gives them back and closes them with the pool."""
    others = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    before = conn.execute(others).fetchone()[0]
    app = JobQueue(dsn, schema=schema, auto_migrate=False)
    tasks = build(app)
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda i: tasks.add.delay(i, i), range(60)))
    assert len({r.id for r in results}) == 60
    assert conn.execute(f'SELECT count(*) FROM "{schema}".job_queue').fetchone() == (60,)
    assert conn.execute(others).fetchone()[0] > before
    app.close()
    wait_for(lambda: conn.execute(others).fetchone()[0] <= before, what="the pool to close")
