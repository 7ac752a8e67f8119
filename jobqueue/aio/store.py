"""The async half of the SQL boundary: the statements an async producer runs.

Each method is its ``jobqueue.store.Store`` namesake with ``await``: the
same named statements, the same parameters, the same transactions (a unique
key's lock with its insert), so a job written from async code is the row the
sync API writes.
"""

from __future__ import annotations

from typing import Any

import psycopg

from ..copytext import copy_chunks
from ..db import Row
from ..store import refused_dependencies
from ..store.base import insert_statement
from .db import AsyncDatabase, Params, psycopg_connection


class AsyncStore:
    def __init__(self, db: AsyncDatabase) -> None:
        self.db = db

    # -- enqueue ---------------------------------------------------------------

    async def insert_job(self, params: Params, connection: Any = None) -> None:
        """One job whose id we generated (``Store.insert_job``): a retry writes
        its record at once, since a lost commit reply may hide a claimed job."""
        await self.db.execute(
            insert_statement(params),
            params,
            connection,
            idempotent=True,
            retry_as="job_insert_recorded",
        )

    async def insert_job_recorded(self, params: Params, connection: Any = None) -> None:
        """One job whose id the caller chose (DuplicateJobError if taken)."""
        await self.db.execute("job_insert_recorded", params, connection, idempotent=True)

    async def insert_job_dependent(self, params: Params, connection: Any = None) -> None:
        """One job that waits for others (``Store.insert_job_dependent``)."""
        try:
            await self.db.execute("job_insert_dependent", params, connection, idempotent=True)
        except psycopg.Error as exc:
            raise refused_dependencies(exc) from exc

    async def insert_job_unique(self, params: Params, connection: Any = None) -> str:
        """One job of a unique task; the id of the job holding its key."""
        async with self.db.transaction(connection) as conn:
            await self.db.run(conn, "unique_lock", {"unique_keys": [params["unique_key"]]})
            if params["on_duplicate"] != "keep":  # replace, debounce (Store.insert_job_unique)
                updated = await self.db.run(conn, "unique_update", params)
                if updated:
                    return str(updated[0][0])
                params = {**params, "take_over": True}
            rows = await self.db.run(conn, "job_insert_unique", params)
        holder = rows[0][0] if rows else None
        return str(holder) if holder is not None else str(params["id"])

    async def insert_jobs(self, params: Params, connection: Any = None) -> None:
        """Many jobs of one task: COPY on a psycopg connection (ours, or the
        one under the caller's SQLAlchemy objects), else one INSERT."""
        if connection is None:
            pool = await self.db.pool()
            async with pool.connection() as conn:
                await self._copy(conn, params)
            return
        raw = await psycopg_connection(connection)
        if raw is None:
            await self.db.execute("job_insert_many", params, connection, idempotent=True)
        else:
            await self._copy(raw, params)

    async def _copy(self, conn: Any, params: Params) -> None:
        sql = self.db.sql
        # db_times first, outside transaction(), as the sync Store does: on a
        # caller's connection with nothing run yet in its transaction,
        # transaction() would BEGIN and COMMIT on its own, ahead of their rollback.
        async with conn.cursor() as cur:
            await cur.execute(sql["db_times"], params)
            run_at, expires_at, now = (await cur.fetchall())[0]
        async with conn.transaction(), conn.cursor() as cur:
            async with cur.copy(sql["job_queue_copy"]) as copy:
                for chunk in copy_chunks(params, run_at, expires_at, now):
                    await copy.write(chunk)
            await cur.execute(sql["queue_notify"], {"queue": params["queue"]})

    async def insert_jobs_unique(self, params: Params, connection: Any = None) -> dict[str, str]:
        """Many jobs of a unique task: each key held by another job, with its id."""
        async with self.db.transaction(connection) as conn:
            await self.db.run(conn, "unique_lock", {"unique_keys": params["unique_keys"]})
            rows = await self.db.run(conn, "job_insert_many_unique", params)
        return {str(key): str(job) for key, job in rows}

    async def insert_canvas(
        self, canvas: str, groups: str, root: str, connection: Any = None
    ) -> None:
        """A whole canvas in one statement (``Store.insert_canvas``)."""
        params = {"canvas": canvas, "groups": groups, "root": root}
        await self.db.execute("canvas_insert", params, connection)

    # -- read -------------------------------------------------------------------

    async def get_job(self, job_id: str) -> Row | None:
        rows = await self.db.execute("job_get", {"id": job_id})
        return rows[0] if rows else None

    async def get_jobs(self, ids: list[str]) -> list[Row]:
        """(id, state, result, error) of each job found."""
        return await self.db.execute("job_get_many", {"ids": ids})
