"""The worker: claim → execute (in a pool) → complete, kept alive by a heartbeat.

Two connections per worker process, whatever its concurrency:
- the working session (``session.Session``), which the claim loop (the
  caller's thread) and the heartbeat take turns on. The claim loop claims up
  to the number of free slots in one statement and hands jobs to the pool,
  never running a task itself; when it has nothing to claim it sleeps on this
  session's socket, which LISTENs, and on local wake-ups (``wakeup.Wakeup``):
  a NOTIFY for our queues wakes it (a poll every ``poll_interval`` seconds
  covers lost ones; an idle worker sleeps exactly until the next scheduled
  job is due), and revocations reach the pool. Enqueues only NOTIFY while
  some worker waits for the queue: this session says so with an advisory
  lock when a claim comes back short, and drops it when claims come back
  full (``waiting.WaitFlag``). The heartbeat (``lease.Lease``, which also
  fences the worker when its lease may have lapsed) renews this worker's lease (and
  so its jobs'), re-checks revocations of the jobs it holds, and on the one
  worker elected in the same statement starts maintenance for everyone
  (``jobqueue.maintenance``: rescue, retention, vacuum), on a connection of
  its own so it never holds up claims: the leader has three;
- the recording session, the completer's: it writes outcomes in batches (one
  statement per batch, guarded by lease and attempt) and frees their slots,
  keeping a batch until the database takes it, so nothing computed during an
  outage is lost.
Behind a transaction pooler (PgBouncer) no session state may outlive a
statement: the working session connects to ``listen_dsn`` (direct), the
recording session goes through the pooler; without ``listen_dsn`` both go
through it and the worker polls.

SIGTERM/SIGINT: warm shutdown (stop claiming; running jobs get
``shutdown_timeout`` seconds to finish; the rest go back to the queue). A
second signal: cold shutdown (record what finished, release the rest, exit).
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from .. import __version__, discovery, interrupts, signals
from ..db import transient
from ..exceptions import MalformedJob, SchemaChangedError
from ..ids import uuid7
from ..keys import task_settings
from ..migrate import head_revision
from ..serialization import dumps
from ..sql import channels
from .completer import Completer
from .executor import expired, make_request
from .fairness import FairTurn
from .job import Job
from .lease import Lease
from .notices import Notices
from .outcome import Outcome
from .pools import make_pool
from .remote import RemoteControl
from .session import Session
from .settings import WorkerSettings
from .waiting import WaitFlag
from .wakeup import Wakeup

if TYPE_CHECKING:
    from ..app import JobQueue

log = logging.getLogger(__name__)

_RECONNECT_MAX = 5.0
_PREFETCH_SECONDS = 0.1  # of estimated work claimed ahead of free slots
_CLAIM_ERROR_PAUSE = 1.0
# After the grace period, how long a warm shutdown still tries to record the
# outcomes it holds (the database may be away); what is left is rescued.
_RECORD_GRACE = 10.0
_INCOMPATIBLE = "JQ001"  # worker_compatible(): the schema moved to a revision we do not know


class Worker(Notices):
    def __init__(
        self, app: JobQueue, settings: WorkerSettings | None = None, **options: Any
    ) -> None:
        """``settings`` (a ``WorkerSettings``), with any of its fields given
        as keywords on top: ``Worker(app, concurrency=8, queues=["a"])``."""
        self.app = app
        self.settings = (settings or WorkerSettings()).with_options(**options).resolve(app)
        s = self.settings
        assert s.concurrency is not None and s.poll_interval is not None and s.hostname
        assert s.prefetch_multiplier is not None  # resolved
        self.queues = list(s.queues)
        self.concurrency: int = s.concurrency
        self.poll_interval: float = s.poll_interval
        self.shutdown_timeout = s.shutdown_timeout
        self.prefetch_multiplier: int = s.prefetch_multiplier
        self.hostname: str = s.hostname
        self.pool_kind = s.pool
        self._avg_runtime = 1.0  # seconds, moving average; start cautious (no prefetch)
        self.id = str(uuid7())
        self.revision = int(head_revision())  # the schema revision this code was written for
        self._incompatible: psycopg.Error | None = None
        self._store = app.store
        app.db.for_worker()
        self._skip_tasks: dict[str, float] = {}  # unknown task -> monotonic time to retry it
        self.lease = Lease(self)  # heartbeat, fencing, maintenance, health file
        self._channels = channels(app.conf.schema)
        self._wakeup = Wakeup()
        self._stopping = threading.Event()  # no more claims
        self._exiting = threading.Event()  # running jobs are settled: heartbeat may stop
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = {}  # job id -> attempt, from claim to completion
        self._fair = FairTurn()  # its place in the round of fair keys (claim thread)
        self._waiting = WaitFlag(self.queues, self._store)  # claim loop only
        # The working session LISTENs too: the claim loop waits on its socket
        # when idle (_idle_wait). The completer has a session of its own.
        self._work = Session("working", self._connect_work, self._on_work_connect)
        self._record = Session("recording", self._connect_record, self._on_record_connect)
        self._wanted = set(self.queues)
        self._revoke_hints: list[str] = []  # revocations heard of, acted on by the claim loop
        self._listen_retry = 0.1  # after a lost listening connection, doubling
        self.wakeups = ""  # how wake-ups arrive: "notify", "listen_dsn" or "poll-only"
        self._canvas: set[str] = set()  # in-flight jobs whose completion must run advance()
        self._outcomes: queue.SimpleQueue[Outcome | None] = queue.SimpleQueue()
        self._pool = make_pool(
            s.pool,
            app,
            size=self.concurrency,
            hostname=self.hostname,
            report=self._outcomes.put,
            max_tasks_per_child=s.max_tasks_per_child,
            may_start=self.lease.may_start,
        )
        self._completer = Completer(self)
        self._signals = 0
        self._signal_lock = threading.Lock()
        self.processed = 0
        self.totals: Counter[str] = Counter()  # jobs taken, per task (inspect stats)
        self._remote = RemoteControl(self)

    @property
    def leader(self) -> bool:
        """Whether this worker runs maintenance for everyone (``lease.Lease``)."""
        return self.lease.leader

    # -- life cycle --------------------------------------------------------------

    def run(self) -> None:
        """Run until stopped (signal or ``stop()``); returns after a clean exit."""
        if threading.current_thread() is threading.main_thread():
            interrupts.handle((signal.SIGTERM, signal.SIGINT), self._on_signal, "jobqueue-signal")
        signals.worker_init.send(self)  # its receivers may set a framework up
        discovery.check_settled(self.app)
        self.lease.remove_health()  # a killed predecessor's must not read as ready
        self.wakeups = self._wakeup_mode()  # its first contact retries for db_retry_seconds
        self.lease.start()
        self.app.db.first_contact(self._register)
        self._pool.start()
        for target, name in (
            (self._completer.run, "completer"),
            (self.lease.loop, "heartbeat"),
            (self.lease.watch, "lease-watch"),
        ):
            threading.Thread(target=target, name=f"jobqueue-{name}", daemon=True).start()
        log.info(
            "worker %s ready: id=%s queues=%s concurrency=%d pool=%s poll=%.1fs wake-ups=%s",
            self.hostname,
            self.id,
            ",".join(self.queues),
            self.concurrency,
            self.pool_kind,
            self.poll_interval,
            self.wakeups,
        )
        self.lease.touch_health()
        self.app.hooks.emit("worker_ready", worker=self)
        signals.worker_ready.send(self)
        try:
            self._claim_loop()
        finally:
            self._shutdown()
            self.lease.remove_health()
            self._wakeup.close()
            self.app.hooks.emit("worker_stopped", worker=self)
            signals.worker_shutdown.send(self)
        if self._incompatible is not None:
            raise SchemaChangedError(
                f"worker {self.hostname} stopped: {self._incompatible.diag.message_primary}; "
                "restart it with the jobqueue release that matches the schema"
            ) from self._incompatible

    def stop(self) -> None:
        """Warm stop: no new claims; running jobs finish; ``run()`` returns."""
        self._stopping.set()
        self._wakeup.set()

    def _on_signal(self, signum: signal.Signals) -> None:
        """SIGTERM or SIGINT, on a thread of its own (``interrupts``): the
        first stops claiming, the second exits now."""
        with self._signal_lock:
            self._signals += 1
            first = self._signals == 1
        name = signum.name
        if first:
            log.info(
                "%s received: warm shutdown (finishing %d running job(s) within %.0fs); "
                "send again to release them and exit now",
                name,
                len(self._in_flight),
                self.shutdown_timeout,
            )
            self.stop()
        else:
            log.warning("%s received again: cold shutdown", name)
            self._cold_exit()

    def _register(self) -> None:
        with self._work as conn:
            self._store.register_worker(conn, self._registration())
            self._store.sync_task_limits(conn, self._limits())
            self._store.sync_task_settings(conn, dumps(task_settings(self.app)))

    def _wakeup_mode(self) -> str:
        """How this worker hears of new jobs, said once at start."""
        db = self.app.db
        if not db.transaction_pooled:
            return "notify"
        if self.app.conf.listen_dsn:
            log.info(
                "worker %s: behind a transaction pooler: completions go through the pooler "
                "(no session state); claims, heartbeat and LISTEN on listen_dsn (direct)",
                self.hostname,
            )
            return "listen_dsn"
        log.warning(
            "worker %s: behind a transaction pooler without listen_dsn: poll-only, new jobs "
            "are seen within poll_interval (%.1fs), revocations within a heartbeat; set "
            "app.conf.listen_dsn to a direct DSN for instant wake-ups",
            self.hostname,
            self.poll_interval,
        )
        self._waiting.enabled = False
        return "poll-only"

    def _shutdown(self) -> None:
        self._stopping.set()
        prefetched = [job.id for job in self._pool.drain()]
        if prefetched:  # claimed ahead but not started: back to the queue right away
            # Held (in _in_flight) until their release committed: a second
            # signal in between (a cold exit: it releases what is held, then
            # leaves at once) must release them too, or they stay STARTED until
            # their lease lapses (test_cli's second-signal test, under load).
            try:
                with self._work as conn:
                    self._store.release(conn, prefetched, self.id)
            except psycopg.Error as exc:
                log.warning("could not release %d prefetched job(s): %s", len(prefetched), exc)
            with self._lock:
                for job_id in prefetched:
                    self._in_flight.pop(job_id, None)
                    self._canvas.discard(job_id)
        deadline = time.monotonic() + self.shutdown_timeout
        while self._in_flight and time.monotonic() < deadline:
            self._idle_wait(0.05)  # the completer wakes it after every batch
            self._wakeup.clear()
            self._take_revocations()  # running jobs may still be revoked
        if self._in_flight:
            log.warning(
                "grace period over: %d job(s) still running go back to the queue",
                len(self._in_flight),
            )
            self._pool.kill()
        else:
            self._pool.close()
        self._outcomes.put(None)  # the completer writes everything, then stops
        if not self._done.wait(_RECORD_GRACE):
            log.error(
                "could not record the outcomes of %d job(s) within %.0fs (database away?); "
                "exiting: other workers will rescue them once this worker's lease expires",
                len(self._in_flight),
                _RECORD_GRACE,
            )
            self._exiting.set()
            return
        # Every job is settled: the heartbeat and listener stop now, before the
        # worker row goes (a heartbeat that finds it gone would register again).
        self._exiting.set()
        try:
            with self._work as conn:
                self._release(conn)
                self._store.unregister_worker(conn, self.id)
        except psycopg.Error as exc:
            log.warning("could not unregister worker %s: %s", self.id, exc)
        self._work.close()
        self._record.close()
        self.lease.close_maintenance()
        log.info("worker %s stopped after %d job(s)", self.hostname, self.processed)

    def _cold_exit(self) -> None:
        """Record what already finished, release what is still running, leave now."""
        self._pool.kill()
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
                    self._completer.write(finished, conn)
                released = self._release(conn)
                self._store.unregister_worker(conn, self.id)
            log.warning("released %d unfinished job(s) back to their queues", released)
        finally:
            self.lease.remove_health()
            signals.worker_shutdown.send(self)  # its receivers may flush what they hold
            logging.shutdown()
            os._exit(1)

    def _release(self, conn: psycopg.Connection[Any]) -> int:
        with self._lock:
            ids = list(self._in_flight)
            self._in_flight.clear()
        if ids:
            self._store.release(conn, ids, self.id)
        return len(ids)

    # -- claiming -------------------------------------------------------------------

    def _claim_loop(self) -> None:
        delay = 0.1  # after a lost connection, doubling up to _RECONNECT_MAX
        while not self._stopping.is_set():
            self._wakeup.clear()  # before reading free slots: a later wake-up is never lost
            self._take_revocations()
            self._take_control()
            timeout = self.poll_interval
            free = self._capacity() - len(self._in_flight)
            if free > 0 and not self.lease.fenced:
                # until_empty: nothing held before this claim means every outcome
                # (and what its completion spawned) committed before it looked.
                idle = self.settings.until_empty and not self._in_flight
                try:
                    with self._work as conn:
                        taken = self._claim(conn, free)
                        if idle and taken == 0:
                            log.info("worker %s: nothing left to run; stopping", self.hostname)
                            self.stop()
                            continue
                        if taken == free:
                            self._waiting.stop(conn)
                            continue  # there may be more: claim again as slots free up
                        if not self._waiting.settled:
                            if self._waiting.settle(conn):
                                continue  # look once more: we now hear of every later job
                            timeout = self._waiting.retry_in()
                        due_in = self._next_due_in(conn)
                    delay = 0.1
                except psycopg.Error as exc:
                    if exc.sqlstate == _INCOMPATIBLE:
                        self._stop_incompatible(exc)
                        break
                    if transient(exc):
                        log.warning("claim failed (%s); retrying in %.1fs", exc, delay)
                        self._stopping.wait(delay)
                        delay = min(delay * 2, _RECONNECT_MAX)
                        continue
                    # Not the connection (a bad limit row...): keep the worker
                    # alive and try again after a pause, loudly.
                    log.exception("claim failed; retrying in %.1fs", _CLAIM_ERROR_PAUSE)
                    self._stopping.wait(_CLAIM_ERROR_PAUSE)
                    continue
                if due_in is not None:
                    timeout = min(timeout, max(due_in, 0.005))
            self._idle_wait(timeout)

    def _tasks_to_skip(self) -> list[str]:
        """Tasks this worker does not know and handed back lately."""
        if not self._skip_tasks:
            return []
        now = time.monotonic()
        with self._lock:
            for task in [t for t, until in self._skip_tasks.items() if until <= now]:
                del self._skip_tasks[task]
            return sorted(self._skip_tasks)

    def _stop_incompatible(self, exc: psycopg.Error) -> None:
        """The schema moved to a revision this worker does not know (an upgrade
        while it ran): claiming now could destroy jobs it cannot record."""
        self._incompatible = exc
        log.critical(
            "stopping: %s (this worker is jobqueue %s, schema revision %04d); running jobs "
            "finish, nothing more is claimed. Restart the worker with the release that "
            "matches the schema (docs/upgrading.md)",
            exc.diag.message_primary,
            __version__,
            self.revision,
        )
        self.stop()

    def _capacity(self) -> int:
        """How many jobs to hold at once: the running ones plus a prefetch of
        about ``_PREFETCH_SECONDS`` of work at the recent average run time, at
        most ``prefetch_multiplier`` x concurrency in all. Short jobs then come
        in big batches (few claims and completions per job); long jobs are
        claimed only for free slots, so a worker never hoards work."""
        work = _PREFETCH_SECONDS * self.concurrency / max(self._avg_runtime, 1e-5)
        extra = min(int(work), self.concurrency * (self.prefetch_multiplier - 1))
        return self.concurrency + extra

    def _claim(self, conn: psycopg.Connection[Any], limit: int) -> int:
        """Claim and dispatch; returns how many waiting rows were taken (expired included)."""
        claimed_as = self.id
        rows = self._store.claim(
            conn,
            self.queues,
            limit,
            claimed_as,
            self.revision,
            self._tasks_to_skip(),
            self._fair.start,
        )
        jobs = [Job.from_row(row) for row in rows]
        self._fair.claimed([(job.fair_key, job.fair_weight) for job in jobs])
        if jobs and signals.task_received.receivers and not self.lease.fenced:
            self._send_received(jobs)  # before a slot may start them; not under the lock
        if jobs:
            with self._lock:
                if self.lease.fenced or self.id != claimed_as:
                    # The reply outlived the lease it was claimed under (held up
                    # by a partition): these jobs may be rescued and running
                    # elsewhere. Leave them to the rescue, or to the release of
                    # orphaned leases should this worker's row have survived.
                    log.warning(
                        "dropping %d job(s) whose claim came back after this worker was "
                        "fenced; they go back to their queue",
                        len(jobs),
                    )
                    return len(rows)
                for job in jobs:
                    self._in_flight[job.id] = job.attempt
                    self.totals[job.task] += 1
                    if job.in_canvas:
                        self._canvas.add(job.id)
                self._pool.submit_many([job for job in jobs if not job.expired])
            for job in jobs:  # out of the lock: expired() sends task_revoked
                if job.expired:
                    self._outcomes.put(expired(job, self.app.tasks.get(job.task)))
        return len(rows)

    def _send_received(self, jobs: list[Job]) -> None:
        for job in jobs:
            if job.expired:
                continue
            try:
                request = make_request(job, self.app.tasks.get(job.task), self.hostname)
            except MalformedJob:  # its slot fails it
                continue
            signals.task_received.send(self, request=request)

    def _next_due_in(self, conn: psycopg.Connection[Any]) -> float | None:
        next_run_at, now = self._store.next_run_at(conn, self.queues)
        if next_run_at is None:
            return None
        return float((next_run_at - now).total_seconds())

    # -- listening, heartbeat, rescue ---------------------------------------------------

    def _idle_wait(self, timeout: float) -> None:
        """Sleep until a local wake-up, a NOTIFY on the working session, or
        ``timeout``. The session is not held meanwhile (the heartbeat may use
        it; notifications that arrive during its statements reach
        ``_on_notify`` through psycopg). Poll-only: local wake-ups only."""
        if self.wakeups == "poll-only":
            self._wakeup.wait(timeout)
            return
        try:
            with self._work as conn:
                fd, generation = conn.fileno(), self._work.generation
            if self._wakeup.wait(timeout, fd):
                with self._work as conn:
                    if self._work.generation == generation:
                        conn.pgconn.consume_input()  # raises if the connection is gone
                        while (notice := conn.pgconn.notifies()) is not None:
                            self._on_notify(notice.relname.decode(), notice.extra.decode())
            self._listen_retry = 0.1
        except (psycopg.Error, OSError) as exc:
            log.warning(
                "worker connection lost while waiting for jobs (%s: %s); polling every %.1fs "
                "meanwhile, reconnecting in %.1fs",
                type(exc).__name__,
                str(exc).strip(),
                self.poll_interval,
                self._listen_retry,
            )
            self._stopping.wait(self._listen_retry)
            self._listen_retry = min(self._listen_retry * 2, _RECONNECT_MAX)

    def _connect_work(self) -> psycopg.Connection[Any]:
        """The working session: it LISTENs, so it reaches PostgreSQL directly
        (the DSN, or listen_dsn behind a transaction pooler); poll-only, through
        the pooler."""
        if self.wakeups != "listen_dsn":
            return self._connect()
        conn = self.app.db.listen_connect(
            application_name=f"jobqueue-worker {self.id[-12:]}", **self._tcp_options()
        )
        assert conn is not None
        return conn

    def _connect_record(self) -> psycopg.Connection[Any]:
        return self.app.db.connect(
            application_name=f"jobqueue-worker {self.id[-12:]} record", **self._tcp_options()
        )

    def _on_record_connect(self, conn: psycopg.Connection[Any]) -> None:
        if self.app.db.session_state:
            self._store.hot_session(conn)

    def _release_orphans(self, conn: psycopg.Connection[Any]) -> None:
        running = list(self._in_flight)
        if not self._stopping.is_set():
            orphans = self._store.lease_orphans(conn, self.id, running)
            if orphans:
                log.warning(
                    "releasing %d job(s) claimed by a reply that never arrived", len(orphans)
                )
                self._store.release(conn, orphans, self.id)

    def _limits(self) -> dict[str, Any]:
        tasks = list(self.app.tasks.values())
        return {
            "tasks": [t.name for t in tasks],
            "rates": [t.flow.rate_per_second for t in tasks],
            "bursts": [t.flow.burst for t in tasks],
            "limits": [t.flow.concurrency_limit for t in tasks],
        }

    def _registration(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "hostname": self.hostname,
            "pid": os.getpid(),
            "queues": self.queues,
            "concurrency": self.concurrency,
            "version": __version__,
            "lease_ttl": self.app.conf.lease_ttl,
            "tasks": sorted(self.app.tasks),
            "pool": self.pool_kind,
        }

    # -- plumbing -------------------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        return self.app.db.connect(
            application_name=f"jobqueue-worker {self.id[-12:]}", **self._tcp_options()
        )

    def _tcp_options(self) -> dict[str, Any]:
        return self.app.db.worker_socket_options()

    def _on_work_connect(self, conn: psycopg.Connection[Any]) -> None:
        """A new working session: its settings (see session_hot_path) and its
        LISTENs where it keeps them (not through a transaction pooler), and no
        wake-up flag held yet: the claim loop looks (and flags itself again)
        at once, not at its next poll."""
        if self.wakeups != "poll-only":
            self._store.hot_session(conn)
            conn.add_notify_handler(lambda n: self._on_notify(n.channel, n.payload))
            for channel in (self._channels["jobs"], self._channels["control"]):
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        self._waiting.forget()
        self._remote.hint()  # requests announced while it was away
        self._wakeup.set()
