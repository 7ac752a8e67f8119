"""What a worker hears of, and acts on only once SQL confirms it: NOTIFY
hints (wake-ups, revocations, remote control requests), the revocations of
jobs it holds, and the remote control requests it answers (remote.py).

A mixin of ``runner.Worker``: the claim loop calls these between claims, the
heartbeat the checks that cover lost notifications.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from typing import TYPE_CHECKING, Any

import psycopg

from ..exceptions import TaskRevokedError
from .executor import revoked

if TYPE_CHECKING:
    from ..app import JobQueue
    from ..store import Store
    from .outcome import Outcome
    from .pools import Pool
    from .remote import RemoteControl
    from .session import Session
    from .waiting import WaitFlag
    from .wakeup import Wakeup

log = logging.getLogger(__name__)


class Notices:
    """``runner.Worker``'s handling of what it hears (see the module)."""

    # Set by runner.Worker.__init__.
    app: JobQueue
    id: str
    hostname: str
    queues: list[str]
    concurrency: int
    _store: Store
    _lock: threading.Lock
    _work: Session
    _channels: dict[str, str]
    _wanted: set[str]
    _wakeup: Wakeup
    _waiting: WaitFlag
    _remote: RemoteControl
    _pool: Pool
    _in_flight: dict[str, int]
    _revoke_hints: list[str]
    _outcomes: queue.SimpleQueue[Outcome | None]

    def _take_revocations(self) -> None:
        """Revocations heard of: acted on once the database confirms them."""
        if not self._revoke_hints:
            return
        with self._lock:
            mentioned, self._revoke_hints = self._revoke_hints, []
        try:
            with self._work as conn:
                self._apply_revocations(conn, mentioned)
        except psycopg.Error as exc:  # the heartbeat re-checks the jobs we hold
            log.warning("could not check %d revocation(s) now: %s", len(mentioned), exc)

    def _on_notify(self, channel: str, payload: str) -> None:
        """A notification is only a hint (anyone who can connect may send
        one): a wake-up makes the claim look in SQL, and a revocation is acted
        on (by the listener, never here: psycopg may call this in the middle of
        the completer's statement) only once its job's row says so."""
        if channel == self._channels["jobs"]:
            if payload in self._wanted:
                self._wakeup.set()
            return
        message = self._control_message(payload)
        if "control" in message:  # a remote control request: look in SQL
            self._remote.hint()
            self._wakeup.set()
            return
        job_id = message.get("revoke")
        if isinstance(job_id, str) and job_id in self._in_flight:
            with self._lock:
                self._revoke_hints.append(job_id)
            self._wakeup.set()

    def _control_message(self, payload: str) -> dict[str, Any]:
        """A control channel message: {"revoke": job id} or {"control": request id}."""
        try:
            message = json.loads(payload)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            log.warning("ignoring malformed control message %r", payload[:200])
            return {}
        return message

    # -- remote control (remote.py) --------------------------------------------------

    def _take_control(self) -> None:
        """Answer remote control requests, when a NOTIFY or the heartbeat says
        some may wait (claim loop only: it owns the queues and the pool size)."""
        if not self._remote.due:
            return
        try:
            with self._work as conn:
                self._remote.take(conn)
        except psycopg.Error as exc:  # the heartbeat makes it look again
            log.warning("could not answer remote control now: %s", exc)

    def resize_pool(self, delta: int) -> int:
        """pool_grow / pool_shrink: slots added or retired; the new size."""
        with self._lock:
            self.concurrency = self._pool.resize(delta)
        log.info("worker %s: pool resized to %d slot(s)", self.hostname, self.concurrency)
        return self.concurrency

    def change_queues(
        self, conn: psycopg.Connection[Any], add: str | None = None, remove: str | None = None
    ) -> bool:
        """add_consumer / cancel_consumer, on the claim loop; False if nothing changed."""
        if (add is not None and add in self.queues) or (
            remove is not None and remove not in self.queues
        ):
            return False
        self._waiting.stop(conn)  # its flags are per queue: flag the new set afresh
        if add is not None:
            self.queues.append(add)  # in place: the wait flag reads this list
        if remove is not None:
            self.queues.remove(remove)
        self._wanted = set(self.queues)
        log.info("worker %s now consumes from %s", self.hostname, ",".join(self.queues) or "-")
        self._wakeup.set()
        return True

    def _apply_revocations(self, conn: psycopg.Connection[Any], ids: list[str]) -> None:
        """Act on the revocations the database confirms among ``ids`` (jobs
        this worker holds): a job still waiting in the prefetch buffer is
        recorded REVOKED without running, as Celery does with a reserved task;
        a running one is stopped if the revocation says terminate, else it
        finishes (and is not retried)."""
        for job_id, terminate in self._store.revocations(conn, ids, self.id):
            job = self._pool.discard(job_id)
            if job is not None:
                exc = TaskRevokedError("revoked before it started")
                self._outcomes.put(revoked(job, exc, self.app.tasks.get(job.task)))
            elif terminate and self._pool.terminate(job_id):
                log.info("revoking running job %s (terminate)", job_id)

    def _check_revocations(self, conn: psycopg.Connection[Any]) -> None:
        """NOTIFY's cover: revocations whose notification was lost."""
        held = list(self._in_flight)
        if held:
            self._apply_revocations(conn, held)
