"""The worker: claim → execute → complete, with a heartbeat and a LISTEN hint.

Threads, each with its own connection:
- the claim loop (the caller's thread) claims up to the number of free slots
  in one statement and hands jobs to the pool; it never runs a task itself;
- a listener turns NOTIFYs for our queues into a wake-up; a poll every
  ``poll_interval`` seconds covers lost notifications, and an idle worker
  sleeps exactly until the next scheduled job is due;
- a completer writes finished outcomes in batches (one statement per batch,
  guarded by lease and attempt) and frees their slots;
- a heartbeat keeps this worker's row (and so its leases) alive.

SIGTERM/SIGINT: stop claiming, finish running jobs, exit 0. A second signal
releases the unfinished jobs back to their queue and exits at once.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from types import FrameType
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from . import __version__, states
from .executor import Job, Outcome, execute
from .serialization import dump_error
from .sql import channels

if TYPE_CHECKING:
    from .app import JobQueue

log = logging.getLogger(__name__)

_RECONNECT_MAX = 5.0


class Worker:
    def __init__(
        self,
        app: JobQueue,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int | None = None,
        poll_interval: float | None = None,
        hostname: str | None = None,
    ) -> None:
        self.app = app
        self.queues = list(dict.fromkeys(queues or [app.conf.default_queue]))
        self.concurrency = concurrency or min(32, (os.cpu_count() or 1) * 4)
        self.poll_interval = poll_interval or app.conf.poll_interval
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {self.poll_interval}")
        from .ids import uuid7

        self.id = str(uuid7())
        self.hostname = hostname or f"jobqueue@{socket.gethostname()}"
        self._sql = app.db.sql
        self._channels = channels(app.conf.schema)
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = {}  # job id -> attempt, from claim to completion
        self._outcomes: queue.SimpleQueue[Outcome | None] = queue.SimpleQueue()
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="jobqueue-task")
        self._threads: list[threading.Thread] = []
        self._signals = 0
        self.processed = 0

    # -- life cycle --------------------------------------------------------------

    def run(self) -> None:
        """Run until stopped (signal or ``stop()``); returns after a clean exit."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        claim_conn = self._connect()
        self._execute(
            claim_conn,
            "worker_register",
            {
                "id": self.id,
                "hostname": self.hostname,
                "pid": os.getpid(),
                "queues": self.queues,
                "concurrency": self.concurrency,
                "version": __version__,
            },
        )
        for target, name in (
            (self._listen, "listener"),
            (self._complete_loop, "completer"),
            (self._heartbeat_loop, "heartbeat"),
        ):
            thread = threading.Thread(target=target, name=f"jobqueue-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info(
            "worker %s ready: id=%s queues=%s concurrency=%d pool=threads poll=%.1fs",
            self.hostname,
            self.id,
            ",".join(self.queues),
            self.concurrency,
            self.poll_interval,
        )
        try:
            claim_conn = self._claim_loop(claim_conn)
        finally:
            self._shutdown(claim_conn)

    def stop(self) -> None:
        """Warm stop: no new claims; running jobs finish; ``run()`` returns."""
        self._stopping.set()
        self._wakeup.set()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info(
                "%s received: warm shutdown (finishing %d running job(s)); "
                "send again to release them and exit now",
                signal.Signals(signum).name,
                len(self._in_flight),
            )
            self.stop()
        else:
            log.warning("%s received again: cold shutdown", signal.Signals(signum).name)
            self._cold_exit()

    def _shutdown(self, claim_conn: psycopg.Connection[Any]) -> None:
        self._stopping.set()
        self._pool.shutdown(wait=True)
        self._outcomes.put(None)  # completer drains everything, then stops
        self._done.wait()
        try:
            self._execute(claim_conn, "worker_unregister", {"id": self.id})
        except psycopg.Error as exc:
            log.warning("could not unregister worker %s: %s", self.id, exc)
        claim_conn.close()
        log.info("worker %s stopped after %d job(s)", self.hostname, self.processed)

    def _cold_exit(self) -> None:
        """Record what already finished, release what is still running to the
        queue, then leave immediately."""
        finished: list[Outcome] = []
        while True:
            try:
                item = self._outcomes.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                finished.append(item)
        try:
            with self.app.db.connect() as conn:
                if finished:
                    self._write_outcomes(conn, finished)
                with self._lock:
                    ids = list(self._in_flight)
                self._execute(conn, "job_release_many", {"ids": ids, "worker_id": self.id})
                self._execute(conn, "worker_unregister", {"id": self.id})
            log.warning("released %d unfinished job(s) back to their queues", len(ids))
        finally:
            logging.shutdown()
            os._exit(1)

    # -- claiming -------------------------------------------------------------------

    def _claim_loop(self, conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
        while not self._stopping.is_set():
            self._wakeup.clear()  # before reading free slots: a later wake-up is never lost
            timeout = self.poll_interval
            free = self.concurrency - len(self._in_flight)
            if free > 0:
                try:
                    taken = self._claim(conn, free)
                    if taken == free:
                        continue  # there may be more: claim again as slots free up
                    due_in = self._next_due_in(conn)
                except psycopg.OperationalError as exc:
                    conn = self._reconnect(conn, exc)
                    continue
                if due_in is not None:
                    timeout = min(timeout, max(due_in, 0.001))
            self._wakeup.wait(timeout)
        return conn

    def _claim(self, conn: psycopg.Connection[Any], limit: int) -> int:
        """Claim and dispatch; returns how many waiting rows were taken (expired included)."""
        rows = self._execute(
            conn, "job_claim", {"queues": self.queues, "limit": limit, "worker_id": self.id}
        )
        jobs = [Job.from_row(row) for row in rows if row[1] is not None]
        if jobs:
            with self._lock:
                for job in jobs:
                    self._in_flight[job.id] = job.attempt
            for job in jobs:
                self._pool.submit(self._run, job)
        return len(rows)

    def _next_due_in(self, conn: psycopg.Connection[Any]) -> float | None:
        rows = self._execute(conn, "job_next_run_at", {"queues": self.queues})
        next_run_at: datetime | None = rows[0][0]
        if next_run_at is None:
            return None
        return float((next_run_at - rows[0][1]).total_seconds())

    def _run(self, job: Job) -> None:
        try:
            outcome = execute(self.app, job, self.hostname)
        except BaseException as exc:  # a bug of ours, or a task raising SystemExit & co.
            log.exception("job %s[%s] could not be executed", job.task, job.id)
            outcome = Outcome(job.id, job.attempt, states.FAILURE, None, dump_error(exc))
        self._outcomes.put(outcome)

    # -- completing --------------------------------------------------------------------

    def _complete_loop(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        limit = self.app.conf.complete_batch_size
        stopping = False
        try:
            while True:
                first = self._outcomes.get()
                batch: list[Outcome] = []
                if first is None:
                    stopping = True
                else:
                    batch.append(first)
                while len(batch) < limit:
                    try:
                        item = self._outcomes.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stopping = True
                    else:
                        batch.append(item)
                if batch:
                    conn = self._write_outcomes(conn, batch)
                if stopping and self._outcomes.empty():
                    return
        finally:
            if conn is not None:
                conn.close()
            self._done.set()

    def _write_outcomes(
        self, conn: psycopg.Connection[Any] | None, batch: list[Outcome]
    ) -> psycopg.Connection[Any]:
        params = {
            "ids": [o.job_id for o in batch],
            "attempts": [o.attempt for o in batch],
            "states": [o.state for o in batch],
            "results": [o.result for o in batch],
            "errors": [o.error for o in batch],
            "worker_id": self.id,
        }
        delay = 0.1
        while True:  # an outcome computed while the database is away is kept until it returns
            try:
                if conn is None or conn.closed:
                    conn = self._connect()
                self._execute(conn, "job_complete_many", params)
                break
            except psycopg.OperationalError as exc:
                log.warning(
                    "could not record %d outcome(s) (%s); retrying in %.1fs", len(batch), exc, delay
                )
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(delay)
                delay = min(delay * 2, _RECONNECT_MAX)
        with self._lock:
            for outcome in batch:
                self._in_flight.pop(outcome.job_id, None)
            self.processed += len(batch)
        self._wakeup.set()
        return conn

    # -- listening and heartbeat ----------------------------------------------------------

    def _listen(self) -> None:
        wanted = set(self.queues)
        self._with_connection("listener", lambda conn: self._listen_on(conn, wanted))

    def _listen_on(self, conn: psycopg.Connection[Any], wanted: set[str]) -> None:
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channels["jobs"])))
        self._wakeup.set()  # jobs may have arrived while we were not listening
        while not self._stopping.is_set():
            for notice in conn.notifies(timeout=1.0):
                if notice.payload in wanted:
                    self._wakeup.set()

    def _heartbeat_loop(self) -> None:
        def beat(conn: psycopg.Connection[Any]) -> None:
            while not self._stopping.wait(self.app.conf.heartbeat_interval):
                if not self._execute(conn, "worker_heartbeat", {"id": self.id}):
                    log.warning("worker row %s vanished; registering again", self.id)
                    self._execute(
                        conn,
                        "worker_register",
                        {
                            "id": self.id,
                            "hostname": self.hostname,
                            "pid": os.getpid(),
                            "queues": self.queues,
                            "concurrency": self.concurrency,
                            "version": __version__,
                        },
                    )

        self._with_connection("heartbeat", beat)

    def _with_connection(self, what: str, body: Callable[[psycopg.Connection[Any]], None]) -> None:
        """Run ``body`` on a fresh connection, reconnecting with backoff until stopped."""
        delay = 0.1
        while not self._stopping.is_set():
            try:
                with self._connect() as conn:
                    delay = 0.1
                    body(conn)
                    return
            except psycopg.OperationalError as exc:
                log.warning("%s connection lost (%s); reconnecting in %.1fs", what, exc, delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, _RECONNECT_MAX)

    # -- plumbing -------------------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        return self.app.db.connect(application_name=f"jobqueue-worker {self.id[-12:]}")

    def _reconnect(self, conn: psycopg.Connection[Any], exc: Exception) -> psycopg.Connection[Any]:
        log.warning("claim connection lost (%s); reconnecting", exc)
        conn.close()
        delay = 0.1
        while not self._stopping.is_set():
            try:
                return self._connect()
            except Exception as error:
                log.warning("reconnect failed (%s); retrying in %.1fs", error, delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, _RECONNECT_MAX)
        return conn

    def _execute(
        self, conn: psycopg.Connection[Any], name: str, params: dict[str, Any]
    ) -> list[tuple[Any, ...]]:
        cursor = conn.execute(self._sql[name], params)
        return cursor.fetchall() if cursor.description is not None else []
