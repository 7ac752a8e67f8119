"""The SQL boundary: every statement jobqueue runs, one method each.

This is the only Python that names a statement of ``sql/queries.sql``. Two
kinds of method:

- **on the app's connections** (producers, results, the CLI): no ``conn``
  argument; the statement runs on a pooled autocommit connection and
  transient failures are retried (``Database.execute``), or inside the
  caller's transaction when given ``connection=``;
- **on a connection the caller owns** (the worker's claim, completion,
  listener and heartbeat sessions; the beat): ``conn`` comes first, and the
  caller handles its failures (it reconnects; a batch is kept).

Rules that used to live in comments live here: what must share a
transaction (a revocation, a rescue or a completion with the canvas steps
that follow it; a unique key's lock with its insert) is one method.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg

from .copytext import copy_chunks
from .db import Database, Row, psycopg_connection

Params = Mapping[str, Any]

VACUUMED = ("job_queue", "job_lease", "jobs")  # the tables a worker keeps clean
LISTENED = "JQ004"  # events_listening(): a statement without events met a listener


class Store:
    def __init__(self, db: Database) -> None:
        self.db = db
        # The claim and the completion come in two forms (events_end in
        # queries.sql): without events, refusing (JQ004, having changed
        # nothing) while a listener is there, and <name>_events. Which one a
        # statement needed last time: a hint shared by threads, since either
        # form is correct and a wrong guess costs one refused statement.
        self._reporting: dict[str, bool] = {}

    @property
    def sql(self) -> dict[str, str]:
        return self.db.sql

    def _on(self, conn: psycopg.Connection[Any], name: str, params: Params) -> list[Row]:
        cursor = conn.execute(self.sql[name], params)
        return cursor.fetchall() if cursor.description is not None else []

    def _with_events(
        self, name: str, run: Callable[[str], list[Row]], rows_changed: Callable[[list[Row]], bool]
    ) -> list[Row]:
        """``run`` a statement of two forms in the one that costs nothing
        while nobody listens, or in ``<name>_events`` while someone does. The
        rows of the latter end with the NOTIFYs sent, NULL when nobody
        listened: the next run goes back to the form without events."""
        events = self._reporting.get(name, False)
        try:
            rows = run(f"{name}_events" if events else name)
        except psycopg.Error as exc:
            if events or exc.sqlstate != LISTENED:
                raise
            events = self._reporting[name] = True  # a listener came: this run is redone
            rows = run(f"{name}_events")
        if events and rows_changed(rows) and rows[0][-1] is None:
            self._reporting[name] = False
        return rows

    def _joined(self, connection: Any) -> Any:
        """The caller's connection, else the transaction the app is set to join
        when none is named (``Database.ambient``), else None: the pool. Only
        writes a caller would want undone with their transaction join it."""
        if connection is None and self.db.ambient is not None:
            return self.db.ambient()
        return connection

    # -- enqueue ---------------------------------------------------------------

    def insert_job(self, params: Params, connection: Any = None) -> None:
        """One job whose id we generated: one row, its record written at its
        first claim (job_insert), sent through libpq where it can be. Its id
        was chosen before the first try, so a retry is safe; a retry writes
        the record at once (job_insert_recorded): a job whose commit reply was
        lost may since have been claimed (its row in job_queue gone, its record
        written), and only both tables' keys see that."""
        connection = self._joined(connection)
        self.db.execute(
            "job_insert",
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
        both tables and one NOTIFY in one transaction, or in the caller's. Only
        for psycopg 3 connections (direct or under SQLAlchemy); returns False
        when the caller's connection is something else."""
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
            run_at, expires_at = cur.execute(sql["db_times"], params).fetchall()[0]
        with conn.transaction(), conn.cursor() as cur:
            jobs, queue_rows = copy_chunks(params, run_at, expires_at)
            with cur.copy(sql["job_copy"]) as copy:
                for chunk in jobs:  # the server parses as we build
                    copy.write(chunk)
            with cur.copy(sql["job_queue_copy"]) as copy:
                for chunk in queue_rows:
                    copy.write(chunk)
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

    # -- operations (docs/sql.md, "Operations"): one schema function each ----------

    def pause_queue(self, queue: str, reason: str | None = None) -> bool:
        """Workers of this release stop claiming from ``queue``; True if it
        was not paused."""
        rows = self.db.execute("queue_pause", {"queue": queue, "reason": reason})
        return bool(rows[0][0])

    def resume_queue(self, queue: str) -> bool:
        """Claims from ``queue`` again (idle workers are woken); True if it was paused."""
        return bool(self.db.execute("queue_resume", {"queue": queue})[0][0])

    def set_fair_weight(self, key: str, weight: int) -> int:
        """A fair key's weight, for every worker's next claim (set_fair_weight())."""
        return int(self.db.execute("fair_weight_set", {"key": key, "weight": weight})[0][0])

    def fair_keys(self) -> list[Row]:
        """Waiting jobs per queue and fair key (the fair_keys view), most first."""
        return self.db.execute("fair_keys", {})

    def purge_queue(self, queue: str | None = None, max_jobs: int = 10_000) -> int:
        """Up to ``max_jobs`` waiting jobs of ``queue`` (None: every queue)
        end REVOKED; how many. Call until 0."""
        rows = self.db.execute("queue_purge", {"queue": queue, "max_jobs": max_jobs}, may_wait=True)
        return int(rows[0][0])

    def retry_jobs(self, *, reset_retries: bool = False, **filters: Any) -> int:
        """FAILURE and REVOKED jobs matching ``filters`` back to their queue."""
        params = {**_filters(filters), "reset_retries": reset_retries}
        return int(self.db.execute("job_retry_many", params, may_wait=True)[0][0])

    def cancel_jobs(self, *, terminate: bool = False, **filters: Any) -> int:
        """Unfinished jobs matching ``filters`` revoked (running ones stopped
        with ``terminate``)."""
        params = {**_filters(filters), "terminate": terminate}
        return int(self.db.execute("job_cancel_many", params, may_wait=True)[0][0])

    def delete_jobs(self, **filters: Any) -> int:
        """Finished jobs matching ``filters`` deleted, with their attempts."""
        rows = self.db.execute("job_delete_many", _filters(filters), may_wait=True)
        return int(rows[0][0])

    def move_jobs(
        self,
        *,
        to_queue: str | None = None,
        to_priority: int | None = None,
        to_eta: datetime | None = None,
        **filters: Any,
    ) -> int:
        """Waiting jobs matching ``filters`` get a new queue, priority or due time."""
        params = {**_filters(filters), "to_queue": to_queue, "to_priority": to_priority}
        params["to_eta"] = to_eta
        return int(self.db.execute("job_move_many", params, may_wait=True)[0][0])

    def find_jobs(self, *, after: str | None = None, **filters: Any) -> list[Row]:
        """Rows of all_jobs matching ``filters``, by id, after ``after``."""
        return self.db.execute("job_find", {**_filters(filters), "after": after})

    # -- run-time limits and remote control (revision 0014) ------------------------

    def task_limits(self) -> list[Row]:
        return self.db.execute("task_limits_list", {})

    def set_rate_limit(
        self, task: str, rate: str | None, burst: float | None = None, set_by: str | None = None
    ) -> float | None:
        """The rate per second now in force for ``task`` (None: unlimited)."""
        params = {"task": task, "rate": rate, "burst": burst, "set_by": set_by}
        value = self.db.execute("task_rate_set", params)[0][0]
        return None if value is None else float(value)

    def set_concurrency_limit(
        self, task: str, max_running: int | None, set_by: str | None = None
    ) -> int | None:
        params = {"task": task, "max_running": max_running, "set_by": set_by}
        value = self.db.execute("task_concurrency_set", params)[0][0]
        return None if value is None else int(value)

    def reset_task_limit(self, task: str) -> bool:
        return bool(self.db.execute("task_limit_reset", {"task": task})[0][0])

    def control_send(
        self,
        conn: psycopg.Connection[Any],
        command: str,
        arguments: str,
        destination: list[str] | None,
        timeout: float,
    ) -> int:
        """A request to the workers (``arguments``: JSON text); its id."""
        params = {
            "command": command,
            "arguments": arguments,
            "destination": destination,
            "timeout": timeout,
        }
        return int(self._on(conn, "control_send", params)[0][0])

    def control_expected(
        self, conn: psycopg.Connection[Any], destination: list[str] | None
    ) -> list[Row]:
        """(worker id, hostname) of the live workers a request to ``destination`` reaches."""
        return self._on(conn, "control_expected", {"destination": destination})

    def control_answers(self, conn: psycopg.Connection[Any], request: int) -> list[Row]:
        """(worker id, hostname, reply) of the answers to ``request`` so far."""
        return self._on(conn, "control_answers", {"request": request})

    def control_pending(self, conn: psycopg.Connection[Any], worker_id: str) -> list[Row]:
        """(id, command, arguments) of the requests this worker has yet to answer."""
        return self._on(conn, "control_pending", {"worker_id": worker_id})

    def control_reply(
        self, conn: psycopg.Connection[Any], request: int, worker_id: str, reply: str
    ) -> bool:
        params = {"request": request, "worker_id": worker_id, "reply": reply}
        return bool(self._on(conn, "control_reply", params)[0][0])

    def update_worker(
        self, conn: psycopg.Connection[Any], worker_id: str, concurrency: int, queues: list[str]
    ) -> None:
        params = {"id": worker_id, "concurrency": concurrency, "queues": queues}
        self._on(conn, "worker_update", params)

    # -- schedules (the CLI) ---------------------------------------------------------

    def schedule_list(self) -> list[Row]:
        return self.db.execute("schedule_list", {})

    def pause_schedule(self, name: str) -> bool:
        """The schedule stops firing (pause_schedule()); False if it was paused
        already. JQ002 if there is no such schedule."""
        return bool(self.db.execute("schedule_pause", {"name": name})[0][0])

    def resume_schedule(self, name: str) -> bool:
        """It fires again from now (resume_schedule()); False if it was not paused."""
        return bool(self.db.execute("schedule_resume", {"name": name})[0][0])

    def run_schedule(self, name: str) -> str:
        """One job of the schedule's task, due now (run_schedule()); its id."""
        return str(self.db.execute("schedule_run", {"name": name})[0][0])

    def schedule_delete(self, name: str) -> bool:
        return bool(self.db.execute("schedule_delete", {"name": name}))

    def schedule_add(self, params: Params) -> None:
        self.db.execute("schedule_add", params)

    # -- a worker's sessions (the caller's connection) --------------------------------

    def hot_session(self, conn: psycopg.Connection[Any]) -> None:
        """Settings of the claim and completion sessions (session_hot_path)."""
        self._on(conn, "session_hot_path", {})

    def register_worker(self, conn: psycopg.Connection[Any], params: Params) -> None:
        self._on(conn, "worker_register", params)

    def heartbeat(
        self, conn: psycopg.Connection[Any], worker_id: str, lease_ttl: float, leader_ttl: float
    ) -> tuple[bool, bool]:
        """Renew this worker's lease (and so its jobs'), and take or keep the
        maintenance lease if it is free or ours: (alive, leader). alive is
        False when the worker's row is gone."""
        params = {"id": worker_id, "lease_ttl": lease_ttl, "leader_ttl": leader_ttl}
        ((alive, leader, _),) = self._on(conn, "worker_heartbeat", params)
        return bool(alive), bool(leader)

    def unregister_worker(self, conn: psycopg.Connection[Any], worker_id: str) -> None:
        self._on(conn, "worker_unregister", {"id": worker_id})

    def sync_task_limits(self, conn: psycopg.Connection[Any], params: Params) -> None:
        self._on(conn, "task_limits_sync", params)

    def sync_task_settings(self, conn: psycopg.Connection[Any], settings: str) -> None:
        """How SQL makes the worker's tasks' jobs (task_settings_sync): ``settings``,
        a JSON array of ``jobqueue.keys.task_settings`` rows."""
        self._on(conn, "task_settings_sync", {"settings": settings})

    def claim(
        self,
        conn: psycopg.Connection[Any],
        queues: list[str],
        limit: int,
        worker_id: str,
        revision: int,
        skip_tasks: Sequence[str] = (),
        fair_from: str | None = None,
    ) -> list[Row]:
        """Up to ``limit`` due jobs of ``queues``, not of ``skip_tasks`` (tasks
        this worker does not know and handed back lately); their started
        events go with the claim while someone listens (job_claim_events).
        With ``fair_from`` (where this worker's round of fair keys stands,
        worker/fairness.py), round-robin across fair keys (job_claim_fair)."""
        params = {
            "queues": queues,
            "limit": limit,
            "worker_id": worker_id,
            "revision": revision,
            "skip_tasks": list(skip_tasks),
            "fair_from": fair_from,
        }
        name = "job_claim" if fair_from is None else "job_claim_fair"
        return self._with_events(
            name, lambda name: self._on(conn, name, params), lambda rows: bool(rows)
        )

    def next_run_at(
        self, conn: psycopg.Connection[Any], queues: list[str]
    ) -> tuple[datetime | None, datetime]:
        """When the earliest scheduled job of ``queues`` is due, and the database's now."""
        ((next_run_at, now),) = self._on(conn, "job_next_run_at", {"queues": queues})
        return next_run_at, now

    def complete(
        self, conn: psycopg.Connection[Any], params: Params, advance: list[str]
    ) -> list[str]:
        """Record a batch of outcomes (executor.outcome_params) and, in the same
        transaction, create what follows the ``advance`` jobs. Returns the ids
        whose outcome changed nothing (the lease was no longer this worker's).
        The events go with it while someone listens (job_complete_many_events)."""

        # self.replace(): each replacement is written first, under the lease
        # of its job's attempt (see executor.outcome_params).
        replacements = params.get("replacements") or []
        if replacements:
            params = {k: v for k, v in params.items() if k != "replacements"}

        def run(name: str) -> list[Row]:
            if not advance and not replacements:  # the common case: one autocommit
                return self._on(conn, name, params)  # statement, one round trip
            with conn.transaction():
                for replacement in replacements:
                    if self._on(conn, "job_replace", replacement):
                        self._on(conn, "job_replace_spawn", replacement)
                rows = self._on(conn, name, params)
                if advance:
                    self._on(conn, "job_advance", {"ids": advance})
            return rows

        rows = self._with_events("job_complete_many", run, lambda rows: bool(rows and rows[0][0]))
        return [str(job_id) for job_id in rows[0][3]] if rows else []

    def release(self, conn: psycopg.Connection[Any], ids: list[str], worker_id: str) -> None:
        """Put claimed jobs back as if never claimed (guarded by the lease)."""
        self._on(conn, "job_release_many", {"ids": ids, "worker_id": worker_id})

    def revocations(
        self, conn: psycopg.Connection[Any], ids: list[str], worker_id: str
    ) -> list[tuple[str, bool]]:
        """Which of ``ids`` (held by this worker) are revoked: (id, terminate)."""
        rows = self._on(conn, "job_revocations", {"ids": ids, "worker_id": worker_id})
        return [(str(job_id), bool(terminate)) for job_id, terminate in rows]

    def wait_flag(self, conn: psycopg.Connection[Any], queues: list[str]) -> list[str]:
        """Flag the session as waiting for ``queues``; the queues flagged."""
        return [row[0] for row in self._on(conn, "worker_wait_flag", {"queues": queues})]

    def wait_settled(self, conn: psycopg.Connection[Any], queues: list[str]) -> bool:
        return bool(self._on(conn, "worker_wait_settled", {"queues": queues})[0][0])

    def wait_unflag(self, conn: psycopg.Connection[Any], queues: list[str]) -> None:
        self._on(conn, "worker_wait_unflag", {"queues": queues})

    # -- maintenance (any worker's heartbeat session) -----------------------------------

    def rescue(self, conn: psycopg.Connection[Any]) -> tuple[int, int]:
        """Jobs of workers whose lease expired go back (or fail); what follows
        those that end now is created in the same transaction. Returns
        (workers, jobs)."""
        with conn.transaction():
            workers, jobs, _, _, finished, _ = self._on(conn, "job_rescue", {})[0]
            if finished:
                self._on(conn, "job_advance", {"ids": finished})
        return int(workers), int(jobs)

    def complete_within(
        self, conn: psycopg.Connection[Any], params: Params, advance: list[str]
    ) -> list[str]:
        """``complete`` inside the caller's transaction (an atomic task's): in
        the form with events, which never refuses for a listener (the other
        one would abort the caller's work with its JQ004; a savepoint to guard
        it cost two round trips per job, and this form only microseconds)."""
        rows = self._on(conn, "job_complete_many_events", params)
        if advance:
            self._on(conn, "job_advance", {"ids": advance})
        return [str(job_id) for job_id in rows[0][3]] if rows else []

    def hold_lease(self, conn: psycopg.Connection[Any], job_id: str, attempt: int) -> str | None:
        """In an atomic task's transaction: lock the attempt's lease; the worker
        id it is held under, None if it is gone (job_lease_hold)."""
        rows = self._on(conn, "job_lease_hold", {"id": job_id, "attempt": attempt})
        return rows[0][0] if rows else None

    def end_atomic(self, job_id: str) -> int:
        """End the open atomic transaction of ``job_id``, if any (atomic_end)."""
        with self.db.pool().connection(timeout=5.0) as conn:  # once: a pool thread waits
            return int(self._on(conn, "atomic_end", {"id": job_id})[0][0])

    def attempt_committed(self, conn: psycopg.Connection[Any], job_id: str, attempt: int) -> bool:
        """Whether the atomic transaction of ``attempt``, whose commit went
        unanswered, committed; once the server has ended it (job_lease_wait)."""
        params = {"id": job_id, "attempt": attempt}
        if self._on(conn, "job_lease_wait", params)[0][0]:
            return False  # the lease is still there: the commit would have taken it
        rows = self._on(conn, "job_attempt_state", params)
        return bool(rows) and rows[0][0] == "SUCCESS"

    def sweep_dependencies(
        self, conn: psycopg.Connection[Any], from_id: str | None
    ) -> tuple[int, str | None]:
        """Count finished dependencies the completions missed, in a bounded
        slice after ``from_id`` (dependencies_sweep): (counted, where the next
        round goes on; None: from the start)."""
        counted, next_id = self._on(conn, "dependencies_sweep", {"from_id": from_id})[0]
        return int(counted), next_id

    def sweep_batches(
        self, conn: psycopg.Connection[Any], from_id: str | None
    ) -> tuple[int, str | None]:
        """Count finished batch members the completions missed (batches_sweep),
        as ``sweep_dependencies``."""
        counted, next_id = self._on(conn, "batches_sweep", {"from_id": from_id})[0]
        return int(counted), next_id

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

    def lease_orphans(
        self, conn: psycopg.Connection[Any], worker_id: str, running: Sequence[str]
    ) -> list[str]:
        params = {"id": worker_id, "running": list(running)}
        return [str(r[0]) for r in self._on(conn, "lease_orphans", params)]

    def prune_jobs(self, conn: psycopg.Connection[Any], params: Params) -> int:
        return int(self._on(conn, "job_prune", params)[0][0])

    def history_partitions_ahead(self, conn: psycopg.Connection[Any]) -> int:
        """Create the history partitions of the coming periods; how many."""
        return int(self._on(conn, "history_partitions_ahead", {})[0][0])

    def history_prune(
        self, conn: psycopg.Connection[Any], success_age: float | None, failure_age: float | None
    ) -> list[tuple[str, int]]:
        """Drop the history partitions whose every job expired, and compact
        those held back only by young failures: (partition, failures kept)."""
        params = {"success_age": success_age, "failure_age": failure_age}
        return [(str(name), int(kept)) for name, kept in self._on(conn, "history_prune", params)]

    def prune_meta(self, conn: psycopg.Connection[Any], age: float, batch: int) -> None:
        self._on(conn, "meta_prune", {"age": age, "batch": batch})

    def fold_metrics(self, conn: psycopg.Connection[Any]) -> int:
        """Fold the job_metrics rows of closed sessions into one; how many went."""
        return int(self._on(conn, "job_metrics_fold", {})[0][0])

    def hot_tables(self, conn: psycopg.Connection[Any]) -> list[Row]:
        """(table, dead rows, live rows, rows changed since analyzed) of VACUUMED."""
        return self._on(conn, "hot_tables_dead", {"schema": self.db.schema})

    def vacuum(self, conn: psycopg.Connection[Any], table: str, analyze_only: bool) -> None:
        if table not in VACUUMED:
            raise ValueError(f"not a table a worker vacuums: {table!r}")
        self._on(conn, f"{'analyze' if analyze_only else 'vacuum'}_{table}", {})

    # -- the metrics exporter (its own connection) -----------------------------------

    def metrics(self, conn: psycopg.Connection[Any], timeout: float) -> list[Row]:
        """Every metric as (name, labels, value), read in one transaction that
        the server ends after ``timeout`` seconds (statement and lock waits)."""
        with conn.transaction():
            self._on(conn, "metrics_limits", {"ms": f"{max(int(timeout * 1000), 1)}ms"})
            return self._on(conn, "metrics_read", {})

    # -- the events listener (jobqueue/events; its own two connections) ----------------

    def events_listen(self, conn: psycopg.Connection[Any]) -> None:
        self._on(conn, "events_session", {})
        self._on(conn, "events_listen", {})

    def events_hold(self, conn: psycopg.Connection[Any]) -> None:
        """Ask for the lock that makes statements report events, without
        waiting for it: the reply comes once granted (``conn`` is then only
        watched and closed, never used for another statement)."""
        self._on(conn, "events_hold_session", {})
        conn.pgconn.send_query(self.sql["events_hold"].encode())

    def events_ready(self, conn: psycopg.Connection[Any], hold_pid: int) -> bool:
        """Whether the hold connection ``hold_pid`` holds the lock or waits
        behind a listener that does (see events_ready in queries.sql)."""
        return bool(self._on(conn, "events_ready", {"pid": hold_pid})[0][0])

    def events_queue_usage(self, conn: psycopg.Connection[Any]) -> float:
        return float(self._on(conn, "events_queue_usage", {})[0][0])

    def event_jobs(
        self,
        conn: psycopg.Connection[Any],
        ids: Sequence[str],
        queues: Sequence[str] | None,
        tasks: Sequence[str] | None,
    ) -> list[Row]:
        """The rows of the hinted jobs (event_jobs)."""
        params = {
            "ids": ",".join(ids),
            "queues": None if queues is None else list(queues),
            "tasks": None if tasks is None else list(tasks),
        }
        return self._on(conn, "event_jobs", params)

    def event_attempts(
        self, conn: psycopg.Connection[Any], pairs: Sequence[tuple[str, int]]
    ) -> list[Row]:
        """The records of these (job id, attempt) pairs (event_attempts)."""
        params = {
            "ids": ",".join(pair[0] for pair in pairs),
            "attempts": ",".join(str(pair[1]) for pair in pairs),
        }
        return self._on(conn, "event_attempts", params)

    def event_workers(self, conn: psycopg.Connection[Any], ids: Sequence[str] | None) -> list[Row]:
        """Rows of the workers named (all of them for None)."""
        return self._on(conn, "event_workers", {"ids": None if ids is None else list(ids)})

    # -- the beat (its own connection) ---------------------------------------------

    def schedules_due(self, conn: psycopg.Connection[Any]) -> list[Row]:
        """Due schedules, locked for this beat (call inside a transaction)."""
        return self._on(conn, "schedules_due", {})

    def schedule_fire(self, conn: psycopg.Connection[Any], params: Params) -> int:
        """One tick; 1 if this beat enqueued it, 0 if another did."""
        return int(self._on(conn, "schedule_fire", params)[0][0])

    def schedule_fire_holding(
        self, conn: psycopg.Connection[Any], params: Params, sql: bool = False
    ) -> str | None:
        """One tick whose job may be held by a unique key: the id of the
        tick's job (``params["id"]``, or the key's holder, which the tick then
        records), None if another beat enqueued this tick. ``sql``: the job is
        made by enqueue() from ``task_settings`` (schedule_fire_sql, a task the
        beat does not know); else ``params`` are job_insert_unique's."""
        if sql:
            rows = self._on(conn, "schedule_fire_sql", params)
            if not rows:
                return None
            holder = str(rows[0][0])
        else:
            if not self._on(conn, "schedule_tick", params):
                return None
            holder = self.insert_job_unique(params, conn)
        if holder != str(params["id"]):
            self._on(conn, "schedule_tick_holder", {**params, "holder": holder})
        return holder

    def schedule_plan(
        self,
        conn: psycopg.Connection[Any],
        name: str,
        next_run_at: datetime,
        last_run_at: datetime | None,
    ) -> None:
        params = {"name": name, "next_run_at": next_run_at, "last_run_at": last_run_at}
        self._on(conn, "schedule_plan", params)

    def schedule_postpone(self, conn: psycopg.Connection[Any], name: str) -> None:
        self._on(conn, "schedule_postpone", {"name": name})

    def schedules_next(self, conn: psycopg.Connection[Any]) -> timedelta | None:
        rows = self._on(conn, "schedules_next", {})
        return rows[0][0] if rows else None

    def schedule_sync_code(self, conn: psycopg.Connection[Any], params: Params) -> None:
        self._on(conn, "schedule_sync_code", params)

    def schedule_prune_code(self, conn: psycopg.Connection[Any], names: list[str]) -> list[str]:
        return [r[0] for r in self._on(conn, "schedule_prune_code", {"names": names})]


# The filters every bulk operation takes (the schema functions' parameters).
FILTERS = (
    "ids",
    "queue",
    "task",
    "state",
    "exception",
    "enqueued_after",
    "enqueued_before",
    "finished_after",
    "finished_before",
    "max_jobs",
)


def _filters(given: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(given) - set(FILTERS))
    if unknown:
        raise TypeError(f"unknown filter(s): {', '.join(unknown)} (filters: {', '.join(FILTERS)})")
    params: dict[str, Any] = dict.fromkeys(FILTERS)
    params.update(given)
    if params["max_jobs"] is None:
        params["max_jobs"] = 10_000
    if params["ids"] is not None:
        params["ids"] = [str(i) for i in params["ids"]]
    return params


def schema_version(conn: psycopg.Connection[Any], sql: Mapping[str, str]) -> str | None:
    """The schema's alembic revision (migrate.current_revision)."""
    row = conn.execute(sql["schema_version"]).fetchone()
    return None if row is None else str(row[0])


__all__ = ["FILTERS", "VACUUMED", "Store", "schema_version"]


def refused_dependencies(exc: psycopg.Error) -> Exception:
    """What depend() refuses (a dependency that does not exist: JQ002; the job
    itself, a bad policy: 22023) as the ValueError a caller expects; any other
    error as it is."""
    if exc.sqlstate in ("JQ002", "22023") and exc.diag.message_primary:
        return ValueError(exc.diag.message_primary.removeprefix("jobqueue: "))
    return exc
