"""One timer thread for every soft and hard limit of a pool (not a Timer per job)."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

_LONGEST_WAIT = 3600.0  # seconds; threading refuses waits past TIMEOUT_MAX (~292 years)


class Watchdog:
    def __init__(self, name: str) -> None:
        self._heap: list[tuple[float, int, Callable[[], object]]] = []
        self._cancelled: set[int] = set()
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def schedule(self, delay: float, action: Callable[[], object]) -> int:
        with self._cond:
            key = next(self._counter)
            heapq.heappush(self._heap, (time.monotonic() + delay, key, action))
            self._cond.notify()
            return key

    def cancel(self, key: int) -> None:
        with self._cond:
            self._cancelled.add(key)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                due, key, action = self._heap[0]
                wait = due - time.monotonic()
                if wait > 0:
                    # A limit of years would overflow the wait: wake up meanwhile.
                    self._cond.wait(min(wait, _LONGEST_WAIT))
                    continue
                heapq.heappop(self._heap)
                if key in self._cancelled:
                    self._cancelled.discard(key)
                    continue
            try:
                action()
            except Exception:  # one failing action must not stop every later limit
                log.exception("watchdog action failed")
