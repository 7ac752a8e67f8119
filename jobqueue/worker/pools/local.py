"""The pool's local queue: claimed jobs waiting for a free slot.

Unlike ``queue.SimpleQueue`` it can hand back the jobs not yet started
(``drain``), so a warm shutdown releases prefetched jobs at once instead of
running them, and one of them (``remove``), so a job revoked while prefetched
never starts.

A job with ``not_before`` (a rate-limited job admitted ahead of its token:
``admit_at()`` in SQL) is held apart until that time, then queued behind the
jobs already waiting: late is allowed, early never is. Held jobs are jobs not
yet started like the others (``drain``, ``remove``, ``snapshot``), and they
hold no slot meanwhile.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import deque

from ..job import Job


class LocalQueue:
    def __init__(self) -> None:
        self._items: deque[Job | None] = deque()
        # (not_before, order, job): a heap by start time; order keeps the
        # claim's order among equal times and never compares two jobs.
        self._held: list[tuple[float, int, Job]] = []
        self._order = 0
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
            if any(job.not_before is not None for job in items):
                ready = []
                for job in items:
                    if job.not_before is None:
                        ready.append(job)
                    else:
                        self._order += 1
                        heapq.heappush(self._held, (job.not_before, self._order, job))
                self._items.extend(ready)
                # Every slot waiting looks at the held jobs' new first time.
                self._cond.notify_all()
            else:
                self._items.extend(items)
                self._cond.notify(len(items))

    def get(self) -> Job | None:
        with self._cond:
            while True:
                if self._held:
                    self._release_due()
                if self._items:
                    return self._items.popleft()
                if self._held:
                    self._cond.wait(max(self._held[0][0] - time.monotonic(), 0.0))
                else:
                    self._cond.wait()

    def _release_due(self) -> None:
        """Queue the held jobs whose time has come (under the lock)."""
        now = time.monotonic()
        held = self._held
        while held and held[0][0] <= now:
            self._items.append(heapq.heappop(held)[2])

    def close(self, slots: int) -> None:
        """Each slot gets a ``None`` after the jobs already queued."""
        with self._cond:
            self._items.extend([None] * slots)
            self._cond.notify_all()

    def retire(self, slots: int) -> None:
        """``slots`` slots leave at once (a ``None`` ahead of the queued jobs):
        the pool shrinks (remote control's pool_shrink)."""
        with self._cond:
            self._items.extendleft([None] * slots)
            self._cond.notify(slots)

    def snapshot(self) -> list[Job]:
        """The jobs waiting for a slot, in order (inspect's ``reserved``),
        then the held ones by start time."""
        with self._cond:
            waiting = [item for item in self._items if item is not None]
            return waiting + [entry[2] for entry in sorted(self._held)]

    def drain(self) -> list[Job]:
        """Take back every job not yet started."""
        with self._cond:
            jobs = [item for item in self._items if item is not None]
            jobs += [entry[2] for entry in sorted(self._held)]
            self._held.clear()
            kept = [item for item in self._items if item is None]
            self._items = deque(kept)
            return jobs

    def remove(self, job_id: str) -> Job | None:
        """Take back the job ``job_id`` if it has not started; None otherwise."""
        with self._cond:
            for index, item in enumerate(self._items):
                if item is not None and item.id == job_id:
                    del self._items[index]
                    return item
            for index, entry in enumerate(self._held):
                if entry[2].id == job_id:
                    self._held[index] = self._held[-1]
                    self._held.pop()
                    heapq.heapify(self._held)
                    return entry[2]
            return None
