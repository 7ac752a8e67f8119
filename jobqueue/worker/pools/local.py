"""The pool's local queue: claimed jobs waiting for a free slot.

Unlike ``queue.SimpleQueue`` it can hand back the jobs not yet started
(``drain``), so a warm shutdown releases prefetched jobs at once instead of
running them, and one of them (``remove``), so a job revoked while prefetched
never starts.
"""

from __future__ import annotations

import threading
from collections import deque

from ..job import Job


class LocalQueue:
    def __init__(self) -> None:
        self._items: deque[Job | None] = deque()
        self._cond = threading.Condition()

    def put(self, item: Job | None) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify()

    def put_many(self, items: list[Job]) -> None:
        """A claim's jobs, with one wake-up for as many slots as there are
        jobs (a notify per job was 7 % of a worker's Python time draining
        no-op jobs in claims of 500)."""
        if items:
            with self._cond:
                self._items.extend(items)
                self._cond.notify(len(items))

    def get(self) -> Job | None:
        with self._cond:
            while not self._items:
                self._cond.wait()
            return self._items.popleft()

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
        """The jobs waiting for a slot, in order (inspect's ``reserved``)."""
        with self._cond:
            return [item for item in self._items if item is not None]

    def drain(self) -> list[Job]:
        """Take back every job not yet started."""
        with self._cond:
            jobs = [item for item in self._items if item is not None]
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
            return None
