"""Async connections: our own pool per event loop, and running our statements
on an async connection the caller owns.

The async twin of ``jobqueue.db.Database``, with the same promises: a caller's
connection (psycopg ``AsyncConnection``, SQLAlchemy ``AsyncConnection`` or
``AsyncSession``) runs the statement inside the caller's transaction and
commits nothing; without one, the statement runs on a pooled autocommit
connection and transient failures are retried for ``db_retry_seconds``, with
the same duplicate-id rule (``DuplicateJobError`` on the first try, success on
a retry). Statements are prepared on the server unless ``app.conf.pooler`` /
``prepared_statements`` say they may not be, as on the sync path.

An ``AsyncConnectionPool`` belongs to the event loop that opened it (its
locks and maintenance tasks live there), so there is one per loop, opened
lazily by the first statement run on that loop; ``await app.aclose()`` closes
the running loop's, and so does the loop's own shutdown (``asyncio.run``
cancelling its tasks), through a task that only waits for that.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from .. import db as db_module
from ..db import Row, committed_before, may_retry

if TYPE_CHECKING:
    from ..db import Database

log = logging.getLogger(__name__)

Params = Mapping[str, Any]


class AsyncDatabase:
    """The async side of one app's ``Database``: its settings, DSN and schema
    readiness are the sync side's (checked once, off the loop)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._pools: dict[asyncio.AbstractEventLoop, AsyncConnectionPool[Any]] = {}
        self._opening: dict[asyncio.AbstractEventLoop, asyncio.Future[Any]] = {}
        self._guards: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}

    @property
    def sql(self) -> dict[str, str]:
        return self.db.sql

    async def ready(self) -> None:
        """The schema checked (or migrated) and the pooler known, once per app.
        That first contact may start the embedded server or run migrations:
        it runs in a thread, once, never on the enqueue's path after."""
        if not self.db._ready:
            await asyncio.to_thread(self.db.ensure_schema)

    async def pool(self) -> AsyncConnectionPool[Any]:
        """The running loop's pool, opened on first use (by one caller: the
        others on the loop wait for it, and try themselves if it was cancelled)."""
        loop = asyncio.get_running_loop()
        while True:
            pool = self._pools.get(loop)
            if pool is not None:
                return pool
            opening = self._opening.get(loop)
            if opening is None:
                break
            try:
                opened: AsyncConnectionPool[Any] = await asyncio.shield(opening)
                return opened
            except asyncio.CancelledError:
                if not opening.cancelled():
                    raise  # this caller was cancelled, not the one opening
        opening = self._opening[loop] = loop.create_future()
        try:
            pool = await self._open()
        except BaseException as exc:
            del self._opening[loop]
            if isinstance(exc, asyncio.CancelledError):
                opening.cancel()
            else:
                opening.set_exception(exc)
                opening.exception()  # retrieved: no warning when nobody else waits
            raise
        self._forget_closed_loops()
        self._pools[loop] = pool
        self._guards[loop] = loop.create_task(self._guard(loop, pool), name="jobqueue-pool")
        del self._opening[loop]
        opening.set_result(pool)
        return pool

    async def _open(self) -> AsyncConnectionPool[Any]:
        await self.ready()
        db, settings = self.db, self.db.settings
        # In a worker (its async tasks enqueue), sized and set up as the sync
        # task pool is (Database.pool): small, emptied when idle, its sockets
        # giving up within the lease.
        worker = db._worker
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "application_name": "jobqueue-tasks" if worker else "jobqueue",
            **(db.worker_socket_options() if worker else {}),
        }
        # Only our own few statements run on these connections: prepare each at
        # its first use (psycopg's default waits for the fifth), or never
        # behind a transaction pooler, as the sync path decides (db.prepared).
        kwargs["prepare_threshold"] = 0 if db.prepared else None
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            db.dsn(),
            min_size=0 if worker else 1,
            max_size=settings.task_pool_max_size if worker else settings.pool_max_size,
            max_idle=60.0 if worker else 600.0,
            kwargs=kwargs,
            open=False,
            configure=_abort_on_close if db._abortive_close else None,
            name="jobqueue-async",
        )
        try:
            await pool.open(wait=True, timeout=30)
        except BaseException:
            await pool.close()  # its maintenance tasks must not outlive the attempt
            raise
        return pool

    async def _guard(self, loop: asyncio.AbstractEventLoop, pool: AsyncConnectionPool[Any]) -> None:
        """Close ``pool`` when this task is cancelled: by ``close()``, or by
        the loop's shutdown (``asyncio.run`` cancels every task as it ends).
        Without it, a loop ending with the pool open could hang: the pool's
        maintenance tasks survive being cancelled while they reconnect, and
        ``asyncio.run`` waits for them forever."""
        try:
            await loop.create_future()  # never done: only cancellation ends it
        finally:
            if self._pools.get(loop) is pool:
                del self._pools[loop]
            self._guards.pop(loop, None)
            await pool.close(timeout=5.0)

    def _forget_closed_loops(self) -> None:
        for loop in [loop for loop in list(self._pools) if loop.is_closed()]:
            log.debug("dropping the async pool of a closed event loop")
            del self._pools[loop]
            self._guards.pop(loop, None)

    async def close(self) -> None:
        """Close the running loop's pool (and forget those of closed loops)."""
        loop = asyncio.get_running_loop()
        guard = self._guards.get(loop)
        self._forget_closed_loops()
        if guard is not None:
            guard.cancel()
            with suppress(asyncio.CancelledError):
                await guard

    # -- running our statements ------------------------------------------------

    async def execute(
        self,
        name: str,
        params: Params,
        connection: Any = None,
        *,
        idempotent: bool = False,
        retry_as: str | None = None,
    ) -> list[Row]:
        """Run named statement ``name``: in the caller's transaction if given a
        connection, else on a pooled autocommit connection, retrying transient
        failures (``Database.execute``'s rules; ``idempotent`` and
        ``retry_as`` mean the same)."""
        statement = self.db.sql[name]
        if connection is not None:
            return await run_on(connection, statement, params)
        pool = self._pools.get(asyncio.get_running_loop()) or await self.pool()
        deadline = time.monotonic() + self.db.settings.db_retry_seconds
        delay = 0.05
        attempt = 0
        while True:
            attempt += 1
            if attempt == 2 and retry_as is not None:
                name = retry_as
                statement = self.db.sql[name]
            try:
                async with pool.connection(timeout=max(deadline - time.monotonic(), 0.1)) as conn:
                    cursor = await conn.execute(statement, params)
                    return await cursor.fetchall() if cursor.description is not None else []
            except psycopg.errors.UniqueViolation as exc:
                if committed_before(exc, attempt, idempotent):
                    return []
                raise
            except psycopg.OperationalError as exc:
                if not may_retry(exc, name, delay, deadline):
                    raise
                await pool.check()  # drop every broken idle connection at once
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    @asynccontextmanager
    async def transaction(self, connection: Any = None) -> AsyncIterator[Any]:
        """Several statements as one: in the caller's transaction when given a
        connection, else in a transaction on a pooled connection."""
        if connection is not None:
            yield connection
            return
        pool = self._pools.get(asyncio.get_running_loop()) or await self.pool()
        async with pool.connection() as conn, conn.transaction():
            yield conn

    async def run(self, connection: Any, name: str, params: Params) -> list[Row]:
        """Run named statement ``name`` on a connection from ``transaction()``."""
        return await run_on(connection, self.db.sql[name], params)


async def _abort_on_close(conn: psycopg.AsyncConnection[Any]) -> None:
    """``jobqueue.db._abort_on_close`` for a process-pool child's async pool."""
    db_module._abort_on_close(conn)  # type: ignore[arg-type]  # it only reads the socket


async def run_on(connection: Any, statement: str, params: Params) -> list[Row]:
    """Execute on a caller-owned async connection without committing anything.

    Accepts a psycopg ``AsyncConnection``, a SQLAlchemy ``AsyncConnection`` or
    an ``AsyncSession`` (with the psycopg driver, ``postgresql+psycopg://``);
    SQLAlchemy objects are recognised without importing it.
    """
    if isinstance(connection, psycopg.AsyncConnection):
        cursor = await connection.execute(statement, params)
        return await cursor.fetchall() if cursor.description is not None else []
    core = await sqlalchemy_connection(connection)
    result = await core.exec_driver_sql(statement, dict(params))
    return [tuple(row) for row in result.fetchall()] if result.returns_rows else []


async def sqlalchemy_connection(connection: Any) -> Any:
    """The SQLAlchemy ``AsyncConnection`` behind a caller's ``AsyncConnection``
    or ``AsyncSession`` (the session's transaction begins if it had not);
    TypeError for anything else."""
    module = type(connection).__module__
    if module.startswith("sqlalchemy.ext.asyncio"):
        if hasattr(connection, "exec_driver_sql"):  # AsyncConnection
            core = connection
        elif hasattr(connection, "connection") and hasattr(connection, "commit"):  # AsyncSession
            core = await connection.connection()
        else:
            core = None
        if core is not None:
            # Our statements are written with %(name)s placeholders, which the
            # psycopg driver takes as they are; asyncpg's would be a syntax error.
            if core.dialect.paramstyle != "pyformat":
                raise TypeError(
                    "connection= must use SQLAlchemy's psycopg driver "
                    f"(postgresql+psycopg://), not {core.dialect.driver!r}"
                )
            return core
    hint = ""
    if isinstance(connection, psycopg.Connection) or (
        module.startswith("sqlalchemy.") and not module.startswith("sqlalchemy.ext.asyncio")
    ):
        hint = " (a sync connection goes to the sync API: apply_async, enqueue_many)"
    raise TypeError(
        "connection= must be a psycopg AsyncConnection, a SQLAlchemy AsyncConnection or "
        f"an AsyncSession, got {module}.{type(connection).__name__}{hint}"
    )


async def psycopg_connection(connection: Any) -> psycopg.AsyncConnection[Any] | None:
    """The psycopg ``AsyncConnection`` behind a caller's async connection."""
    if isinstance(connection, psycopg.AsyncConnection):
        return connection
    core = await sqlalchemy_connection(connection)
    raw = await core.get_raw_connection()
    driver = getattr(raw, "driver_connection", None)
    return driver if isinstance(driver, psycopg.AsyncConnection) else None
