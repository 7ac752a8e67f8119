"""The pool's local queue: claimed jobs waiting for a free slot.

Unlike ``queue.SimpleQueue`` it can hand back the jobs not yet started
(``drain``), so a warm shutdown releases prefetched jobs at once instead of
running them, and one of them (``remove``), so a job revoked while prefetched
never starts.

Jobs leave by priority, then in the order they came: a high-priority job
claimed while the worker holds a prefetch of lower-priority ones starts
next, not behind them. (FIFO, a priority-9 job waited behind up to a
thousand prefetched no-op jobs while a backlog of a million drained: p50
7.7 ms, p99 25.6 ms from its enqueue to its claim; benchmarks/priority_latency.py.)
A claim's jobs share one priority almost always, so each priority keeps a
deque of its own and the common case costs what one deque did.

A job with ``not_before`` (a rate-limited job admitted ahead of its token:
``admit_at()`` in SQL) is held apart until that time, then queued behind the
jobs of its priority already waiting: late is allowed, early never is. Held
jobs are jobs not yet started like the others (``drain``, ``remove``,
``snapshot``), and they hold no slot meanwhile.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import deque

from ..job import Job


class LocalQueue:
    def __init__(self) -> None:
        self._levels: dict[int, deque[Job]] = {}  # priority -> its jobs, in order
        self._order: list[int] = []  # the priorities in _levels, highest first
        self._count = 0  # jobs in _levels
        self._retiring = 0  # slots to leave before any job (retire)
        self._closing = 0  # slots to leave once no job is left (close)
        # (not_before, order, job): a heap by start time; order keeps the
        # claim's order among equal times and never compares two jobs.
        self._held: list[tuple[float, int, Job]] = []
        self._seq = 0
        self._cond = threading.Condition()

    def put(self, job: Job) -> None:
        self.put_many([job])

    def put_many(self, items: list[Job]) -> None:
        """A claim's jobs, with one wake-up for as many slots as there are
        jobs (a notify per job was 7 % of a worker's Python time draining
        no-op jobs in claims of 500)."""
        if not items:
            return
        with self._cond:
            first = items[0].priority or 0
            if all((job.priority or 0) == first and job.not_before is None for job in items):
                self._level(first).extend(items)
                self._count += len(items)
                self._cond.notify(len(items))
                return
            for job in items:
                if job.not_before is None:
                    self._level(job.priority or 0).append(job)
                    self._count += 1
                else:
                    self._seq += 1
                    heapq.heappush(self._held, (job.not_before, self._seq, job))
            # Every slot waiting looks at the held jobs' new first time.
            self._cond.notify_all()

    def _level(self, priority: int) -> deque[Job]:
        level = self._levels.get(priority)
        if level is None:
            if len(self._order) >= 16:  # forget the priorities no job waits at
                self._order = [p for p in self._order if self._levels[p]]
                self._levels = {p: self._levels[p] for p in self._order}
            level = self._levels[priority] = deque()
            self._order.append(priority)
            self._order.sort(reverse=True)
        return level

    def _pop(self) -> Job:
        """The first job of the highest priority (under the lock; one is there)."""
        for priority in self._order:
            level = self._levels[priority]
            if level:
                self._count -= 1
                return level.popleft()
        raise AssertionError("no job although _count > 0")

    def get(self) -> Job | None:
        with self._cond:
            while True:
                if self._retiring:
                    self._retiring -= 1
                    return None
                if self._held:
                    self._release_due()
                if self._count:
                    return self._pop()
                if self._closing:
                    self._closing -= 1
                    return None
                if self._held:
                    self._cond.wait(max(self._held[0][0] - time.monotonic(), 0.0))
                else:
                    self._cond.wait()

    def get_nowait(self, keep: int = 0) -> Job | None:
        """A job if more than ``keep`` are waiting now, else None (a slot
        retiring or closing takes its turn at ``get``). The process pool's
        slots hand their child its next job this way while the current one
        runs, keeping one job for each slot that is free."""
        with self._cond:
            if self._retiring:
                return None
            if self._held:
                self._release_due()
            return self._pop() if self._count > keep else None

    def unget(self, job: Job) -> None:
        """``job`` taken by ``get_nowait`` but not handed over: first again
        among the jobs of its priority."""
        with self._cond:
            self._level(job.priority or 0).appendleft(job)
            self._count += 1
            self._cond.notify()

    def _release_due(self) -> None:
        """Queue the held jobs whose time has come (under the lock)."""
        now = time.monotonic()
        held = self._held
        while held and held[0][0] <= now:
            job = heapq.heappop(held)[2]
            self._level(job.priority or 0).append(job)
            self._count += 1

    def close(self, slots: int) -> None:
        """Each slot gets a ``None`` after the jobs already queued."""
        with self._cond:
            self._closing += slots
            self._cond.notify_all()

    def retire(self, slots: int) -> None:
        """``slots`` slots leave at once (a ``None`` ahead of the queued jobs):
        the pool shrinks (remote control's pool_shrink)."""
        with self._cond:
            self._retiring += slots
            self._cond.notify(slots)

    def _waiting(self) -> list[Job]:
        jobs = [job for priority in self._order for job in self._levels[priority]]
        return jobs + [entry[2] for entry in sorted(self._held)]

    def snapshot(self) -> list[Job]:
        """The jobs waiting for a slot, in the order they would start
        (inspect's ``reserved``), then the held ones by start time."""
        with self._cond:
            return self._waiting()

    def drain(self) -> list[Job]:
        """Take back every job not yet started."""
        with self._cond:
            jobs = self._waiting()
            self._levels.clear()
            self._order.clear()
            self._count = 0
            self._held.clear()
            return jobs

    def remove(self, job_id: str) -> Job | None:
        """Take back the job ``job_id`` if it has not started; None otherwise."""
        with self._cond:
            for level in self._levels.values():
                for index, job in enumerate(level):
                    if job.id == job_id:
                        del level[index]
                        self._count -= 1
                        return job
            for index, entry in enumerate(self._held):
                if entry[2].id == job_id:
                    self._held[index] = self._held[-1]
                    self._held.pop()
                    heapq.heapify(self._held)
                    return entry[2]
            return None
