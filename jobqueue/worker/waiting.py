"""A worker's side of conditional wake-ups (``wake_wanted`` in queries.sql).

Enqueues NOTIFY only while some worker waits for the queue. The claim loop
flags itself when a claim comes back short and unflags when one comes back
full; after flagging it looks at the queue once more, but only when no
enqueue that may have looked before the flag is still uncommitted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg

if TYPE_CHECKING:
    from ..store import Store

_RETRY_FIRST, _RETRY_MAX = 0.005, 0.5  # re-look while an enqueue may be unheard of


class WaitFlag:
    """The advisory locks one claim connection holds for its queues."""

    def __init__(self, queues: list[str], store: Store) -> None:
        self.queues = queues
        self._store = store
        self._flagged: set[str] = set()
        self.settled = False  # flagged, and every enqueue that did not see it has committed
        self._retry = _RETRY_FIRST
        # False behind a transaction pooler, where a session lock would stay
        # with a server connection other clients get: the listener's own
        # session holds the flags, or (poll-only) nobody does.
        self.enabled = True

    def settle(self, conn: psycopg.Connection[Any]) -> bool:
        """Flag our queues; True once no enqueue that looked before is still
        uncommitted (so one more claim sees every job we will not hear of)."""
        if not self.enabled:
            self.settled = True
            return True
        rest = [q for q in self.queues if q not in self._flagged]
        if rest:
            self._flagged.update(self._store.wait_flag(conn, rest))
        if len(self._flagged) == len(self.queues):
            self.settled = self._store.wait_settled(conn, self.queues)
        if self.settled:
            self._retry = _RETRY_FIRST
        return self.settled

    def retry_in(self) -> float:
        """Seconds until the next look while not settled (doubling, bounded)."""
        delay, self._retry = self._retry, min(self._retry * 2, _RETRY_MAX)
        return delay

    def stop(self, conn: psycopg.Connection[Any]) -> None:
        """Busy (a full claim): enqueues need not wake us."""
        if self._flagged:
            self._store.wait_unflag(conn, sorted(self._flagged))
            self.forget()

    def forget(self) -> None:
        """The connection is gone, and its session locks with it."""
        self._flagged.clear()
        self.settled = not self.enabled
        self._retry = _RETRY_FIRST
