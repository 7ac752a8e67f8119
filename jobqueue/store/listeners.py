"""The statements of processes with connections of their own: the metrics
exporter, the events listener and the beat (which enqueues as producers
do: a unique task's tick through their statements).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg

from ..db import Row
from .base import Params
from .producer import ProducerStatements


class ListenerStatements(ProducerStatements):
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

    def event_senders(self, conn: psycopg.Connection[Any], pids: Sequence[int]) -> set[int]:
        """Those of these server processes whose role may claim jobs
        (event_senders): their data payloads are believed as they are."""
        return {row[0] for row in self._on(conn, "event_senders", {"pids": list(pids)})}

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
