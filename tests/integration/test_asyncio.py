"""The asyncio API (jobqueue.aio): real PostgreSQL, real workers.

Coroutines run with ``asyncio.run`` inside plain tests (no pytest plugin):
each test is its own event loop, as an application's would be.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

import jobqueue
from jobqueue import DuplicateJobError, JobQueue, chain, chord, group, signals, states
from tests.apps import CustomError, build

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def count_jobs(conn: psycopg.Connection[Any], schema: str, ids: list[str]) -> int:
    row = conn.execute(
        f'SELECT count(*) FROM "{schema}".all_jobs WHERE id = ANY(%s::uuid[])', (ids,)
    ).fetchone()
    assert row is not None
    return int(row[0])


# -- the caller's async transaction ----------------------------------------------------
# Each adapter opens a transaction, yields (connection-like, run a SQL text), and
# commits or rolls back as told.
TxFactory = Callable[[str, str], AbstractAsyncContextManager[tuple[Any, Any]]]


@asynccontextmanager
async def psycopg_async_tx(dsn: str, outcome: str) -> AsyncIterator[tuple[Any, Any]]:
    async with await psycopg.AsyncConnection.connect(dsn) as c:
        yield c, c.execute
        await (c.commit() if outcome == "commit" else c.rollback())


def _engine(dsn: str) -> Any:
    return create_async_engine(
        "postgresql+psycopg://",
        async_creator=lambda: psycopg.AsyncConnection.connect(dsn),
        poolclass=NullPool,
    )


@asynccontextmanager
async def sqlalchemy_async_tx(dsn: str, outcome: str) -> AsyncIterator[tuple[Any, Any]]:
    engine = _engine(dsn)
    async with engine.connect() as c:
        await c.begin()
        yield c, lambda q: c.execute(text(q))
        await (c.commit() if outcome == "commit" else c.rollback())
    await engine.dispose()


@asynccontextmanager
async def async_session_tx(dsn: str, outcome: str) -> AsyncIterator[tuple[Any, Any]]:
    engine = _engine(dsn)
    async with AsyncSession(engine) as session:
        yield session, lambda q: session.execute(text(q))
        await (session.commit() if outcome == "commit" else session.rollback())
    await engine.dispose()


ADAPTERS: dict[str, TxFactory] = {
    "psycopg_async": psycopg_async_tx,
    "sqlalchemy_async": sqlalchemy_async_tx,
    "async_session": async_session_tx,
}


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_rollback_means_no_job_and_commit_means_one_run(
    adapter: str, jq: Any, dsn: str, schema: str, conn: Any, start_worker: Any
) -> None:
    conn.execute(f'CREATE TABLE "{schema}".orders (id int PRIMARY KEY)')
    start_worker()
    tx = ADAPTERS[adapter]

    async def enqueue_all(c: Any) -> list[Any]:
        one = await jq.add.aapply_async((1, 1), connection=c)
        many = await jq.app.aenqueue_many(jq.add, [(1, 2), {"x": 3, "y": 4}], connection=c)
        flow = await (jq.add.s(1, 1) | jq.add.s(10)).aapply_async(connection=c)
        unique = await jq.once_at_a_time.aapply_async(("k",), connection=c)
        return [one, *many, flow, unique]

    async def main() -> tuple[list[Any], list[Any]]:
        async with tx(dsn, "rollback") as (c, sql):
            await sql(f'INSERT INTO "{schema}".orders VALUES (1)')
            lost = await enqueue_all(c)
        async with tx(dsn, "commit") as (c, sql):
            await sql(f'INSERT INTO "{schema}".orders VALUES (2)')
            kept = await enqueue_all(c)
        values = [await r.aget(timeout=20) for r in kept]
        await jq.app.aclose()
        return lost, values

    lost, values = run(main())
    assert values == [2, 3, 7, 12, "k"]
    orders = [r[0] for r in conn.execute(f'SELECT id FROM "{schema}".orders ORDER BY id')]
    assert orders == [2]
    assert count_jobs(conn, schema, [r.id for r in lost]) == 0  # never existed
    assert all(r.state == states.PENDING for r in lost)


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_aenqueue_many_as_the_first_statement_of_a_transaction_rolls_back_with_it(
    adapter: str, jq: Any, dsn: str, schema: str, conn: Any
) -> None:
    """COPY's own transaction() on a connection with nothing run yet would have
    been a BEGIN ... COMMIT of its own, ahead of the caller's rollback."""
    tx = ADAPTERS[adapter]

    async def main() -> list[Any]:
        async with tx(dsn, "rollback") as (c, _):
            lost = await jq.app.aenqueue_many(jq.add, [(1, 2), (3, 4)], connection=c)
        await jq.app.aclose()
        return lost

    lost = run(main())
    assert count_jobs(conn, schema, [r.id for r in lost]) == 0


def test_adelay_and_aget_round_trip_with_a_worker(jq: Any, start_worker: Any) -> None:
    start_worker()

    async def main() -> tuple[Any, ...]:
        ok = await jq.add.adelay(2, 3)
        bad = await jq.boom.adelay("no")
        sent = await jq.app.asend_task("add", (5, 5))
        value = await ok.aget(timeout=20)
        with pytest.raises(CustomError, match="no"):
            await bad.aget(timeout=20)
        error = await bad.aget(timeout=20, propagate=False)
        many = await asyncio.gather(*(jq.add.adelay(i, i) for i in range(20)))
        doubled = await asyncio.gather(*(r.aget(timeout=20) for r in many))
        again = await sent.aget(timeout=20)
        await jq.app.aclose()
        return value, error, doubled, again

    value, error, doubled, again = run(main())
    assert value == 5
    assert isinstance(error, CustomError)
    assert doubled == [2 * i for i in range(20)]
    assert again == 10


def test_aget_times_out_like_get(jq: Any) -> None:
    async def main() -> tuple[str, str]:
        waiting = await jq.add.aapply_async((1, 2), queue="nobody")
        with pytest.raises(jobqueue.TimeoutError) as async_error:
            await waiting.aget(timeout=0.2)
        await jq.app.aclose()
        return waiting.id, str(async_error.value)

    job_id, message = run(main())
    with pytest.raises(jobqueue.TimeoutError) as sync_error:
        jq.app.AsyncResult(job_id).get(timeout=0.2)
    assert message == str(sync_error.value)
    assert message == f"task {job_id} not ready after 0.2s (state PENDING)"


def test_aget_is_woken_by_the_completion_not_the_recheck(jq: Any, start_worker: Any) -> None:
    """With a recheck interval far beyond the test's timeout, only the
    completion's NOTIFY on the async LISTEN connection can end the wait."""
    jq.app.conf.result_recheck_interval = 60.0
    start_worker()

    async def main() -> int:
        result = await jq.add.adelay(20, 22)
        value: int = await result.aget(timeout=15)
        await jq.app.aclose()
        return value

    assert run(main()) == 42


def test_aenqueue_many(jq: Any, start_worker: Any, conn: Any, schema: str) -> None:
    async def main() -> tuple[list[Any], list[Any], list[Any]]:
        empty = await jq.app.aenqueue_many(jq.add, [])
        results = await jq.app.aenqueue_many(
            jq.add, [(i, 1) for i in range(50)], queue="bulk", priority=3
        )
        unique = await jq.app.aenqueue_many("once_at_a_time", [("a",), ("a",), ("b",)])
        return empty, results, unique

    empty, results, unique = run(main())
    assert empty == []
    assert len(results) == 50
    rows = conn.execute(
        f'SELECT DISTINCT queue, priority FROM "{schema}".all_jobs WHERE id = ANY(%s::uuid[])',
        ([r.id for r in results],),
    ).fetchall()
    assert rows == [("bulk", 3)]
    assert unique[0] == unique[1] != unique[2]  # the repeated key went to its first item
    start_worker("-Q", "bulk,default")

    async def wait_all() -> list[Any]:
        values = [await r.aget(timeout=20) for r in results]
        values.append(await unique[2].aget(timeout=20))
        await jq.app.aclose()
        return values

    values = run(wait_all())
    assert values == [i + 1 for i in range(50)] + ["b"]


def test_canvas_aapply_async(jq: Any, start_worker: Any) -> None:
    start_worker()

    async def main() -> tuple[Any, ...]:
        flow = await chain(jq.add.s(1, 2), jq.add.s(3), jq.mul.s(10)).aapply_async()
        fan = await group(jq.add.s(i, i) for i in range(4)).aapply_async()
        gathered = await chord([jq.add.s(1, 1), jq.add.s(2, 2)], jq.tsum.s()).aapply_async()
        chunked = await jq.add.chunks([(1, 1), (2, 2), (3, 3)], 2).aapply_async()
        linked = await jq.add.aapply_async((1, 1), link=jq.mul.s(5))
        out = (
            await flow.aget(timeout=20),
            await fan.aget(timeout=20),
            await gathered.aget(timeout=20),
            await chunked.aget(timeout=20),
            await linked.aget(timeout=20),
        )
        child = linked.children  # the link was created when the job finished
        await jq.app.aclose()
        return (*out, child)

    flow, fan, gathered, chunked, linked, children = run(main())
    assert flow == 60
    assert fan == [0, 2, 4, 6]
    assert gathered == 6
    assert chunked == [[2, 4], [6]]
    assert linked == 2
    assert children and children[0].get(timeout=20) == 10


def _outcome(call: Callable[[], Any]) -> tuple[str, str]:
    try:
        call()
    except Exception as exc:  # the point: compare whatever each side raises
        return type(exc).__name__, str(exc)
    return "no error", ""


def test_validation_errors_are_the_sync_ones(jq: Any, conn: Any, schema: str) -> None:
    app, add = jq.app, jq.add
    odd = object()  # the same object on both sides: its repr is in the message
    bad_calls: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
        "unknown option": (
            lambda: add.apply_async((1, 2), bogus=1),
            lambda: run(add.aapply_async((1, 2), bogus=1)),
        ),
        "priority": (
            lambda: add.apply_async((1, 2), priority="high"),
            lambda: run(add.aapply_async((1, 2), priority="high")),
        ),
        "not JSON": (lambda: add.delay(odd, 1), lambda: run(add.adelay(odd, 1))),
        "task_id": (
            lambda: add.apply_async((1, 2), task_id="nope"),
            lambda: run(add.aapply_async((1, 2), task_id="nope")),
        ),
        "countdown": (
            lambda: add.apply_async((1, 2), countdown="soon"),
            lambda: run(add.aapply_async((1, 2), countdown="soon")),
        ),
        "time limits": (
            lambda: add.apply_async((1, 2), soft_time_limit=5, time_limit=1),
            lambda: run(add.aapply_async((1, 2), soft_time_limit=5, time_limit=1)),
        ),
        "headers": (
            lambda: add.apply_async((1, 2), headers={"id": "x"}),
            lambda: run(add.aapply_async((1, 2), headers={"id": "x"})),
        ),
        "many item": (
            lambda: app.enqueue_many(add, [(1, 2), "ab"]),
            lambda: run(app.aenqueue_many(add, [(1, 2), "ab"])),
        ),
        "many not JSON": (
            lambda: app.enqueue_many(add, [(1, odd)]),
            lambda: run(app.aenqueue_many(add, [(1, odd)])),
        ),
        "send_task option": (
            lambda: app.send_task("add", (1, 2), bogus=1),
            lambda: run(app.asend_task("add", (1, 2), bogus=1)),
        ),
        "chord without body": (
            lambda: chord([add.s(1, 1)]).apply_async(),
            lambda: run(chord([add.s(1, 1)]).aapply_async()),
        ),
    }
    for what, (sync_call, async_call) in bad_calls.items():
        sync_outcome = _outcome(sync_call)
        assert sync_outcome[0] != "no error", what
        assert _outcome(async_call) == sync_outcome, what
    assert count_jobs_in(conn, schema) == 0  # a refused call writes nothing


def count_jobs_in(conn: Any, schema: str) -> int:
    row = conn.execute(f'SELECT count(*) FROM "{schema}".all_jobs').fetchone()
    return int(row[0])


def test_a_taken_task_id_and_connections_of_the_wrong_kind(jq: Any, dsn: str) -> None:
    async def main() -> None:
        first = await jq.add.aapply_async((1, 2), task_id="0190d9f0-0000-7000-8000-000000000001")
        with pytest.raises(DuplicateJobError, match="already exists"):
            await jq.add.aapply_async((1, 2), task_id=first.id)
        with psycopg.connect(dsn) as sync_conn, pytest.raises(TypeError, match="sync API"):
            await jq.add.aapply_async((1, 2), connection=sync_conn)
        with pytest.raises(TypeError, match=r"AsyncSession, got builtins\.str"):
            await jq.add.aapply_async((1, 2), connection="postgresql://")
        async with await psycopg.AsyncConnection.connect(dsn) as async_conn:
            with pytest.raises(TypeError, match=r"async API: await task\.aapply_async"):
                jq.add.apply_async((1, 2), connection=async_conn)
            with pytest.raises(TypeError, match="async API"):
                jq.app.enqueue_many(jq.add, [(1, 2)], connection=async_conn)
        await jq.app.aclose()

    run(main())
    with pytest.raises(DuplicateJobError, match="already exists"):
        jq.add.apply_async((1, 2), task_id="0190d9f0-0000-7000-8000-000000000001")


def test_publish_signals_and_hooks_as_in_sync(jq: Any) -> None:
    seen: list[tuple[str, str]] = []

    def before(sender: Any, **kw: Any) -> None:
        seen.append(("before", kw["headers"]["id"]))

    def after(sender: Any, **kw: Any) -> None:
        seen.append(("after", kw["headers"]["id"]))

    signals.before_task_publish.connect(before, weak=False)
    signals.after_task_publish.connect(after, weak=False)
    hooked: list[str] = []
    jq.app.hooks.connect("before_publish", lambda spec: hooked.append(spec.id))
    try:

        async def main() -> list[str]:
            one = await jq.add.adelay(1, 2)
            many = await jq.app.aenqueue_many(jq.add, [(1, 2), (3, 4)])
            await jq.app.aclose()
            return [one.id, *(r.id for r in many)]

        ids = run(main())
    finally:
        signals.before_task_publish.disconnect(before)
        signals.after_task_publish.disconnect(after)
    assert seen == [
        ("before", ids[0]),
        ("after", ids[0]),
        ("before", ids[1]),
        ("before", ids[2]),
        ("after", ids[1]),
        ("after", ids[2]),
    ]
    assert hooked == [ids[0]]


def test_several_event_loops_and_aclose(jq: Any, conn: Any, schema: str) -> None:
    """Each asyncio.run is a new loop: the pool of a loop that ended without
    aclose() is dropped, the new loop opens its own, and aclose() closes it."""

    async def enqueue() -> str:
        return str((await jq.add.adelay(1, 1)).id)

    first = run(enqueue())  # no aclose(): its loop ends with the pool open
    second = run(enqueue())

    async def close() -> int:
        await jq.add.adelay(2, 2)
        side = jq.app.aio
        open_pools = len(side.db._pools)
        await jq.app.aclose()
        assert side.db._pools == {}
        return open_pools

    assert run(close()) == 1  # only this loop's: the others' were dropped
    assert count_jobs(conn, schema, [first, second]) == 2


@pytest.mark.parametrize("pooler", ["none", "transaction"])
def test_the_async_pool_prepares_and_listens_as_the_sync_path_does(
    pooler: str, dsn: str, schema: str, start_worker: Any
) -> None:
    """Statements prepared on the server unless behind a transaction pooler
    (db.prepared); there, with no listen_dsn, aget() polls instead of LISTEN."""
    app = JobQueue(dsn, schema=schema, auto_migrate=False, pooler=pooler)
    tasks = build(app)
    start_worker()

    async def main() -> tuple[list[str], int, bool]:
        first = await tasks.add.adelay(1, 2)
        await tasks.add.adelay(3, 4)
        pool = await app.aio.db.pool()
        async with pool.connection() as c:  # the one connection the enqueues used
            cursor = await c.execute("SELECT statement FROM pg_prepared_statements")
            prepared = [str(row[0]) for row in await cursor.fetchall()]
        value = await first.aget(timeout=20)
        polling = app.aio.waiter().polling
        await app.aclose()
        return prepared, value, polling

    try:
        prepared, value, polling = run(main())
    finally:
        app.close()
    inserts = [s for s in prepared if f'"{schema}".job_queue' in s]
    assert bool(inserts) == (pooler == "none"), prepared
    assert value == 3
    assert polling == (pooler == "transaction")


def test_a_dropped_pool_connection_is_retried_and_writes_one_job(
    jq: Any, conn: Any, schema: str
) -> None:
    """The server ends the pool's session between two enqueues (as a restart
    or an idle timeout would): the next enqueue fails on it, retries on a new
    connection, and the job is written once."""

    async def main() -> str:
        await jq.add.adelay(1, 1)  # the pool is open, its connection idle
        ended = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'jobqueue' AND datname = current_database()"
        ).fetchone()
        assert ended is not None and ended[0] >= 1
        result = await jq.add.adelay(2, 2)
        await jq.app.aclose()
        return str(result.id)

    job_id = run(main())
    assert count_jobs(conn, schema, [job_id]) == 1


def test_a_loop_ending_without_aclose_ends_and_closes_the_pool(jq: Any, conn: Any) -> None:
    """An error escapes asyncio.run() while the pool is reconnecting (its
    session was ended, no retries allowed): the loop still ends at once, and
    its pool is closed with it. (psycopg_pool's maintenance tasks survive a
    cancellation while they connect: asyncio.run waited for them forever.)"""
    jq.app.conf.db_retry_seconds = 0

    async def main() -> None:
        await jq.add.adelay(1, 1)
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'jobqueue' AND datname = current_database()"
        )
        await jq.add.adelay(2, 2)  # fails on the ended session; the pool reconnects

    raised: list[BaseException] = []

    def in_thread() -> None:
        try:
            run(main())
        except BaseException as exc:  # reported below
            raised.append(exc)

    thread = threading.Thread(target=in_thread, daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive(), "asyncio.run() did not end"
    assert [type(e) for e in raised] == [psycopg.errors.AdminShutdown]
    assert jq.app.aio.db._pools == {}


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_an_async_task_enqueues_from_a_worker(
    pool: str, dsn: str, schema: str, start_worker: Any
) -> None:
    """An async task awaits adelay() on the worker's own event loop (a pool
    per loop, sized as the worker's task pool)."""
    app = JobQueue(dsn, schema=schema, auto_migrate=False)
    tasks = build(app)
    start_worker("--pool", pool, app="tests.apps_aio:app")
    try:
        parent = app.send_task("aio.enqueue_add", (21,))
        child = app.AsyncResult(parent.get(timeout=20))
        assert child.get(timeout=20) == 42
        assert tasks.add.name == child.task_name
    finally:
        app.close()


def test_sqlalchemy_with_asyncpg_is_refused_in_one_line(jq: Any, dsn: str) -> None:
    """Our statements' %(name)s placeholders need SQLAlchemy's psycopg driver:
    asyncpg's session is refused before anything runs, saying which to use."""
    p = conninfo_to_dict(dsn)
    host = p.get("host", "127.0.0.1")
    if host.startswith("/"):  # a unix socket (the embedded server): named by ?host=
        url = f"postgresql+asyncpg://{p.get('user', 'postgres')}@/{p['dbname']}?host={host}"
    else:
        url = f"postgresql+asyncpg://{p.get('user', 'postgres')}@{host}"
        url += f":{p.get('port', 5432)}/{p['dbname']}"

    async def main() -> str:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with AsyncSession(engine) as session, session.begin():
                with pytest.raises(TypeError) as refused:
                    await jq.add.aapply_async((1, 2), connection=session)
        finally:
            await engine.dispose()
        return str(refused.value)

    message = run(main())
    assert message == (
        "connection= must use SQLAlchemy's psycopg driver (postgresql+psycopg://), not 'asyncpg'"
    )


def test_the_first_enqueues_on_a_loop_open_one_pool(jq: Any, conn: Any, schema: str) -> None:
    """Coroutines enqueueing at once on a new loop share the pool the first
    one opens; if that one is cancelled while opening, another opens it."""

    async def main() -> tuple[list[str], int, bool]:
        first = asyncio.ensure_future(jq.add.adelay(0, 0))
        await asyncio.sleep(0)  # it starts opening the pool (the first contact, in a thread)
        others = [asyncio.ensure_future(jq.add.adelay(i, i)) for i in range(1, 10)]
        await asyncio.sleep(0)  # they wait for it
        first.cancel()
        results = await asyncio.gather(*others)
        pools = len(jq.app.aio.db._pools)
        await jq.app.aclose()
        return [r.id for r in results], pools, first.cancelled()

    ids, pools, cancelled = run(main())
    assert (pools, cancelled) == (1, True)
    assert count_jobs(conn, schema, ids) == 9


def test_aclose_closes_the_sync_pool_too(jq: Any) -> None:
    jq.add.delay(1, 1)  # the sync pool opens
    assert jq.app.db._pool is not None

    async def main() -> None:
        await jq.add.adelay(2, 2)
        await jq.app.aclose()

    run(main())
    assert jq.app.db._pool is None
    assert jq.app.aio.db._pools == {}
