"""Operations on jobs and queues, run-time limits, remote control and
schedules (app.control, the CLI, the dashboard): one schema function each.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import psycopg

from ..db import Row
from .base import Params, StoreBase


class OperationStatements(StoreBase):
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
