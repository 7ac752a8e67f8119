"""The app's statements (producers, results, batches): on its pooled
connections, or in the caller's transaction when given ``connection=``.
"""

from __future__ import annotations

from typing import Any

import psycopg

from ..copytext import copy_chunks
from ..db import Row
from ..joined import psycopg_connection
from .base import Params, StoreBase, insert_statement, refused_dependencies


class ProducerStatements(StoreBase):
    # -- enqueue ---------------------------------------------------------------

    def insert_job(self, params: Params, connection: Any = None) -> None:
        """One job whose id we generated: one row, its record written at its
        first claim (job_insert, or job_insert_plain: ``insert_statement``),
        sent through libpq where it can be. Its id was chosen before the first
        try, so a retry is safe; a retry writes the record at once
        (job_insert_recorded): a job whose commit reply was lost may since have
        been claimed (its row in job_queue gone, its record written), and only
        both tables' keys see that."""
        connection = self._joined(connection)
        self.db.execute(
            insert_statement(params),
            params,
            connection,
            direct_path=True,
            idempotent=True,
            retry_as="job_insert_recorded",
        )

    def insert_job_recorded(self, params: Params, connection: Any = None) -> None:
        """One job whose id the caller chose: it may be taken, by a record or
        by an uncommitted insert it then waits for, so both tables' keys must
        see it (DuplicateJobError if taken)."""
        connection = self._joined(connection)
        self.db.execute("job_insert_recorded", params, connection, may_wait=True, idempotent=True)

    def insert_job_dependent(self, params: Params, connection: Any = None) -> None:
        """One job that waits for the jobs in ``params["depends_on"]``
        (job_insert_dependent, depend()): ``ValueError`` naming a dependency
        that does not exist, or the job itself."""
        connection = self._joined(connection)
        try:
            self.db.execute(
                "job_insert_dependent", params, connection, may_wait=True, idempotent=True
            )
        except psycopg.Error as exc:
            raise refused_dependencies(exc) from exc

    def insert_job_unique(self, params: Params, connection: Any = None) -> str:
        """One job of a unique task; the id of the job holding its key: this
        one, or another (then nothing is written). The key's lock and the
        insert share a transaction."""
        connection = self._joined(connection)
        with self.db.transaction(connection) as conn:
            self.db.run(conn, "unique_lock", {"unique_keys": [params["unique_key"]]})
            if params["on_duplicate"] != "keep":  # replace, debounce: the holder changed
                updated = self.db.run(conn, "unique_update", params)
                if updated:
                    return str(updated[0][0])
                params = {**params, "take_over": True}
            rows = self.db.run(conn, "job_insert_unique", params)
        holder = rows[0][0] if rows else None
        return str(holder) if holder is not None else str(params["id"])

    def update_job(self, job_id: str, changes: Params, connection: Any = None) -> bool:
        """Change a waiting job in place (update_job): whether it was waiting."""
        connection = self._joined(connection)
        try:
            rows = self.db.execute("update_job", {"id": job_id, **changes}, connection)
        except psycopg.Error as exc:
            if exc.sqlstate == "JQ002" and exc.diag.message_primary:
                raise ValueError(exc.diag.message_primary.removeprefix("jobqueue: ")) from exc
            raise
        return bool(rows[0][0])

    def insert_jobs(self, params: Params, connection: Any = None) -> None:
        """Many jobs of one task: COPY where the connection allows, else one
        INSERT (job_insert_many)."""
        connection = self._joined(connection)
        if not self.copy_jobs(params, connection):
            self.db.execute("job_insert_many", params, connection, idempotent=True)

    def copy_jobs(self, params: Params, connection: Any = None) -> bool:
        """Bulk enqueue with COPY (much faster than one INSERT for many rows):
        the waiting rows (job_queue_copy) and one NOTIFY in one transaction,
        or in the caller's. Only for psycopg 3 connections (direct or under
        SQLAlchemy); returns False when the caller's connection is something
        else."""
        if connection is None:
            with self.db.pool().connection() as conn:
                self._copy(conn, params)
            return True
        raw = psycopg_connection(connection)
        if raw is None:
            return False
        self._copy(raw, params)
        return True

    def _copy(self, conn: psycopg.Connection[Any], params: Params) -> None:
        sql = self.sql
        # db_times first, outside transaction(): on a caller's connection with no
        # statement run yet in its transaction, transaction() would be a BEGIN ...
        # COMMIT of its own, committing the jobs before the caller's rollback; after
        # a statement it is a savepoint in theirs (on the pool's autocommit
        # connections, a transaction of our own either way).
        with conn.cursor() as cur:
            run_at, expires_at, now = cur.execute(sql["db_times"], params).fetchall()[0]
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy(sql["job_queue_copy"]) as copy:
                for chunk in copy_chunks(params, run_at, expires_at, now):
                    copy.write(chunk)  # the server parses as we build
            cur.execute(sql["queue_notify"], {"queue": params["queue"]})

    def insert_jobs_unique(self, params: Params, connection: Any = None) -> dict[str, str]:
        """Many jobs of a unique task (keys distinct within the batch): each key
        held by another job, with that job's id."""
        connection = self._joined(connection)
        with self.db.transaction(connection) as conn:
            self.db.run(conn, "unique_lock", {"unique_keys": params["unique_keys"]})
            rows = self.db.run(conn, "job_insert_many_unique", params)
        return {str(key): str(job) for key, job in rows}

    def insert_canvas(self, canvas: str, groups: str, root: str, connection: Any = None) -> None:
        """A whole canvas (JSON from canvas.Freezer) in one statement."""
        connection = self._joined(connection)
        params = {"canvas": canvas, "groups": groups, "root": root}
        self.db.execute("canvas_insert", params, connection)

    # -- revoke and progress ----------------------------------------------------

    def revoke(self, ids: list[str], terminate: bool, connection: Any = None) -> int:
        """Revoke jobs; how many were unfinished. One transaction: the rows are
        locked first (a completion in flight commits before), and what follows
        the jobs that end now (callbacks, chords) learns of it in it."""
        connection = self._joined(connection)
        params = {"ids": ids, "terminate": terminate}
        with self.db.transaction(connection) as conn:
            self.db.run(conn, "job_revoke_lock", {"ids": ids})
            revoked, _, _, finished, _ = self.db.run(conn, "job_revoke", params)[0]
            if finished:
                self.db.run(conn, "job_advance", {"ids": finished})
        return int(revoked)

    def set_progress(self, job_id: str, state: str, meta: str, attempt: int | None) -> bool:
        """update_state(): only the given attempt (None: any) of a running job."""
        params = {"id": job_id, "state": state, "meta": meta, "attempt": attempt}
        return bool(self.db.execute("job_progress", params))

    # -- read -------------------------------------------------------------------

    def get_job(self, job_id: str) -> Row | None:
        rows = self.db.execute("job_get", {"id": job_id})
        return rows[0] if rows else None

    def get_jobs(self, ids: list[str]) -> list[Row]:
        """(id, state, result, error) of each job found."""
        return self.db.execute("job_get_many", {"ids": ids})

    def job_children(self, job_id: str) -> list[str]:
        return [str(r[0]) for r in self.db.execute("job_children", {"id": job_id})]

    def group_members(self, group_id: str) -> list[str] | None:
        rows = self.db.execute("group_get", {"id": group_id})
        return [str(m) for m in rows[0][0]] if rows else None

    def queue_stats(self) -> list[Row]:
        return self.db.execute("queue_stats", {})

    def job_history(self, job_id: str) -> list[Row]:
        """Every attempt of one job, oldest first (the job_history view)."""
        return self.db.execute("job_history", {"id": job_id})

    def unserved_tasks(self) -> list[Row]:
        """(queue, task, waiting, oldest_waiting) of due jobs no live worker serves."""
        return self.db.execute("unserved_tasks", {})

    # -- batches (0019) ----------------------------------------------------------

    def batch_open(self, params: Params, connection: Any = None) -> None:
        """A new batch (batch_open()), its callbacks frozen."""
        self.db.execute("batch_open", params, self._joined(connection), idempotent=True)

    def batch_add(self, conn: Any, batch: str, ids: list[str]) -> None:
        """Jobs just written on ``conn`` join ``batch`` (batch_add())."""
        self.db.run(conn, "batch_add", {"batch": batch, "ids": ids})

    def batch_close(self, batch: str, connection: Any = None) -> str:
        """No job may join ``batch`` any more (batch_close()); its state."""
        rows = self.db.execute("batch_close", {"batch": batch}, connection, may_wait=True)
        return str(rows[0][0])

    def batch_progress(self, batch: str) -> tuple[Any, ...] | None:
        """``batch``'s row of the batch_progress view, or None."""
        rows = self.db.execute("batch_progress", {"batch": batch})
        return tuple(rows[0]) if rows else None
