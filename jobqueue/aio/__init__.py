"""The asyncio API's machinery: ``await task.adelay(...)``,
``await task.aapply_async(..., connection=...)``, ``await app.aenqueue_many(...)``,
``await sig.aapply_async()``, ``await result.aget()``, ``await app.aclose()``.

Each ``a…`` method of the core classes is a thin call into ``app.aio`` (an
``AsyncSide``), which shares the sync path's first and last steps and awaits
only the middle one, the statement:

    build (resolve(), checks, before-publish signal and hook, parameters)
        -> write (the same named statement; ``await``)
        -> finish (after-publish signal, the result)

so validation, errors, signals and the rows written are the sync API's. The
enqueue itself never leaves the event loop (no thread, no executor): it runs
on the caller's async connection, or on a pool of our own for that loop
(``jobqueue.aio.db``). Only the app's first contact with the database (the
schema check, which may start the embedded server or migrate) runs once in a
thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .. import bulk
from ..options import call_options, resolve
from ..serialization import dumps
from .db import AsyncDatabase
from .results import AsyncResultWaiter
from .store import AsyncStore

if TYPE_CHECKING:
    from ..app import JobQueue
    from ..canvas import Signature
    from ..options import JobSpec
    from ..result import AsyncResult
    from ..tasks import Task


class AsyncSide:
    """``app.aio``: one app's async connections, statements and waiters."""

    def __init__(self, app: JobQueue) -> None:
        self.app = app
        self.db = AsyncDatabase(app.db)
        self.store = AsyncStore(self.db)
        self._waiters: dict[asyncio.AbstractEventLoop, AsyncResultWaiter] = {}

    # -- enqueueing -----------------------------------------------------------

    async def enqueue(
        self,
        spec: JobSpec,
        task: Task[Any, Any] | None,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        connection: Any = None,
    ) -> AsyncResult:
        """``JobQueue.enqueue``, awaiting the insert."""
        app, store = self.app, self.store
        if app.conf.eager:
            return app._run_eagerly(spec, args, kwargs)
        spec, params = app._job_params(spec, task, args, kwargs)
        if "depends_on" in params:
            await store.insert_job_dependent(params, connection)
            holder = spec.id
        elif "unique_key" in params:
            holder = await store.insert_job_unique(params, connection)
        elif spec.id_given:
            await store.insert_job_recorded(params, connection)
            holder = spec.id
        else:
            await store.insert_job(params, connection)
            holder = spec.id
        return app._enqueued(spec, args, kwargs, holder)

    async def apply_async(
        self,
        task: Task[Any, Any],
        args: Sequence[Any] | None,
        kwargs: Mapping[str, Any] | None,
        link: Signature | list[Signature] | None,
        link_error: Signature | list[Signature] | None,
        connection: Any,
        options: Mapping[str, Any],
    ) -> AsyncResult:
        """``Task.apply_async``, awaiting the insert."""
        job = task._job(args, kwargs, link, link_error, options)
        if isinstance(job, tuple):
            return await self.enqueue(job[0], task, job[1], job[2], connection)
        result: AsyncResult = await self.apply_canvas(job, (), None, connection, {})
        return result

    async def send_task(
        self,
        name: str,
        args: Sequence[Any] | None,
        kwargs: Mapping[str, Any] | None,
        connection: Any,
        options: Mapping[str, Any],
    ) -> AsyncResult:
        """``JobQueue.send_task``, awaiting the insert."""
        args, kwargs = tuple(args or ()), dict(kwargs or {})
        task = self.app.tasks.get(name)
        spec = resolve(self.app, name, task, args, kwargs, call_options(options, "send_task()"))
        return await self.enqueue(spec, task, args, kwargs, connection)

    async def enqueue_many(
        self,
        task: Task[Any, Any] | str,
        items: Iterable[Sequence[Any] | Mapping[str, Any]],
        queue: str | None,
        priority: int | None,
        countdown: float | None,
        eta: datetime | None,
        expires: float | datetime | None,
        connection: Any,
    ) -> list[AsyncResult]:
        """``JobQueue.enqueue_many``, awaiting the insert."""
        app = self.app
        batch = bulk.build(app, task, items, queue, priority, countdown, eta, expires)
        if batch is None:
            return []
        if batch.eager:
            from ..eager.run import run_many

            return list(run_many(app, batch.params, batch.sent))
        holders = None
        if batch.holder_of is None:
            await self.store.insert_jobs(batch.params, connection)
        else:
            holders = await self.store.insert_jobs_unique(batch.params, connection)
        return bulk.results(app, batch, holders)

    async def apply_canvas(
        self,
        sig: Signature,
        args: Sequence[Any],
        kwargs: Mapping[str, Any] | None,
        connection: Any,
        options: Mapping[str, Any],
    ) -> Any:
        """``Signature.apply_async``, awaiting the insert."""
        if self.app.conf.eager:  # run at the call, as the sync path does
            return sig.apply_async(args, kwargs, **options)
        freezer, canvas, result = sig._frozen(args, kwargs, options)
        await self.store.insert_canvas(canvas, dumps(freezer.groups), freezer.root, connection)
        freezer.published()
        return result

    # -- results and lifecycle --------------------------------------------------

    def waiter(self) -> AsyncResultWaiter:
        """The running loop's result waiter."""
        loop = asyncio.get_running_loop()
        waiter = self._waiters.get(loop)
        if waiter is None:
            for closed in [other for other in list(self._waiters) if other.is_closed()]:
                del self._waiters[closed]
            waiter = self._waiters[loop] = AsyncResultWaiter(self.app, self.store)
        return waiter

    async def close(self) -> None:
        """Stop the running loop's result listener and close its pool."""
        waiter = self._waiters.pop(asyncio.get_running_loop(), None)
        if waiter is not None:
            await waiter.close()
        await self.db.close()


__all__ = ["AsyncSide"]
