"""An in-process worker for tests: ``drain()`` runs what is due, then returns.

It is the real ``Worker`` (claim, pool, completion, canvas advance, leases),
started with ``until_empty``: it stops once nothing runs and a claim finds
nothing due, so what the drained jobs enqueued (chain steps, callbacks,
chord bodies, jobs a task enqueued) has run too. Jobs due later (a
``countdown``, a retry's delay) are left waiting.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import states

if TYPE_CHECKING:
    from ..app import JobQueue
    from ..worker.outcome import Outcome


@dataclass
class Drained:
    """What one ``drain()`` ran: every attempt's outcome, counted by state."""

    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def counts(self) -> Counter[str]:
        return Counter(o.state for o in self.outcomes)

    @property
    def succeeded(self) -> int:
        return self.counts[states.SUCCESS]

    @property
    def failed(self) -> int:
        return self.counts[states.FAILURE]

    @property
    def retried(self) -> int:
        return self.counts[states.RETRY]

    @property
    def revoked(self) -> int:
        return self.counts[states.REVOKED]

    def __repr__(self) -> str:
        return f"<Drained {dict(sorted(self.counts.items()))}>"


class TestWorker:
    """``drain()``: a real worker in a thread of this process, until the queues are empty."""

    __test__ = False  # not a test class, for pytest's collector

    def __init__(self, app: JobQueue) -> None:
        self.app = app
        self._running: list[tuple[Any, threading.Thread]] = []

    def drain(
        self,
        queues: Iterable[str] | None = None,
        *,
        timeout: float = 30.0,
        concurrency: int = 1,
        **settings: Any,
    ) -> Drained:
        """Run the jobs due in ``queues`` (default: the app's default queue),
        and what they cause, until none is left; what ran. One slot by
        default, so jobs run in claim order. ``settings``: any other
        ``WorkerSettings`` (pool="processes"...). ``TimeoutError`` if jobs
        are still running or due after ``timeout`` seconds (the worker is
        stopped; a job it was running finishes first)."""
        from ..worker import Worker

        drained = Drained()
        app = self.app
        was_worker = app.db._worker  # a worker marks its app's database as its own
        worker = Worker(
            app,
            queues=list(queues) if queues is not None else None,
            concurrency=concurrency,
            until_empty=True,
            hostname=settings.pop("hostname", f"jobqueue-test@{socket.gethostname()}"),
            **settings,
        )

        def collect(worker: Any = None, outcomes: Any = (), **_: Any) -> None:
            if worker is this:
                drained.outcomes.extend(outcomes)

        this = worker
        failure: list[BaseException] = []

        def run() -> None:
            try:
                worker.run()
            except BaseException as exc:  # raised in the caller's thread
                failure.append(exc)

        app.hooks.connect("outcomes_recorded", collect)
        thread = threading.Thread(target=run, name="jobqueue-test-worker", daemon=True)
        self._running.append((worker, thread))
        try:
            thread.start()
            thread.join(timeout)
            if thread.is_alive():
                worker.stop()
                thread.join(worker.shutdown_timeout + 15.0)
                raise TimeoutError(
                    f"drain() still had jobs running or due after {timeout}s: {drained!r} "
                    "so far (a task that never ends, or one that keeps enqueueing?)"
                )
        finally:
            app.hooks.disconnect("outcomes_recorded", collect)
            app.db._worker = was_worker
            if not thread.is_alive():
                self._running.remove((worker, thread))
        if failure:
            raise failure[0]
        return drained

    def close(self) -> None:
        """Stop any worker a timed-out drain left running."""
        for worker, thread in self._running:
            worker.stop()
            thread.join(worker.shutdown_timeout + 15.0)
        self._running.clear()
