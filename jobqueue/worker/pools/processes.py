"""The process pool: a child process per slot, so limits and revocations are real.

Each slot is a thread in the worker that owns one child (``spawn`` start
method: safe next to the worker's own threads). The thread hands the child a
job over a pipe and waits for its outcome; it kills the child at the hard
time limit, on ``terminate`` and when the worker is fenced, and starts a
fresh one for its next job after a crash, a kill or ``max_tasks_per_child``
jobs. The claim loop never waits on any of this.

While the child runs a job, the thread also hands it the next few waiting
jobs (``_AHEAD``), which the child starts one after another without waiting
on the thread: handing one job at a time, the child spent 70 % of its time
waiting for the next. Those jobs have not started: the thread can ask the
child to skip them (``skip``: a revocation, a warm shutdown), and hands them
back unstarted if the child is stopped.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import threading
import time
from collections import deque
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from typing import TYPE_CHECKING, Any

from ...exceptions import (
    ConfigurationError,
    MalformedJob,
    TaskRevokedError,
    Terminated,
    TimeLimitExceeded,
)
from ...logs import current_format as log_format
from .. import atomic
from ..executor import (
    JOB_LOGGER,
    broken,
    killed,
    lost,
    malformed,
    precheck,
    revoked,
    unstarted,
)
from ..job import Job
from ..outcome import Outcome
from . import Gate, Report
from .child import Skipped, child_main
from .local import LocalQueue

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from ...app import JobQueue

log = logging.getLogger(__name__)

_CHECK_EVERY = 0.2  # seconds between checks of a running job's deadline and revocation
_CLOSE_WAIT = 10.0  # seconds a closing pool waits for its children to exit, in all
# How many jobs a slot hands its child ahead of the one it runs, and the
# largest: a pipe holds 64 KiB, so these and their skips never block the
# slot's thread on a write. -c 2 draining no-op jobs on a 2-core machine, one
# run each: 1 ahead 4,700 jobs/s, 3 ahead 5,100-5,700, 8 ahead 6,100; 4 ahead
# 5,500 against 3,600 with none (3 alternating runs each).
_AHEAD = 4
_AHEAD_BYTES = 8 * 1024
# Jobs go ahead only while the recent average run time is under this: a job
# handed ahead waits behind the one its child runs, so at most _AHEAD jobs
# wait behind a long job met among short ones (Celery's prefork had the same
# trade, and made -Ofair, no prefetch into busy children, its default). At
# 5 ms a job, the pool's own hand-off is already under a tenth of the time.
_AHEAD_RUNTIME = 0.005


class ProcessPool:
    def __init__(
        self,
        app: JobQueue,
        *,
        size: int,
        hostname: str,
        report: Report,
        max_tasks_per_child: int | None = None,
        may_start: Gate | None = None,
    ) -> None:
        self.may_start = may_start
        if app.main_spec is None:
            raise ConfigurationError(
                "the process pool needs to re-import the app in its children: start the "
                "worker with -A module:app (or set app.main_spec)"
            )
        self.app, self.size, self.hostname, self.report = app, size, hostname, report
        self.max_tasks_per_child = max_tasks_per_child
        self._context = multiprocessing.get_context("spawn")
        self._jobs = LocalQueue()
        self._slots = [_Slot(self, i) for i in range(size)]
        self._killed = False
        self._runtime = 1.0  # seconds, the recent average of its jobs' (deliver)

    def start(self) -> None:
        for slot in self._slots:
            slot.start()

    def submit(self, job: Job) -> None:
        self._jobs.put(job)

    def submit_many(self, jobs: list[Job]) -> None:
        self._jobs.put_many(jobs)

    def drain(self) -> list[Job]:
        """The jobs not started, taken back; the children are asked to skip
        the jobs handed to them ahead, which their slots then hand back."""
        for slot in self._slots:
            slot.skip(None, "the worker is stopping")
        return self._jobs.drain()

    def discard(self, job_id: str) -> Job | None:
        """Take back ``job_id`` if it waits here. A job handed to a child ahead
        is not given back (its child may be starting it): the child is asked
        to skip it, and its slot reports it REVOKED unstarted, or its outcome."""
        job = self._jobs.remove(job_id)
        if job is None:
            any(slot.skip(job_id, "revoked") for slot in self._slots)
        return job

    def next_job(self) -> Job | None:
        return self._jobs.get()

    def next_job_ahead(self) -> Job | None:
        """A job to hand a busy child ahead: only while jobs are short (a job
        handed ahead waits behind the one its child runs, however long that
        turns out to be), and never one a free slot would take (a slot whose
        child held jobs ahead of a job stopped at a gate left the other slot
        idle: the worker's prefetch was spent)."""
        if self._runtime > _AHEAD_RUNTIME:
            return None
        free = sum(1 for slot in self._slots if slot.job is None)
        return self._jobs.get_nowait(keep=free)

    def unget(self, job: Job) -> None:
        """A job taken but not handed over: first again at its priority."""
        self._jobs.unget(job)

    def terminate(self, job_id: str) -> bool:
        return any(slot.interrupt(job_id, "terminate") for slot in self._slots)

    def fence(self) -> int:
        """Kill every child running a job: its side effects stop here (a job
        rescued elsewhere must not also finish here). Each slot reports its
        job lost and starts a fresh child for the next one."""
        return sum(slot.interrupt(None, "fenced") for slot in self._slots)

    def close(self) -> None:
        self._jobs.close(self.size)
        if not self._killed:
            # Wait (a little) for the idle children to exit by themselves: they
            # send worker_process_shutdown, whose receivers flush what they hold
            # (a tracer's spans), before the worker exits and takes them down.
            deadline = time.monotonic() + _CLOSE_WAIT
            for slot in self._slots:
                slot.join(max(deadline - time.monotonic(), 0.0))

    def resize(self, delta: int) -> int:
        if delta > 0:
            slots = [_Slot(self, len(self._slots) + i) for i in range(delta)]
            self._slots = [*self._slots, *slots]  # a new list: readers iterate the old one
            self.size += delta
            for slot in slots:
                slot.start()
        elif delta < 0:
            retire = min(-delta, self.size - 1)
            self.size -= retire
            self._jobs.retire(retire)
        return self.size

    def running(self) -> list[tuple[Job, float]]:
        return [(job, slot.started) for slot in self._slots if (job := slot.job) is not None]

    def reserved(self) -> list[Job]:
        ahead = [job for slot in self._slots for job in list(slot.ahead)]
        return ahead + self._jobs.snapshot()

    def processes(self) -> list[int]:
        return [
            pid
            for slot in self._slots
            if (child := slot.child) is not None and child.is_alive() and (pid := child.pid)
        ]

    def kill(self) -> None:
        self._killed = True
        for slot in self._slots:
            slot.kill_child()
        self.close()

    def deliver(self, outcome: Outcome) -> None:
        # The recent average run time (from a cautious second, as the worker's
        # prefetch estimate): jobs go ahead only while it is short.
        self._runtime += (outcome.runtime - self._runtime) * 0.05
        if not self._killed:
            self.report(outcome)

    def child_settings(self) -> dict[str, Any]:
        conf = self.app.conf
        return {
            "spec": self.app.main_spec,
            "dsn": self.app.db.dsn(),
            "schema": conf.schema,
            # What the worker found, so a child need not look again.
            "pooler": self.app.db.pooler or conf.pooler,
            "listen_dsn": conf.listen_dsn,
            "prepared_statements": conf.prepared_statements,
            "task_pool_max_size": conf.task_pool_max_size,
            "lease_ttl": conf.lease_ttl,  # sets how soon its sockets give up
            "heartbeat_interval": conf.heartbeat_interval,  # validated against lease_ttl
            "hostname": self.hostname,
            "max_tasks": self.max_tasks_per_child,
            "log_level": logging.getLogger().level,
            "log_format": log_format(),
            "job_log_level": logging.getLogger(JOB_LOGGER).level,
        }


class _Slot:
    def __init__(self, pool: ProcessPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.child: BaseProcess | None = None
        self.conn: Connection | None = None
        self.job: Job | None = None  # the job the child runs
        # The jobs handed to the child to start, in order, as soon as ``job``
        # ends, so it never waits on this thread in between; and why the
        # child was asked to skip such a job, by its id.
        self.ahead: deque[Job] = deque()
        self.skips: dict[str, str] = {}
        self.reason: str | None = None  # why the parent is stopping the current job
        self.lock = threading.Lock()  # also orders what is written to the pipe
        self.done = 0
        self.started = 0.0  # time.time() the current job was handed to the child
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self._ensure_child()
        name = f"jobqueue-slot-{self.index}"
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    def join(self, timeout: float) -> None:
        if self.thread is not None:
            self.thread.join(timeout)

    def _ensure_child(self) -> None:
        if self.child is not None and self.child.is_alive():
            return
        parent, child = self.pool._context.Pipe()
        process = self.pool._context.Process(
            target=child_main,
            args=(child, self.pool.child_settings()),
            name=f"jobqueue-child-{self.index}",
            daemon=True,
        )
        process.start()
        child.close()
        self.child, self.conn, self.done = process, parent, 0

    def _loop(self) -> None:
        job: Job | None = None  # handed to the child: the job it runs
        while True:
            if job is None:
                job = self._hand(ahead=False)
                if job is None:
                    self._stop_child()
                    return
            try:
                outcome = self._see_through(job)
            except BaseException as exc:  # no fault around a job may end its slot
                outcome = self._fault(job, exc)
            self.pool.deliver(outcome)
            job = self._next_after(job)

    def _hand(self, *, ahead: bool) -> Job | None:
        """Take jobs from the pool until one is handed to the child, and return
        it; None when the pool closes (or, ``ahead``, when no job waits). The
        outcome of a job that cannot be handed over (expired, malformed,
        fenced, a fault) is reported here. ``ahead``: the child is running a
        job; this one goes after it, if its message fits the pipe at once."""
        while True:
            job = self.pool.next_job_ahead() if ahead else self.pool.next_job()
            if job is None:
                return None
            try:
                task = self.pool.app.tasks.get(job.task)
                # Expired while it waited in the pool, or a payload no attempt
                # could run: reported without running, before anything else.
                outcome = precheck(job, self.pool.may_start, task)
                if outcome is None:
                    message = _message(job)
                    if not isinstance(message, bytes):
                        outcome = message
                    elif ahead and len(message) > _AHEAD_BYTES:
                        # It could fill the pipe and block this thread, which
                        # watches the running job: it goes when the child is free.
                        self.pool.unget(job)
                        return None
                    else:
                        if not ahead:
                            self._ensure_child()
                        outcome = self._send(job, message, task, ahead)
            except BaseException as exc:
                outcome = self._fault(job, exc)
            if outcome is None:
                return job
            self.pool.deliver(outcome)

    def _send(self, job: Job, message: bytes, task: Any, ahead: bool) -> Outcome | None:
        """Hand ``job`` to the child: None once it is there, else what becomes
        of it instead."""
        assert self.conn is not None
        with self.lock:
            # Fenced since the precheck, before fence() could see this job:
            # hand it back unstarted (the worker fences first, then the pool).
            handed_back = precheck(job, self.pool.may_start, task)
            if handed_back is not None:
                return handed_back
            if ahead:
                self.ahead.append(job)
                log.debug("slot %d: job %s handed to its child ahead", self.index, job.id)
            else:
                self.job, self.reason, self.started = job, None, time.time()
            try:
                self.conn.send_bytes(message)
            except OSError:
                if not ahead:
                    if self.reason is None:
                        raise
                    return self._child_gone(job)  # killed before it took the job
                self.ahead.pop()  # the child is gone: the job it runs says why
                return unstarted(job, "its child process is gone")
        return None

    def _may_go_ahead(self) -> bool:
        """Whether the child may be handed a next job now: none is there yet,
        nobody is stopping the current one, and the current one is not the
        last the child runs (max_tasks_per_child)."""
        limit = self.pool.max_tasks_per_child
        ahead = len(self.ahead)
        return (
            ahead < _AHEAD and self.reason is None and not (limit and self.done + ahead + 2 > limit)
        )

    def _see_through(self, job: Job) -> Outcome:
        """Wait for the child's reply on ``job`` (handed to it): its outcome,
        or what the parent makes of it when the child is killed or dies. Hands
        the child its next job meanwhile, when one waits."""
        assert self.conn is not None and self.child is not None
        task = self.pool.app.tasks.get(job.task)
        _, hard = job.limits(task)
        deadline = None if hard is None else time.monotonic() + hard
        while True:
            while self._may_go_ahead() and self._hand(ahead=True) is not None:
                pass
            try:
                ready = self.conn.poll(_CHECK_EVERY)
            except OSError:  # the child was killed: the pipe was reset
                return self._child_gone(job)
            if ready:
                try:
                    reply: Outcome | Skipped = self.conn.recv()
                except (EOFError, OSError):  # gone (a kill can reset the pipe)
                    return self._child_gone(job)
                with self.lock:  # the child moved on to the first job handed ahead
                    self.job = self.ahead.popleft() if self.ahead else None
                    self.reason, self.started = None, time.time()
                why = self.skips.pop(job.id, None)
                if isinstance(reply, Skipped):
                    if why == "revoked":
                        exc = TaskRevokedError("revoked before it started")
                        return revoked(job, exc, task)
                    return unstarted(job, why or "skipped")
                self.done += 1
                limit = self.pool.max_tasks_per_child
                if limit and self.done >= limit:
                    self._stop_child()  # it exits by itself; reap it, start anew
                return reply
            if self.reason is not None or not self.child.is_alive():
                if self._replied():
                    continue  # what it sent before it was stopped comes first
                return self._child_gone(job)
            if deadline is not None and time.monotonic() > deadline:
                if not self.interrupt(job.id, "time_limit"):
                    continue  # it ended meanwhile: its reply waits
                self._end_transaction(job)
                return killed(
                    task,
                    job,
                    TimeLimitExceeded(
                        f"task {job.task}[{job.id}] exceeded its {hard}s time limit; "
                        "its process was killed"
                    ),
                )

    def _next_after(self, job: Job) -> Job | None:
        """The job the child runs once ``job`` is seen through: the first one
        handed ahead, made current when the child replied (it started it right
        after sending the reply); else none, and the jobs handed ahead go back
        unstarted, their child stopped first (it may be alive after a fault)."""
        with self.lock:
            if self.job is not job:
                return self.job
            ahead, self.ahead, self.job = self.ahead, deque(), None
            why = self.reason or "its child process died"
        if ahead:
            self.kill_child()
        for held in ahead:
            self.skips.pop(held.id, None)
            self.pool.deliver(unstarted(held, f"handed to a child that was stopped ({why})"))
        return None

    def skip(self, job_id: str | None, why: str) -> bool:
        """Ask the child not to start a job handed to it ahead (``job_id``, or
        every one): its reply then says it skipped it, and the slot
        reports it ``why`` ("revoked": REVOKED, else handed back). A child
        that started it already runs it; its outcome is reported as usual."""
        with self.lock:
            chosen = [job for job in self.ahead if job_id is None or job.id == job_id]
            for job in chosen:
                if job.id in self.skips or self.conn is None:
                    continue
                self.skips[job.id] = why
                log.info(
                    "slot %d: job %s handed to its child ahead is to be skipped (%s)",
                    self.index,
                    job.id,
                    why,
                )
                with contextlib.suppress(OSError):  # gone: _next_after hands it back
                    self.conn.send(("skip", job.id))
        return bool(chosen)

    def _fault(self, job: Job, exc: BaseException) -> Outcome:
        """The outcome of a job the slot could not see through: lost (back to the
        queue, as after a crash) if spawning a child or its pipe failed, else a
        FAILURE with the error (a bug here must not retry forever)."""
        if isinstance(exc, (OSError, EOFError)):
            try:
                log.error("process pool slot %d could not run %s: %s", self.index, job.id, exc)
                return lost(self.pool.app.tasks.get(job.task), job, f"pool error: {exc}")
            except BaseException as again:
                exc = again
        return broken(job, exc)

    def _end_transaction(self, job: Job) -> None:
        """The child running an atomic task is gone: its transaction too, now
        (not when the statement it ran ends), so its lease can be released."""
        task = self.pool.app.tasks.get(job.task)
        if task is not None and task.atomic:
            atomic.end_transaction(self.pool.app, job.id)

    def _child_gone(self, job: Job) -> Outcome:
        assert self.child is not None
        self.child.join(5)
        self._end_transaction(job)
        self.skips.pop(job.id, None)
        task = self.pool.app.tasks.get(job.task)
        if self.reason == "terminate":
            exc = Terminated(f"job {job.id} revoked with terminate=True")
            return revoked(job, exc, task, signal.SIGKILL)
        if self.reason == "fenced":
            return lost(task, job, "its process was killed: the worker is fenced")
        code = self.child.exitcode
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return lost(task, job, f"child process died ({how})")

    def interrupt(self, job_id: str | None, reason: str) -> bool:
        """Kill the child running ``job_id`` (None: whatever job it runs);
        True if the slot was running it. The kill is sent under the lock, and
        not at all once the job's reply waits in the pipe, so it cannot hit a
        child that has moved on to a job handed ahead; those go back unstarted
        (``_next_after``)."""
        with self.lock:
            if self.job is None or (job_id is not None and self.job.id != job_id):
                return False
            if job_id is not None and self._replied():
                # The job is over (its reply waits to be read): the child is
                # idle, or runs a job handed ahead, which the kill would hit.
                return False
            self.reason = reason
            child = self.child
            if child is not None and child.is_alive():
                child.kill()
        if child is not None:
            child.join(5)
        return True

    def _replied(self) -> bool:
        """Whether a reply waits in the pipe (read by the slot's thread)."""
        try:
            return self.conn is not None and self.conn.poll(0)
        except OSError:
            return False

    def kill_child(self) -> None:
        child = self.child
        if child is not None and child.is_alive():
            child.kill()
            child.join(5)

    def _stop_child(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(OSError):
                self.conn.send(None)
        if self.child is not None:
            self.child.join(5)
            if self.child.is_alive():
                self.child.kill()
        self.child = None


def _message(job: Job) -> bytes | Outcome:
    """``job`` as the pipe carries it, or its FAILURE if it cannot be."""
    try:
        return bytes(ForkingPickler.dumps(job))
    except Exception as exc:  # its decoded arguments nest too deeply to pickle
        return malformed(
            job,
            MalformedJob(
                f"job {job.id} of task {job.task!r} cannot be handed to a child process: "
                f"{type(exc).__name__}: {exc}"
            ),
        )
