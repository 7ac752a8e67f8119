"""Results: ``AsyncResult`` reads a job's row; ``ResultWaiter`` wakes waiters
(``ResultSet`` and ``GroupResult``: ``result_set``).

Waiting uses one LISTEN connection per app (not one per ``get()``): workers
send the ids of finished jobs on ``<schema>_done`` when their completion
commits; a waiter re-reads its row when woken, and also every
``result_recheck_interval`` seconds in case a notification was lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from psycopg import sql

from . import states
from .current import current_app
from .exceptions import ChordError, TaskError, TaskRevokedError, TimeoutError
from .ids import check_id
from .serialization import rebuild_error, replaced_by, revive
from .sql import channels

if TYPE_CHECKING:
    from .app import JobQueue

log = logging.getLogger(__name__)


_JOB_COLUMNS = (
    "id",
    "task",
    "queue",
    "state",
    "result",
    "error",
    "attempts",
    "created_at",
    "started_at",
    "finished_at",
    "worker_id",
    "root_id",
    "parent_id",
    "group_id",
    "group_index",
    "progress_state",
    "progress",
)  # job_get's


class AsyncResult:
    """A handle on one job's state and outcome, Celery style."""

    def __init__(self, id: str, app: JobQueue | None = None) -> None:
        if app is None:
            app = current_app()
        self.id = check_id(id, "id")
        self.app = app
        self._row: dict[str, Any] | None = None
        # Known here when a canvas made this result (None: read the job's row).
        self._parent: AsyncResult | ResultSet | None = None

    @classmethod
    def trusted(cls, id: str, app: JobQueue) -> AsyncResult:
        """For ids jobqueue made itself: skips re-validating (bulk enqueue)."""
        result = cls.__new__(cls)
        result.id, result.app, result._row, result._parent = id, app, None, None
        return result

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    # -- reading -------------------------------------------------------------

    def _fetch(self) -> dict[str, Any] | None:
        if self._row is not None and self._row["state"] in states.READY_STATES:
            return self._row  # finished jobs never change: no need to ask again
        row = self.app.store.get_job(self.id)
        return None if row is None else self._remember(row)

    def _remember(self, row: tuple[Any, ...]) -> dict[str, Any]:
        """Keep a ``job_get`` row (by column name) as this result's last look."""
        self._row = dict(zip(_JOB_COLUMNS, row, strict=True))
        return self._row

    @property
    def state(self) -> str:
        """PENDING, STARTED, RETRY, SUCCESS, FAILURE or REVOKED (PENDING if unknown),
        or the custom state a running task set with ``update_state``."""
        row = self._fetch()
        if row is None:
            return states.PENDING
        if row["state"] == states.STARTED and row["progress_state"]:
            return str(row["progress_state"])
        return str(row["state"])

    status = state

    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    @property
    def result(self) -> Any:
        """The return value; the exception for FAILURE, REVOKED and RETRY (the
        error that caused the retry); else None."""
        row = self._fetch()
        if row is None:
            return None
        if row["state"] in states.EXCEPTION_STATES and row["error"]:
            return self._exception(row)
        return revive(row["result"], self.app)

    @property
    def info(self) -> Any:
        """Like ``result``, but while running: the ``meta`` of ``update_state``."""
        row = self._fetch()
        if row is not None and row["state"] == states.STARTED and row["progress_state"]:
            return row["progress"]
        return self.result

    @property
    def parent(self) -> AsyncResult | ResultSet | None:
        """The result of the job before this one in its workflow: the previous
        step of a chain, a chord header's ``GroupResult`` for its body, the job
        an error callback or a link ran after. In the process that enqueued the
        workflow it is known at once, before any of it ran (``chain(...)()``
        returns the last step's result: ``.parent`` walks back to the first);
        elsewhere it is read from the job's ``parent_id`` once the job exists
        (the header job whose completion started a chord body). None for a job
        enqueued on its own."""
        if self._parent is not None:
            return self._parent
        row = self._fetch()
        if row is None or row["parent_id"] is None:
            return None
        self._parent = AsyncResult(str(row["parent_id"]), app=self.app)
        return self._parent

    @parent.setter
    def parent(self, value: AsyncResult | ResultSet | None) -> None:
        self._parent = value

    @property
    def children(self) -> list[AsyncResult]:
        """Jobs this one spawned when it finished (link callbacks, next chain steps)."""
        return [AsyncResult(i, app=self.app) for i in self.app.store.job_children(self.id)]

    @property
    def traceback(self) -> str | None:
        row = self._fetch()
        if row is None or not row["error"]:
            return None
        tb = row["error"].get("traceback")
        return None if tb is None else str(tb)

    @property
    def task_name(self) -> str | None:
        row = self._fetch()
        return None if row is None else str(row["task"])

    name = task_name

    @property
    def date_done(self) -> datetime | None:
        row = self._fetch()
        return None if row is None else row["finished_at"]

    @property
    def retries(self) -> int:
        row = self._fetch()
        return 0 if row is None else max(int(row["attempts"]) - 1, 0)

    def _exception(self, row: dict[str, Any]) -> BaseException:
        return _exception(self.id, row, self.app)

    # -- waiting -------------------------------------------------------------

    def get(
        self, timeout: float | None = None, propagate: bool = True, interval: float | None = None
    ) -> Any:
        """Wait until the job finishes; return its result or re-raise its error.

        Raises ``jobqueue.TimeoutError`` (a builtin ``TimeoutError``) if it is
        not finished within ``timeout`` seconds.
        """
        started = time.monotonic()
        row = self.app.results.wait(self, timeout, interval)
        if row["state"] == states.SUCCESS:
            replacement = replaced_by(row["result"], self.app)
            if replacement is not None:  # self.replace(): its replacement's outcome
                left = None if timeout is None else max(timeout - (time.monotonic() - started), 0)
                return replacement.get(timeout=left, propagate=propagate, interval=interval)
            return revive(row["result"], self.app)
        if propagate:
            raise self._exception(row)
        return self._exception(row)

    wait = get

    async def aget(
        self, timeout: float | None = None, propagate: bool = True, interval: float | None = None
    ) -> Any:
        """``get`` for async code: waits on the event loop (``jobqueue.aio``)."""
        started = time.monotonic()
        row = await self.app.aio.waiter().wait(self, timeout, interval)
        if row["state"] == states.SUCCESS:
            replacement = replaced_by(row["result"], self.app)
            if replacement is not None:  # self.replace(): its replacement's outcome
                left = None if timeout is None else max(timeout - (time.monotonic() - started), 0)
                return await replacement.aget(timeout=left, propagate=propagate, interval=interval)
        return _value(self.id, row, propagate)

    def revoke(self, terminate: bool = False, signal: str | None = None) -> None:
        """Cancel the job: a waiting one never runs (REVOKED); a running one is
        stopped if ``terminate`` (its worker is told over NOTIFY), else left to
        finish but never retried. Recorded in SQL: no worker needs to be online."""
        self.app.revoke([self.id], terminate=terminate)
        self._row = None

    def update(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        countdown: float | None = None,
        eta: datetime | None = None,
        priority: int | None = None,
        connection: Any = None,
    ) -> bool:
        """Change the job while it waits: its arguments (``args``, ``kwargs``:
        each replaced whole), its due time (``countdown`` seconds from now, or
        ``eta``), its priority; None leaves one as it is. False if the job no
        longer waits (it runs or ran, as it was). In SQL: ``update_job()``."""
        from .options import check_priority, timing
        from .serialization import dumps

        changes: dict[str, Any] = {
            "args": None if args is None else dumps(list(args)),
            "kwargs": None if kwargs is None else dumps(dict(kwargs)),
            "countdown": None,
            "eta": None,
            "priority": None if priority is None else check_priority(priority),
        }
        if countdown is not None or eta is not None:
            changes["countdown"], changes["eta"], _, _ = timing(countdown, eta, None)
        changed = self.app.store.update_job(self.id, changes, connection)
        self._row = None
        return changed

    def retry(self, reset_retries: bool = False) -> bool:
        """Run a FAILURE or REVOKED job again, as a new attempt (its attempt
        history is kept; ``retries`` counts on unless ``reset_retries``).
        False if it was not FAILURE or REVOKED. See ``app.control.retry``."""
        done = self.app.control.retry(self.id, reset_retries=reset_retries)
        self._row = None
        return done > 0


def __getattr__(name: str) -> Any:
    """``jobqueue.result.EagerResult`` (Celery's ``celery.result.EagerResult``),
    from jobqueue.eager, which imports this module."""
    if name in ("EagerResult", "EagerGroupResult"):
        from . import eager

        return getattr(eager, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: How a ChordError finds the header job that failed: (state, error, task) of a
#: job by id, or None (the store's by default; an eager run's from memory).
JobLookup = Callable[[str], "tuple[str, dict[str, Any] | None, str | None] | None"]


def _stored_job(app: JobQueue) -> JobLookup:
    def lookup(job_id: str) -> tuple[str, dict[str, Any] | None, str | None] | None:
        row = app.store.get_job(job_id)
        return None if row is None else (row[3], row[5], row[1])

    return lookup


def _exception(
    job_id: str,
    row: dict[str, Any],
    app: JobQueue | None = None,
    lookup: JobLookup | None = None,
) -> BaseException:
    if row["state"] == states.REVOKED:
        message = (row["error"] or {}).get("message") or "revoked"
        return TaskRevokedError(f"task {row.get('task') or ''}[{job_id}] {message}")
    error = row["error"] or {"type": "TaskError", "message": row["state"]}
    exc = rebuild_error(error)
    if app is not None and isinstance(exc, ChordError) and error.get("failed_job"):
        return _chord_error(lookup or _stored_job(app), exc, str(error["failed_job"]))
    return exc


# Chords nest (a header member may be a chord): how far back a ChordError is
# followed to the header job that failed first.
_CHORD_DEPTH = 16


def _chord_error(
    lookup: JobLookup, exc: ChordError, failed_job: str, depth: int = 0
) -> BaseException:
    """A chord's ``ChordError`` that is also an instance of the failed header
    job's own exception type, as Celery re-raises it, so ``except ValueError``
    around ``result.get()`` still catches a chord whose header raised
    ValueError. The header's exception is its ``__cause__``. Where the type
    cannot be combined with ChordError (not importable here, an incompatible
    layout, a constructor that refuses the message), the plain ChordError
    with that ``__cause__``."""
    exc.failed_job = failed_job  # type: ignore[attr-defined]
    row = lookup(failed_job) if depth < _CHORD_DEPTH else None
    if row is None:  # deleted by retention: the message still names it
        return exc
    state, error, task = row
    if state == states.REVOKED:
        original = _exception(failed_job, {"state": state, "error": error, "task": task})
    else:
        original = rebuild_error(error or {"type": "TaskError", "message": state})
        inner = (error or {}).get("failed_job")
        if isinstance(original, ChordError) and inner:
            original = _chord_error(lookup, original, str(inner), depth + 1)
    first = original  # through nested chords, to the header job that raised
    while isinstance(first, ChordError) and isinstance(first.__cause__, BaseException):
        first = first.__cause__
    combined: BaseException = exc
    if not isinstance(first, (ChordError, TaskError)):  # TaskError: the type is not here
        try:
            combined = _chord_type(type(first))(*exc.args)
            combined.failed_job = failed_job  # type: ignore[attr-defined]
        except Exception:  # a layout conflict, a constructor wanting other arguments
            combined = exc
    combined.__cause__ = original
    return combined


_chord_types: dict[type[BaseException], type[ChordError]] = {}


def _chord_type(cls: type[BaseException]) -> type[ChordError]:
    """ChordError and ``cls`` in one class, made once per type (so two such
    errors have the same type); named ChordError, so tracebacks read as before."""
    made = _chord_types.get(cls)
    if made is None:
        made = type("ChordError", (ChordError, cls), {"__module__": ChordError.__module__})
        _chord_types[cls] = made
    return made


def _value(job_id: str, row: dict[str, Any], propagate: bool, app: JobQueue | None = None) -> Any:
    if row["state"] == states.SUCCESS:
        replacement = replaced_by(row["result"], app)
        if replacement is not None:  # self.replace(): its replacement's outcome
            return replacement.get(propagate=propagate)
        return revive(row["result"], app)
    exc = _exception(job_id, row, app)
    if propagate:
        raise exc
    return exc


def collect_ready(
    rows: Iterable[tuple[Any, ...]], done: dict[str, dict[str, Any]], ids: list[str]
) -> bool:
    """Add the finished jobs among ``rows`` (id, state, result, error) to
    ``done``; whether every one of ``ids`` is now done (``wait_many``, sync
    and async)."""
    for job_id, state, result, error in rows:
        if state in states.READY_STATES:
            done[str(job_id)] = {"state": state, "result": result, "error": error}
    return len(done) == len(set(ids))


def until_deadline(pause: float, deadline: float | None, message: Callable[[], str]) -> float:
    """``pause``, cut to what is left before ``deadline``; once nothing is,
    TimeoutError with ``message()`` (``wait`` and ``wait_many``, sync and async)."""
    if deadline is None:
        return pause
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError(message())
    return min(pause, remaining)


def not_ready(job_id: str, timeout: float | None, row: dict[str, Any] | None) -> str:
    state = states.PENDING if row is None else row["state"]
    return f"task {job_id} not ready after {timeout}s (state {state})"


def none_ready(timeout: float | None, done: dict[str, Any], ids: list[str]) -> str:
    wanted = len(set(ids))
    return f"{wanted - len(done)} of {wanted} jobs not ready after {timeout}s"


class ResultWaiter:
    """One LISTEN connection per app, fanning finished-job notices out to waiters."""

    def __init__(self, app: JobQueue) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._waiters: dict[str, set[threading.Event]] = defaultdict(set)
        self._thread: threading.Thread | None = None
        self._listening = threading.Event()
        self._stopped = threading.Event()
        # No LISTEN (behind a transaction pooler without listen_dsn): waiters
        # re-check soon after they start, then less and less often.
        self.polling = False

    def wait(
        self, result: AsyncResult, timeout: float | None, interval: float | None
    ) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        recheck = interval or self.app.conf.result_recheck_interval
        looks = 0
        event = threading.Event()
        self._start()
        with self._lock:
            self._waiters[result.id].add(event)
        try:
            while True:
                row = result._fetch()
                if row is not None and row["state"] in states.READY_STATES:
                    return row
                pause, looks = self._pause(recheck, looks), looks + 1
                pause = until_deadline(pause, deadline, partial(not_ready, result.id, timeout, row))
                event.wait(pause)
                event.clear()
        finally:
            with self._lock:
                waiting = self._waiters.get(result.id)
                if waiting is not None:
                    waiting.discard(event)
                    if not waiting:
                        del self._waiters[result.id]

    def wait_many(
        self, ids: list[str], timeout: float | None, interval: float | None
    ) -> dict[str, dict[str, Any]]:
        """Wait until every job in ``ids`` is finished; their rows by id. One
        query per wake-up for all the jobs still unfinished."""
        deadline = None if timeout is None else time.monotonic() + timeout
        recheck = interval or self.app.conf.result_recheck_interval
        looks = 0
        event = threading.Event()
        self._start()
        with self._lock:
            for job_id in ids:
                self._waiters[job_id].add(event)
        done: dict[str, dict[str, Any]] = {}
        try:
            while True:
                pending = [i for i in ids if i not in done]
                if collect_ready(self.app.store.get_jobs(pending), done, ids):
                    return done
                pause, looks = self._pause(recheck, looks), looks + 1
                pause = until_deadline(pause, deadline, partial(none_ready, timeout, done, ids))
                event.wait(pause)
                event.clear()
        finally:
            with self._lock:
                for job_id in ids:
                    waiting = self._waiters.get(job_id)
                    if waiting is not None:
                        waiting.discard(event)
                        if not waiting:
                            del self._waiters[job_id]

    def _pause(self, recheck: float, looks: int) -> float:
        """Seconds to the next look: ``recheck`` while a NOTIFY will wake us;
        polling, 5 ms doubling up to it (a short job is seen within a few ms,
        a long one costs a handful of queries)."""
        return min(recheck, 0.005 * 2 ** min(looks, 20)) if self.polling else recheck

    def _start(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._listen, name="jobqueue-results", daemon=True
                    )
                    self._thread.start()
        # Waiters re-check on a timer anyway; don't block forever on a bad server.
        self._listening.wait(5.0)

    def _listen(self) -> None:
        channel = channels(self.app.conf.schema)["done"]
        backoff = 0.1
        while not self._stopped.is_set():
            try:
                conn = self.app.db.listen_connect(application_name="jobqueue-results")
                if conn is None:  # poll-only (a transaction pooler, no listen_dsn)
                    self.polling = True
                    self._listening.set()
                    return
                with conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    self._listening.set()
                    backoff = 0.1
                    self._wake_all()  # anything finished while we were reconnecting
                    while not self._stopped.is_set():
                        for notice in conn.notifies(timeout=1.0):
                            self._wake(notice.payload)
            except Exception as exc:  # the listener must outlive anything: waiters re-check anyway
                self._listening.set()
                if self._stopped.is_set():
                    return
                log.warning("result listener lost its connection (%s); reconnecting", exc)
                self._stopped.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _wake(self, payload: str) -> None:
        with self._lock:
            for job_id in payload.split(","):
                for event in self._waiters.get(job_id, ()):
                    event.set()

    def _wake_all(self) -> None:
        with self._lock:
            for events in self._waiters.values():
                for event in events:
                    event.set()

    def stop(self) -> None:
        self._stopped.set()


# Sets of results live in their own module; importable from here as before.
from .result_set import GroupResult as GroupResult  # noqa: E402
from .result_set import ResultSet as ResultSet  # noqa: E402
