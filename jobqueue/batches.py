"""Batches: jobs that belong together, added in one or many transactions,
with callbacks that run once every one of them settled (``app.batch()``).

The database does the counting (migration 0019, ``batch_open``,
``batch_add``, ``batch_close``, ``batches_settle``): each member is counted
in the transaction that finishes it, and the batch moves to DONE once, under
its row lock, which spawns the callbacks once. See docs/workflows.md,
"Batches"."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import psycopg

from .exceptions import BatchClosedError, DuplicateJobError
from .ids import check_id, new_id
from .serialization import dumps

if TYPE_CHECKING:
    from .app import JobQueue
    from .canvas import Signature
    from .result import AsyncResult
    from .tasks import Task


class BatchProgress(NamedTuple):
    """A batch's counts (the ``batch_progress`` view). ``pending``: members
    not settled yet; a deleted member counts as ``revoked``."""

    state: str  # OPEN, CLOSED (no job may join) or DONE (callbacks spawned)
    total: int
    pending: int
    succeeded: int
    failed: int
    revoked: int
    closed: bool
    completed: bool


def _frozen(app: JobQueue, sig: Signature | None, name: str) -> str | None:
    """A callback as the JSON ``spawn()`` reads, its ids chosen now; it is
    given the counts as its first argument (unless immutable)."""
    if sig is None:
        return None
    from .canvas import Signature
    from .freezer import Freezer, assign_ids, with_root

    if not isinstance(sig, Signature):
        raise TypeError(f"app.batch(): {name} must be a signature (task.s(...)), got {sig!r}")
    assign_ids(sig)
    sig, root = with_root(sig)
    return dumps(Freezer(app, root, publish=False).freeze(sig, None, given=True)[0])


def _refused(exc: psycopg.Error) -> Exception:
    """batch_add/batch_close's refusals as the errors a caller expects."""
    message = (exc.diag.message_primary or str(exc)).removeprefix("jobqueue: ")
    if exc.sqlstate == "JQ005":
        return BatchClosedError(message)
    if exc.sqlstate in ("JQ002", "22023"):
        return ValueError(message)
    return exc


def _no_eager(app: JobQueue) -> None:
    if app.conf.eager:
        raise RuntimeError("batches need the database: they do not run in eager mode")


def _one_task(sig: Signature) -> None:
    from .canvas import Signature

    if type(sig) is not Signature or sig.options.get("link") or sig.options.get("link_error"):
        raise TypeError(f"batch.add(): one task's signature, without callbacks, got {sig!r}")


class Batch:
    """A handle on a batch: ``app.batch(...)`` opens one, ``app.Batch(id)``
    names one opened elsewhere (another process, SQL's ``batch_open()``)."""

    def __init__(self, app: JobQueue, id: str) -> None:
        self.app = app
        self.id = check_id(id, "batch id")

    def __repr__(self) -> str:
        return f"<Batch {self.id}>"

    @classmethod
    def open(
        cls,
        app: JobQueue,
        on_complete: Signature | None = None,
        on_success: Signature | None = None,
        on_failure: Signature | None = None,
        batch_id: str | None = None,
        connection: Any = None,
    ) -> Batch:
        batch = cls(app, batch_id or new_id())
        params = {
            "id": batch.id,
            "on_complete": _frozen(app, on_complete, "on_complete"),
            "on_success": _frozen(app, on_success, "on_success"),
            "on_failure": _frozen(app, on_failure, "on_failure"),
        }
        try:
            app.store.batch_open(params, connection)
        except (psycopg.errors.UniqueViolation, DuplicateJobError) as exc:
            raise ValueError(f"a batch with id {batch.id} exists already") from exc
        return batch

    # -- members -----------------------------------------------------------------

    def add(
        self,
        task: Task[Any, Any] | Signature | str,
        *args: Any,
        connection: Any = None,
        **kwargs: Any,
    ) -> AsyncResult:
        """Enqueue one job that belongs to the batch: ``task`` a task (called
        with ``args``/``kwargs``), a task's signature (``add.s(1, 2)``, with
        its options; ``args`` come after its own) or a task's name. The job
        and its membership are written in one transaction (``connection=``:
        yours). ``BatchClosedError`` once the batch is closed."""
        from .canvas import Signature
        from .tasks import Task

        _no_eager(self.app)
        if isinstance(task, Signature):
            _one_task(task)
        with self.app.store.db.transaction(self.app.store._joined(connection)) as conn:
            if isinstance(task, (Signature, Task)):
                result = task.apply_async(args, kwargs, connection=conn)
            else:
                result = self.app.send_task(str(task), args, kwargs, connection=conn)
            self._join(conn, [result.id])
        return result

    def add_many(
        self,
        task: Task[Any, Any] | str,
        items: Iterable[Sequence[Any] | Mapping[str, Any]],
        connection: Any = None,
        **options: Any,
    ) -> list[AsyncResult]:
        """``app.enqueue_many(task, items, **options)`` whose jobs belong to
        the batch, in one transaction (``connection=``: yours)."""
        _no_eager(self.app)
        with self.app.store.db.transaction(self.app.store._joined(connection)) as conn:
            results = self.app.enqueue_many(task, items, connection=conn, **options)
            if results:
                self._join(conn, [r.id for r in results])
        return results

    async def aadd(
        self,
        task: Task[Any, Any] | Signature | str,
        *args: Any,
        connection: Any = None,
        **kwargs: Any,
    ) -> AsyncResult:
        """``add`` for async code (``jobqueue.aio``): ``connection=`` an async
        connection whose transaction the job and its membership join."""
        from .canvas import Signature
        from .tasks import Task

        _no_eager(self.app)
        if isinstance(task, Signature):
            _one_task(task)
        async with self.app.aio.db.transaction(connection) as conn:
            if isinstance(task, (Signature, Task)):
                result = await task.aapply_async(args, kwargs, connection=conn)
            else:
                result = await self.app.asend_task(str(task), args, kwargs, connection=conn)
            await self._ajoin(conn, [result.id])
        return result

    async def aadd_many(
        self,
        task: Task[Any, Any] | str,
        items: Iterable[Sequence[Any] | Mapping[str, Any]],
        connection: Any = None,
        **options: Any,
    ) -> list[AsyncResult]:
        """``add_many`` for async code (``jobqueue.aio``)."""
        _no_eager(self.app)
        async with self.app.aio.db.transaction(connection) as conn:
            results = await self.app.aenqueue_many(task, items, connection=conn, **options)
            if results:
                await self._ajoin(conn, [r.id for r in results])
        return results

    async def aclose(self, connection: Any = None) -> str:
        """``close`` for async code (``jobqueue.aio``)."""
        try:
            rows = await self.app.aio.db.execute("batch_close", {"batch": self.id}, connection)
        except psycopg.Error as exc:
            raise _refused(exc) from exc
        return str(rows[0][0])

    async def aprogress(self) -> BatchProgress:
        """``progress`` for async code (``jobqueue.aio``)."""
        rows = await self.app.aio.db.execute("batch_progress", {"batch": self.id})
        if not rows:
            raise ValueError(f"there is no batch {self.id}")
        return BatchProgress(*tuple(rows[0])[:8])

    async def _ajoin(self, conn: Any, ids: list[str]) -> None:
        try:
            await self.app.aio.db.run(conn, "batch_add", {"batch": self.id, "ids": ids})
        except psycopg.Error as exc:
            raise _refused(exc) from exc

    def _join(self, conn: Any, ids: list[str]) -> None:
        try:
            self.app.store.batch_add(conn, self.id, ids)
        except psycopg.Error as exc:
            raise _refused(exc) from exc

    # -- closing and reading ------------------------------------------------------

    def close(self, connection: Any = None) -> str:
        """No job may join any more; once every member settled (at once if
        they have been counted), the callbacks are enqueued, once. Waits for
        transactions still adding jobs to it. Returns the state: ``CLOSED``
        or ``DONE``."""
        try:
            return self.app.store.batch_close(self.id, self.app.store._joined(connection))
        except psycopg.Error as exc:
            raise _refused(exc) from exc

    def _row(self) -> tuple[Any, ...]:
        row = self.app.store.batch_progress(self.id)
        if row is None:
            raise ValueError(f"there is no batch {self.id}")
        return row

    def progress(self) -> BatchProgress:
        """The batch's counts now (``BatchProgress``)."""
        return BatchProgress(*self._row()[:8])

    def _callback(self, index: int) -> AsyncResult | None:
        from .result import AsyncResult

        job = self._row()[index]
        return None if job is None else AsyncResult(str(job), app=self.app)

    @property
    def on_complete(self) -> AsyncResult | None:
        """The result of the ``on_complete`` callback's job (it exists once
        the batch is DONE), or None without one."""
        return self._callback(8)

    @property
    def on_success(self) -> AsyncResult | None:
        """The result of the ``on_success`` callback's job: it runs only if
        every member succeeded."""
        return self._callback(9)

    @property
    def on_failure(self) -> AsyncResult | None:
        """The result of the ``on_failure`` callback's job: it runs only if
        a member failed, was revoked or deleted."""
        return self._callback(10)


__all__ = ["Batch", "BatchProgress"]
