"""The completer: a worker's thread that records outcomes in batches.

It takes outcomes from the worker's queue, lingers a moment so outcomes of
jobs still running share a commit, records each batch in one statement
(``recording``, guarded by lease and attempt), keeping a batch until the
database takes it, then settles the batch's jobs in the worker (out of
flight, slots freed, the prefetch estimate updated). It works on the
worker's in-flight state under the worker's lock, on the recording session
it shares with the listener (or, while that one is down, on the working
session).
"""

from __future__ import annotations

import logging
import queue
import time
from typing import TYPE_CHECKING, Any

import psycopg

from .outcome import Outcome
from .recording import record_or_split

if TYPE_CHECKING:
    from .runner import Worker

log = logging.getLogger("jobqueue.worker.runner")

_LINGER = 0.002  # seconds the completer waits for more outcomes to share a commit
_RECONNECT_MAX = 5.0


class Completer:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def run(self) -> None:
        """Until the worker's shutdown sentinel: batch, record, settle."""
        w = self.worker
        limit = w.app.conf.complete_batch_size
        stopping = False
        try:
            while True:
                first = w._outcomes.get()
                batch: list[Outcome] = []
                if first is None:
                    stopping = True
                else:
                    batch.append(first)
                # One commit per batch: while other jobs are still running, linger
                # a moment so their outcomes share it (costs at most _LINGER).
                deadline = time.monotonic() + _LINGER
                while len(batch) < limit and not stopping:
                    wait = deadline - time.monotonic()
                    more_coming = len(w._in_flight) > len(batch)
                    try:
                        item = (
                            w._outcomes.get(timeout=wait)
                            if more_coming and wait > 0
                            else w._outcomes.get_nowait()
                        )
                    except queue.Empty:
                        break
                    if item is None:
                        stopping = True
                    else:
                        batch.append(item)
                if batch:
                    self.write(batch)
                if stopping and w._outcomes.empty():
                    return
        finally:
            w._done.set()

    def write(self, batch: list[Outcome], conn: psycopg.Connection[Any] | None = None) -> None:
        """Record ``batch`` (keeping it until the database takes it), then settle
        its jobs in the worker: out of flight, the prefetch estimate updated.
        On the worker's session, or on ``conn`` (the cold exit's own)."""
        w = self.worker
        # An atomic task's outcome was recorded with its writes: only settled here.
        pending = [o for o in batch if not o.recorded]
        with w._lock:
            # All of them: the recorded state may differ from the outcome (a
            # revocation turns a retry into REVOKED); advance() skips unfinished jobs.
            advance = [o.job_id for o in pending if o.job_id in w._canvas]
        delay = 0.1
        tries = 0
        while pending:  # an outcome computed while the database is away is kept until it returns
            # The recording session; should it fail, the working session at
            # once: a worker that can heartbeat can record its outcomes, so
            # it never holds leases it cannot settle.
            session = (w._record, w._work)[tries % 2]
            tries += 1
            try:
                if conn is not None:
                    record_or_split(conn, w._store, w.id, pending, advance)
                else:
                    with session as own:
                        record_or_split(own, w._store, w.id, pending, advance)
                break
            except psycopg.Error as exc:  # transient (record_or_split handles the rest)
                if conn is not None:
                    raise  # the cold exit's: it is leaving anyway
                if tries % 2:
                    continue  # now on the other session
                log.warning(
                    "could not record %d outcome(s) (%s); retrying in %.1fs",
                    len(pending),
                    exc,
                    delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, _RECONNECT_MAX)
        if w.app.hooks.wanted("outcomes_recorded"):
            w.app.hooks.emit("outcomes_recorded", worker=w, outcomes=batch)
        with w._lock:
            for outcome in batch:
                w._in_flight.pop(outcome.job_id, None)
                w._canvas.discard(outcome.job_id)
                if outcome.unknown_task is not None:
                    # Leave its jobs to workers that know it for the grace period;
                    # then claim them again (to fail those past their grace).
                    until = time.monotonic() + w.app.conf.unknown_task_grace
                    w._skip_tasks[outcome.unknown_task] = until
            w.processed += len(batch)
            runtime = sum(o.runtime for o in batch) / len(batch)
            w._avg_runtime += (runtime - w._avg_runtime) * min(len(batch) / 50, 1.0)
        w._wakeup.set()
