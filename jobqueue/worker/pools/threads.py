"""The thread pool: a thread per slot, one event loop thread for async tasks."""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import logging
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...exceptions import SoftTimeLimitExceeded, Terminated, TimeLimitExceeded
from .. import atomic
from ..executor import broken, execute, failed, precheck, revoked
from ..job import Job
from ..outcome import Outcome
from . import Gate, Report
from .local import LocalQueue
from .watchdog import Watchdog

if TYPE_CHECKING:
    from ...app import JobQueue

log = logging.getLogger(__name__)

_INTERRUPTS = (SoftTimeLimitExceeded, TimeLimitExceeded, Terminated)
_STOPS = (TimeLimitExceeded, Terminated)  # what _stop delivers


@dataclass
class _Running:
    job: Job
    thread: int
    future: concurrent.futures.Future[Any] | None = None
    interrupt: BaseException | None = None
    timers: list[int] = field(default_factory=list)
    outcome: Outcome | None = None  # computed by the slot, not reported yet
    settled: bool = False  # reported, or given up on by kill(): never report it again
    started: float = field(default_factory=time.time)


def _raise_in_thread(thread_id: int, exc_type: type[BaseException] | None) -> None:
    """Deliver ``exc_type`` in a thread at its next bytecode (CPython); None
    withdraws one not yet delivered."""
    exc = None if exc_type is None else ctypes.py_object(exc_type)
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), exc)


class ThreadPool:
    def __init__(
        self,
        app: JobQueue,
        *,
        size: int,
        hostname: str,
        report: Report,
        may_start: Gate | None = None,
    ) -> None:
        self.app, self.size, self.hostname, self.report = app, size, hostname, report
        self.may_start = may_start
        self._jobs = LocalQueue()
        self._lock = threading.Lock()
        self._running: dict[str, _Running] = {}
        self._retiring: set[int] = set()  # abandoned threads: exit when their task returns
        self._killed = False
        self._watchdog: Watchdog | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        for _ in range(self.size):
            self._spawn()

    def _spawn(self) -> None:
        threading.Thread(target=self._slot, name="jobqueue-task", daemon=True).start()

    def submit(self, job: Job) -> None:
        self._jobs.put(job)

    def submit_many(self, jobs: list[Job]) -> None:
        self._jobs.put_many(jobs)

    def drain(self) -> list[Job]:
        return self._jobs.drain()

    def discard(self, job_id: str) -> Job | None:
        return self._jobs.remove(job_id)

    def close(self) -> None:
        self._jobs.close(self.size)

    def resize(self, delta: int) -> int:
        with self._lock:
            if delta > 0:
                self.size += delta
            else:
                delta = -min(-delta, self.size - 1)
                self.size += delta
        if delta > 0:
            for _ in range(delta):
                self._spawn()
        elif delta < 0:
            self._jobs.retire(-delta)
        return self.size

    def running(self) -> list[tuple[Job, float]]:
        with self._lock:
            return [(entry.job, entry.started) for entry in self._running.values()]

    def reserved(self) -> list[Job]:
        return self._jobs.snapshot()

    def processes(self) -> list[int]:
        return []

    def kill(self) -> None:
        with self._lock:
            self._killed = True
            self._running.clear()
        self.close()

    def terminate(self, job_id: str) -> bool:
        return self._stop(job_id, Terminated(f"job {job_id} revoked with terminate=True"))

    def fence(self) -> int:
        # A thread blocked in I/O (the database it cannot reach) takes no
        # interrupt: running jobs finish, and their outcomes are refused.
        return 0

    # -- running ----------------------------------------------------------------

    def _slot(self) -> None:
        me = threading.get_ident()
        while True:
            entry: _Running | None = None
            try:
                job = self._jobs.get()
                if job is None:
                    return
                entry = _Running(job, me)
                self._run(entry)
            except BaseException as exc:  # no fault around a job may end its slot
                if entry is not None:
                    # A late interrupt for a job already given up on, or a fault
                    # that left the job without an outcome: then it fails with it.
                    self._finish(entry, exc)
            with self._lock:
                if me in self._retiring:
                    self._retiring.discard(me)
                    return

    def _run(self, entry: _Running) -> None:
        job = entry.job
        task = self.app.tasks.get(job.task)
        # Expired while it waited in the pool, or a payload no attempt could run:
        # reported without running, before anything else can trip on it.
        entry.outcome = precheck(job, self.may_start, task)
        if entry.outcome is not None:
            self._finish(entry)
            return
        soft, hard = job.limits(task)
        with self._lock:
            self._running[job.id] = entry
        if soft is not None:
            entry.timers.append(self._dog().schedule(soft, lambda: self._soft(job.id)))
        if hard is not None:
            exc = TimeLimitExceeded(f"task {job.task}[{job.id}] exceeded its {hard}s time limit")
            entry.timers.append(self._dog().schedule(hard, lambda: self._stop(job.id, exc)))
        try:
            entry.outcome = execute(
                self.app, job, self.hostname, run_async=lambda coro: self._await(entry, coro)
            )
        except _STOPS:
            if entry.interrupt is None:
                raise
        finally:
            for key in entry.timers:
                self._dog().cancel(key)
        stop = entry.interrupt
        if isinstance(stop, _STOPS) and not entry.settled:
            # An atomic task's job stopped by _stop, its transaction rolled back:
            # the outcome is the stop's (the interrupt arrived as a bare class).
            outcome = entry.outcome
            if outcome is None or not outcome.recorded:
                terminated = isinstance(stop, Terminated)
                entry.outcome = revoked(job, stop, task) if terminated else failed(task, job, stop)
        self._finish(entry)

    def _finish(self, entry: _Running, fault: BaseException | None = None) -> None:
        """Report the job once: its outcome, or else a FAILURE with ``fault``.
        Nothing if it was reported already (``_stop``) or the pool was killed."""
        while True:
            try:
                with self._lock:
                    # Drop an interrupt aimed at the finished task; none can be
                    # added while we hold the lock, and after it the entry is gone.
                    # Every interrupt is marked (entry.interrupt) before it is
                    # raised: with none marked there is none to drop, and the
                    # call (ctypes, 0.5 us) is spared.
                    if entry.interrupt is not None:
                        _raise_in_thread(entry.thread, None)
                    mine = self._settle(entry)
                break
            except _INTERRUPTS as late:  # it landed before we could drop it
                fault = fault or late
        if mine:
            outcome = entry.outcome
            if outcome is None:
                outcome = broken(entry.job, fault or RuntimeError("the job ended without outcome"))
            self.report(outcome)

    def _settle(self, entry: _Running) -> bool:
        """Under the lock: mark the job reported and forget it; True if the caller
        is the one to report it (first to settle, and the pool not killed)."""
        if entry.settled:
            return False
        entry.settled = True
        if self._running.get(entry.job.id) is entry:
            del self._running[entry.job.id]
        return not self._killed

    def _soft(self, job_id: str) -> None:
        with self._lock:
            entry = self._running.get(job_id)
            if entry is None:
                return
            entry.interrupt = SoftTimeLimitExceeded(f"job {job_id} exceeded its soft time limit")
            if entry.future is not None:
                entry.future.cancel()
            else:
                _raise_in_thread(entry.thread, SoftTimeLimitExceeded)

    def _stop(self, job_id: str, exc: BaseException) -> bool:
        """Hard limit or termination: report now, interrupt the thread, refill its slot.

        An atomic task's transaction is ended on the server first, the stop
        marked before (so a thread that sees its statement fail, and finishes
        before this reports, reports this stop, not that error). Should ending
        it fail, the job is only interrupted (and its statement cancelled): its
        outcome must not be recorded while its transaction could still commit,
        so its own thread reports it once that transaction rolled back."""
        if atomic.running(job_id):
            with self._lock:
                entry = self._running.get(job_id)
                if entry is None or entry.settled:
                    return False
                entry.interrupt = exc
            if not atomic.end_transaction(self.app, job_id):
                with self._lock:
                    _raise_in_thread(entry.thread, type(exc))
                atomic.interrupt(job_id)
                return True
        with self._lock:
            entry = self._running.get(job_id)
            if entry is None or not self._settle(entry):
                return False
            entry.interrupt = exc
            self._retiring.add(entry.thread)
            if entry.future is not None:
                entry.future.cancel()
            else:
                _raise_in_thread(entry.thread, type(exc))
        try:
            task = self.app.tasks.get(entry.job.task)
            terminated = isinstance(exc, Terminated)
            # A hard limit's task_failure is sent by the slot's thread when the
            # interrupt lands (with task_postrun: the run's signals stay paired).
            outcome = revoked(entry.job, exc, task) if terminated else failed(task, entry.job, exc)
        except BaseException as error:  # a watchdog or listener thread must not die of it
            outcome = broken(entry.job, error)
        self.report(outcome)
        self._spawn()
        return True

    # -- async tasks --------------------------------------------------------------

    def _await(self, entry: _Running, coro: Coroutine[Any, Any, Any]) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self._event_loop())
        with self._lock:
            entry.future = future
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise entry.interrupt or Terminated("cancelled") from None

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(
                    target=loop.run_forever, name="jobqueue-asyncio", daemon=True
                ).start()
                self._loop = loop
            return self._loop

    def _dog(self) -> Watchdog:
        if self._watchdog is None:
            with self._lock:
                if self._watchdog is None:
                    self._watchdog = Watchdog("jobqueue-limits")
        return self._watchdog
