"""A worker's statements, on the sessions it owns: registration, the claim,
the completion, waiting, and the maintenance its heartbeat session runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg

from ..db import Row
from .base import VACUUMED, Params, StoreBase


class WorkerStatements(StoreBase):
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
        """Record a batch of outcomes (outcome.outcome_params) and, in the same
        transaction, create what follows the ``advance`` jobs. Returns the ids
        whose outcome changed nothing (the lease was no longer this worker's).
        The events go with it while someone listens (job_complete_many_events)."""

        # self.replace(): each replacement is written first, under the lease
        # of its job's attempt (see outcome.outcome_params).
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
