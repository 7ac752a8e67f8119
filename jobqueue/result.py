"""Results: ``AsyncResult`` reads a job's row; ``ResultWaiter`` wakes waiters.

Waiting uses one LISTEN connection per app (not one per ``get()``): workers
send the ids of finished jobs on ``<schema>_done`` when their completion
commits; a waiter re-reads its row when woken, and also every
``result_recheck_interval`` seconds in case a notification was lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from . import states
from .exceptions import TaskRevokedError, TimeoutError
from .ids import check_id
from .serialization import rebuild_error
from .sql import channels

if TYPE_CHECKING:
    from .app import JobQueue

log = logging.getLogger(__name__)


class AsyncResult:
    """A handle on one job's state and outcome, Celery style."""

    def __init__(self, id: str, app: JobQueue | None = None) -> None:
        if app is None:
            from .app import current_app

            app = current_app()
        self.id = check_id(id, "id")
        self.app = app
        self._row: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    # -- reading -------------------------------------------------------------

    def _fetch(self) -> dict[str, Any] | None:
        if self._row is not None and self._row["state"] in states.READY_STATES:
            return self._row  # finished jobs never change: no need to ask again
        rows = self.app.db.execute("job_get", {"id": self.id})
        if not rows:
            return None
        keys = (
            "id",
            "task",
            "queue",
            "state",
            "result",
            "error",
            "attempts",
            "created_at",
            "started_at",
            "finished_at",
            "worker_id",
            "root_id",
            "parent_id",
        )
        self._row = dict(zip(keys, rows[0], strict=True))
        return self._row

    @property
    def state(self) -> str:
        """PENDING, STARTED, RETRY, SUCCESS, FAILURE or REVOKED (PENDING if unknown)."""
        row = self._fetch()
        return states.PENDING if row is None else str(row["state"])

    status = state

    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    @property
    def result(self) -> Any:
        """The return value; the exception for FAILURE, REVOKED and RETRY (the
        error that caused the retry); else None."""
        row = self._fetch()
        if row is None:
            return None
        if row["state"] in states.EXCEPTION_STATES and row["error"]:
            return self._exception(row)
        return row["result"]

    info = result

    @property
    def traceback(self) -> str | None:
        row = self._fetch()
        if row is None or not row["error"]:
            return None
        tb = row["error"].get("traceback")
        return None if tb is None else str(tb)

    @property
    def task_name(self) -> str | None:
        row = self._fetch()
        return None if row is None else str(row["task"])

    name = task_name

    @property
    def date_done(self) -> datetime | None:
        row = self._fetch()
        return None if row is None else row["finished_at"]

    @property
    def retries(self) -> int:
        row = self._fetch()
        return 0 if row is None else max(int(row["attempts"]) - 1, 0)

    def _exception(self, row: dict[str, Any]) -> BaseException:
        if row["state"] == states.REVOKED:
            message = (row["error"] or {}).get("message") or "revoked"
            return TaskRevokedError(f"task {row['task']}[{self.id}] {message}")
        return rebuild_error(row["error"])

    # -- waiting -------------------------------------------------------------

    def get(
        self, timeout: float | None = None, propagate: bool = True, interval: float | None = None
    ) -> Any:
        """Wait until the job finishes; return its result or re-raise its error.

        Raises ``jobqueue.TimeoutError`` (a builtin ``TimeoutError``) if it is
        not finished within ``timeout`` seconds.
        """
        row = self.app.results.wait(self, timeout, interval)
        if row["state"] == states.SUCCESS:
            return row["result"]
        if propagate:
            raise self._exception(row)
        return self._exception(row)

    wait = get

    def revoke(self, terminate: bool = False, signal: str | None = None) -> None:
        """Cancel the job: a waiting one never runs (REVOKED); a running one is
        stopped if ``terminate`` (its worker is told over NOTIFY), else left to
        finish but never retried. Recorded in SQL: no worker needs to be online."""
        self.app.revoke([self.id], terminate=terminate)
        self._row = None


class ResultWaiter:
    """One LISTEN connection per app, fanning finished-job notices out to waiters."""

    def __init__(self, app: JobQueue) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._waiters: dict[str, set[threading.Event]] = defaultdict(set)
        self._thread: threading.Thread | None = None
        self._listening = threading.Event()
        self._stopped = threading.Event()

    def wait(
        self, result: AsyncResult, timeout: float | None, interval: float | None
    ) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        recheck = interval or self.app.conf.result_recheck_interval
        event = threading.Event()
        self._start()
        with self._lock:
            self._waiters[result.id].add(event)
        try:
            while True:
                row = result._fetch()
                if row is not None and row["state"] in states.READY_STATES:
                    return row
                pause = recheck
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        state = states.PENDING if row is None else row["state"]
                        raise TimeoutError(
                            f"task {result.id} not ready after {timeout}s (state {state})"
                        )
                    pause = min(pause, remaining)
                event.wait(pause)
                event.clear()
        finally:
            with self._lock:
                waiting = self._waiters.get(result.id)
                if waiting is not None:
                    waiting.discard(event)
                    if not waiting:
                        del self._waiters[result.id]

    def _start(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._listen, name="jobqueue-results", daemon=True
                    )
                    self._thread.start()
        # Waiters re-check on a timer anyway; don't block forever on a bad server.
        self._listening.wait(5.0)

    def _listen(self) -> None:
        channel = channels(self.app.conf.schema)["done"]
        backoff = 0.1
        while not self._stopped.is_set():
            try:
                with self.app.db.connect() as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    self._listening.set()
                    backoff = 0.1
                    self._wake_all()  # anything finished while we were reconnecting
                    while not self._stopped.is_set():
                        for notice in conn.notifies(timeout=1.0):
                            self._wake(notice.payload)
            except (psycopg.Error, OSError) as exc:
                self._listening.set()
                if self._stopped.is_set():
                    return
                log.warning("result listener lost its connection (%s); reconnecting", exc)
                self._stopped.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _wake(self, payload: str) -> None:
        with self._lock:
            for job_id in payload.split(","):
                for event in self._waiters.get(job_id, ()):
                    event.set()

    def _wake_all(self) -> None:
        with self._lock:
            for events in self._waiters.values():
                for event in events:
                    event.set()

    def stop(self) -> None:
        self._stopped.set()
