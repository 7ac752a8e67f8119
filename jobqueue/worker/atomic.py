"""Running an atomic task's attempt (``@app.task(atomic=True)``): the task's
writes and its job's completion in one transaction.

In the slot's own connection (``jobqueue.atomic``), one transaction:

1. lock the attempt's lease (``job_lease_hold``): gone means the job was
   rescued or released, and this attempt does not run. Held, no rescuer can
   take it (``job_rescue`` skips locked leases) until the transaction ends;
2. run the task, which writes through ``self.connection`` / ``self.session``;
3. on success, complete the job in the same transaction (``job_complete_many``
   and, for a workflow step, ``job_advance``), then commit. Any other outcome
   rolls back, and the completer records it as for any task.

A worker killed anywhere in this leaves nothing: its connection closes, the
server rolls the transaction back, and the lease, free again, is rescued. A
commit whose reply is lost is settled by asking the server, once the
transaction has ended, whether the attempt completed (``Store.attempt_committed``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg

from .. import states
from ..atomic import Transaction, drop_slot_connection, slot_connection
from ..request import Request
from . import executor
from .job import Job
from .outcome import outcome_params

if TYPE_CHECKING:
    from ..app import JobQueue
    from ..tasks import Task
    from .outcome import Outcome

log = logging.getLogger("jobqueue.worker")

Attempt = tuple["Outcome", Any, BaseException | None]

_open: dict[str, psycopg.Connection[Any]] = {}  # job id -> its transaction's connection
_open_lock = threading.Lock()
_RETRY_MAX = 5.0


class _Undo(Exception):
    """Roll the transaction back: the attempt did not succeed."""


class _LeaseGone(Exception):
    pass


def running(job_id: str) -> bool:
    """Whether ``job_id`` runs in an atomic transaction in this process now."""
    return job_id in _open


def end_transaction(app: JobQueue, job_id: str) -> bool:
    """A pool stops an atomic task (time limit, termination, killed child): end
    its transaction on the server (``atomic_end``) before its outcome is
    recorded. False if that could not be done (the database unreachable): the
    caller must then leave the outcome to the task's own thread, once its
    transaction is over."""
    try:
        app.store.end_atomic(job_id)
        return True
    except Exception as exc:  # a pool's thread must not die of it
        log.warning("could not end the transaction of atomic job %s: %s", job_id, exc)
        return False


def interrupt(job_id: str) -> None:
    """Cancel what the job's transaction is running on the server: its thread,
    interrupted too, then rolls back and reports the outcome itself."""
    with _open_lock:
        conn = _open.get(job_id)
    if conn is not None:
        try:
            conn.cancel_safe(timeout=2.0)
        except (psycopg.Error, OSError) as exc:
            log.warning("could not cancel the statement of atomic job %s: %s", job_id, exc)


def run(
    app: JobQueue,
    task: Task[Any, Any],
    job: Job,
    request: Request,
    attempt: Callable[[], Attempt],
) -> Attempt:
    """The attempt of an atomic task, in its transaction (see the module)."""
    if job.eager:
        with app.db.connect(autocommit=True) as conn:
            return _in_transaction(app, task, job, request, attempt, conn, eager=True)
    try:
        conn = slot_connection(app)
    except psycopg.Error as exc:
        reason = f"no connection for its atomic transaction: {exc}"
        return executor.lost(task, job, reason, signal=False), None, exc
    with _open_lock:
        _open[job.id] = conn
    try:
        return _in_transaction(app, task, job, request, attempt, conn, eager=False)
    finally:
        with _open_lock:
            _open.pop(job.id, None)


def _in_transaction(
    app: JobQueue,
    task: Task[Any, Any],
    job: Job,
    request: Request,
    attempt: Callable[[], Attempt],
    conn: psycopg.Connection[Any],
    *,
    eager: bool,
) -> Attempt:
    store = app.store
    transaction = Transaction(app, conn)
    request.transaction = transaction
    committing = False
    result: Attempt | None = None
    try:
        with conn.transaction():
            worker_id = None if eager else store.hold_lease(conn, job.id, job.attempt)
            if worker_id is None and not eager:
                raise _LeaseGone
            try:
                result = attempt()
            except BaseException:  # an interrupt landing outside the task (threads pool)
                transaction.discard()
                raise
            outcome = result[0]
            if outcome.state != states.SUCCESS:
                transaction.discard()
                raise _Undo
            try:
                transaction.ensure_open()
                transaction.finish()  # the session's pending writes
                transaction.ensure_open()
            except Exception as exc:  # a flush refused, a transaction the task broke
                transaction.discard()
                result = executor.failed(task, job, exc, outcome.runtime), None, exc
                raise _Undo from None
            if worker_id is not None:
                advance = [job.id] if job.in_canvas else []
                params = outcome_params([outcome], worker_id)
                if store.complete_within(conn, params, advance):
                    raise _LeaseGone  # cannot be: the lease is locked
            committing = True
        outcome.recorded = not eager
        return result
    except _Undo:
        assert result is not None
        return result
    except _LeaseGone:
        reason = "its lease was gone when its atomic transaction began (rescued or released)"
        return executor.lost(task, job, reason, signal=False), None, None
    except psycopg.Error as exc:
        if conn.broken:
            drop_slot_connection(app)
        if committing and _committed(app, job):
            assert result is not None
            result[0].recorded = True
            return result
        where = "its commit" if committing else "its atomic transaction"
        reason = f"{where} failed: {type(exc).__name__}: {exc}"
        return executor.lost(task, job, reason, signal=False), None, exc
    finally:
        request.transaction = None
        transaction.close()


def _committed(app: JobQueue, job: Job) -> bool:
    """The commit of ``job``'s atomic transaction went unanswered: whether it
    committed, asked on another connection until the database answers (the
    job's lease stays this worker's meanwhile: nobody else can decide)."""
    delay = 0.1
    while True:
        try:
            with app.db.connect(autocommit=True) as conn:
                return app.store.attempt_committed(conn, job.id, job.attempt)
        except psycopg.Error as exc:
            log.warning(
                "cannot tell whether atomic job %s committed (%s); asking again in %.1fs",
                job.id,
                exc,
                delay,
            )
            time.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)
