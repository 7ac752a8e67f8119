"""The application object: settings, the task registry and enqueueing."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, Literal, overload

from . import bulk, discovery, signals
from .celeryconf import TASK_OPTIONS as CELERY_TASK_OPTIONS
from .celeryconf import task_options as celery_task_options
from .config import Settings, default_data_dir
from .current import current_app, set_current
from .db import Database
from .dsn import normalize
from .hooks import Hooks
from .ids import check_id
from .options import (
    JobSpec,
    call_options,
    dependencies,
    resolve,
    with_headers,
)
from .result import AsyncResult, ResultWaiter
from .result_set import GroupResult
from .shared import register_shared
from .store import Store
from .tasks import TASK_OPTIONS, AppTaskBase, P, R, Task

if TYPE_CHECKING:
    from .aio import AsyncSide
    from .batches import Batch
    from .canvas import Signature
    from .control import Control
    from .events import Events

log = logging.getLogger(__name__)


def _creator_module(app: JobQueue) -> tuple[str | None, str | None]:
    """The name and file of the module whose code called ``JobQueue(...)``
    (past a subclass's ``__init__``); None for jobqueue's own apps (the CLI's,
    the demo's), whose embedded server is the current directory's."""
    frame = sys._getframe(2)
    while frame.f_back is not None and frame.f_locals.get("self") is app:
        frame = frame.f_back
    spec = frame.f_globals.get("__spec__")
    name = getattr(spec, "name", None) or frame.f_globals.get("__name__")
    if not isinstance(name, str) or name == "jobqueue" or name.startswith("jobqueue."):
        return None, None
    file = frame.f_globals.get("__file__")
    return name, file if isinstance(file, str) else None


class JobQueue(AppTaskBase):
    """A jobqueue application.

    ``JobQueue(dsn=None, *, schema="jobqueue")``: the DSN comes from the
    argument, else ``$JOBQUEUE_DSN``, else an embedded PostgreSQL started under
    ``data_dir`` (default ``$JOBQUEUE_DATA_DIR``, else ``.jobqueue`` in the
    directory the creating module is imported from: see ``default_data_dir``).
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        schema: str = "jobqueue",
        data_dir: str | Path | None = None,
        auto_migrate: bool | None = None,
        **settings: Any,
    ) -> None:
        if dsn is not None:
            normalize(dsn)  # a malformed DSN fails here, where it was written
        self.conf = Settings(dsn=dsn, schema=schema, auto_migrate=auto_migrate)
        if data_dir is not None:
            self.conf.data_dir = Path(data_dir)
        else:
            self.conf.data_dir = default_data_dir(*_creator_module(self))
        # Resolved as app.conf.update() resolves them (Celery names included);
        # an unknown name is an UnknownSettingError (also a TypeError).
        self.conf._apply([(k, v, k) for k, v in settings.items()], "JobQueue()", check=False)
        self.conf.validate()
        self.tasks: dict[str, Task[Any, Any]] = {}
        #: How a worker's child processes find this app (set by ``-A``).
        self.main_spec: str | None = None
        self.db = Database(self.conf)
        self.store = Store(self.db)
        self.hooks = Hooks()
        self.results = ResultWaiter(self)
        self._register_builtins()
        register_shared(self)
        set_current(self)

    def __repr__(self) -> str:
        return f"<JobQueue schema={self.conf.schema!r} tasks={len(self.tasks)}>"

    def config_from_object(
        self, obj: Any, namespace: str | None = None, *, silent: bool = False
    ) -> None:
        """Celery's ``app.config_from_object``: load settings from a module path
        (``"proj.settings"``), a module, a class, an object or a mapping; with
        ``namespace="JOBQUEUE"``, only its ``JOBQUEUE_*`` names (for Django's
        settings). See ``Settings.config_from_object``."""
        self.conf.config_from_object(obj, namespace, silent=silent)

    def GroupResult(self, id: str) -> GroupResult | None:
        return GroupResult.restore(id, app=self)

    def batch(
        self,
        on_complete: Signature | None = None,
        on_success: Signature | None = None,
        on_failure: Signature | None = None,
        *,
        batch_id: str | None = None,
        connection: Any = None,
    ) -> Batch:
        """Open a batch: jobs added to it (``batch.add(...)``, in any
        transactions, by any process holding its id) are counted as they
        settle; once it is closed (``batch.close()``) and every one settled,
        ``on_complete`` is enqueued once with the counts (``{"batch", "total",
        "succeeded", "failed", "revoked"}``) as its first argument, and
        ``on_success`` (every member succeeded) or ``on_failure`` (not)."""
        from .batches import Batch

        return Batch.open(self, on_complete, on_success, on_failure, batch_id, connection)

    def Batch(self, id: str) -> Batch:
        """A batch opened elsewhere (another process, SQL's batch_open()), by id."""
        from .batches import Batch

        return Batch(self, id)

    # -- tasks -----------------------------------------------------------------

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        *,
        bind: Literal[True],
        name: str | None = ...,
        queue: str | None = ...,
        priority: int = ...,
        ignore_result: bool = ...,
        **options: Any,
    ) -> Callable[[Callable[Concatenate[Any, P], R]], Task[P, R]]: ...

    @overload
    def task(
        self,
        *,
        name: str | None = ...,
        queue: str | None = ...,
        priority: int = ...,
        bind: Literal[False] = ...,
        ignore_result: bool = ...,
        **options: Any,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(self, fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:  # type: ignore[misc]
        """Register a function as a task: ``@app.task`` or ``@app.task(name=..., ...)``.
        ``base=``: the Task subclass to make it of (its class attributes are
        defaults, its hooks run in the worker), as in Celery."""
        base = options.pop("base", None) or Task
        if not (isinstance(base, type) and issubclass(base, Task)):
            raise TypeError(f"@app.task(base=...) takes a subclass of jobqueue.Task, got {base!r}")
        known = TASK_OPTIONS.union(CELERY_TASK_OPTIONS)
        unknown = set(options) - known
        if unknown:
            raise TypeError(
                f"@app.task got unknown option(s) {sorted(unknown)}; "
                f"known options: {sorted(known | {'base'})}"
            )
        options = celery_task_options(options, "@app.task")

        def register(func: Callable[..., Any]) -> Task[Any, Any]:
            settings = dict(options)
            name = settings.pop("name", None) or f"{func.__module__}.{func.__qualname__}"
            task: Task[Any, Any] = base(self, func, name=name, **settings)
            self.tasks[task.name] = task
            return task

        return register(fn) if fn is not None else register

    def autodiscover_tasks(
        self,
        packages: Iterable[str] | Callable[[], Iterable[str]] | None = None,
        related_name: str = "tasks",
    ) -> None:
        """Import the ``tasks`` module (``related_name``) of each package that
        has one, so its tasks are registered: given ``packages`` (or a function
        returning them), at once; without, Django's installed apps, as soon as
        Django's app registry is ready (``jobqueue.contrib.django``; at once if
        it already is). See ``jobqueue.discovery``."""
        discovery.autodiscover(self, packages, related_name)

    def register_task(
        self, task: Task[Any, Any] | type[Task[Any, Any]], **options: Any
    ) -> Task[Any, Any]:
        """Register a class-based task (an instance, or the class: it is made
        with this app), under its ``name``; returns the registered task.
        ``options``: as ``@app.task``'s, over the class's attributes."""
        if isinstance(task, type):
            if not issubclass(task, Task):
                raise TypeError(f"register_task() takes a Task subclass, got {task!r}")
            task = task(self, **options)
        elif not isinstance(task, Task):
            raise TypeError(f"register_task() takes a Task, got {task!r}")
        elif options:
            raise TypeError("register_task(): options go with a class, not an instance")
        if task.app is not self:
            raise ValueError(f"task {task.name!r} belongs to another app ({task.app!r})")
        self.tasks[task.name] = task
        return task

    def _register_builtins(self) -> None:
        """``task.map`` / ``task.starmap`` run as one job of these; HTTP tasks
        (``jobqueue.http.request``) on every app, so every worker runs them."""
        from . import http

        http.register(self)

        @self.task(name="jobqueue.map", max_retries=0)
        def map_(task: str, items: list[Any]) -> list[Any]:
            fn = self.tasks[task]
            return [fn(item) for item in items]

        @self.task(name="jobqueue.identity", max_retries=0)
        def identity(value: Any) -> Any:
            return value

        @self.task(name="jobqueue.starmap", max_retries=0)
        def starmap(task: str, items: list[list[Any]]) -> list[Any]:
            fn = self.tasks[task]
            return [fn(*item) for item in items]

    # -- enqueueing -----------------------------------------------------------

    def send_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        connection: Any = None,
        **options: Any,
    ) -> AsyncResult:
        """Enqueue task ``name`` (it need not be registered in this process),
        with any of the call options (``jobqueue.options.CALL_OPTIONS``: queue,
        priority, countdown, eta, expires, task_id, soft_time_limit,
        time_limit, headers; see there for how each is resolved). A task with
        ``unique`` returns the job already holding its key (and writes
        nothing) when there is one."""
        args, kwargs = tuple(args or ()), dict(kwargs or {})
        task = self.tasks.get(name)
        depends_on, on_failure = dependencies(options, "send_task()")
        spec = resolve(self, name, task, args, kwargs, call_options(options, "send_task()"))
        if depends_on is not None:
            spec = spec._replace(depends_on=depends_on, on_dependency_failure=on_failure)
        return self.enqueue(spec, task, args, kwargs, connection)

    async def asend_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        connection: Any = None,
        **options: Any,
    ) -> AsyncResult:
        """``send_task`` for async code (``jobqueue.aio``)."""
        return await self.aio.send_task(name, args, kwargs, connection, options)

    def enqueue(
        self,
        spec: JobSpec,
        task: Task[Any, Any] | None,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        connection: Any = None,
    ) -> AsyncResult:
        """Write one resolved job (``send_task`` and ``apply_async`` come here;
        ``jobqueue.aio`` runs the same three steps with ``await``)."""
        if self.conf.eager:
            return self._run_eagerly(spec, args, kwargs)
        spec, params = self._job_params(spec, task, args, kwargs)
        if "depends_on" in params:
            self.store.insert_job_dependent(params, connection)
            holder = spec.id
        elif "unique_key" in params:
            holder = self.store.insert_job_unique(params, connection)
        elif spec.id_given:
            self.store.insert_job_recorded(params, connection)
            holder = spec.id
        else:
            self.store.insert_job(params, connection)
            holder = spec.id
        return self._enqueued(spec, args, kwargs, holder)

    def _job_params(
        self,
        spec: JobSpec,
        task: Task[Any, Any] | None,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
    ) -> tuple[JobSpec, dict[str, Any]]:
        """``enqueue``'s first step: the job as published, and the insert's
        parameters (with ``unique_key`` for a unique task's job)."""
        spec = self._publishing(spec, args, kwargs)
        return spec, self._insert_params(spec, task, args, kwargs)

    def _insert_params(
        self,
        spec: JobSpec,
        task: Task[Any, Any] | None,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
    ) -> dict[str, Any]:
        """The insert's parameters of a published job (``enqueue``, a beat's
        tick): with ``unique_key`` and its settings for a unique task's job."""
        params = spec.params()
        key = task.flow.unique_for(spec.task, args, kwargs) if task is not None else None
        if key is not None:
            assert task is not None
            if spec.depends_on is not None:
                raise ValueError(
                    f"task {spec.task!r} is unique: depends_on= cannot be combined with a "
                    "unique task's key (yet)"
                )
            params.update(
                unique_key=key,
                unique_states=list(task.flow.unique_states),
                unique_window=task.flow.unique_window,
                on_duplicate=task.flow.on_duplicate,
                take_over=False,
            )
        if spec.depends_on is not None:
            params.update(
                depends_on=list(spec.depends_on), on_dependency_failure=spec.on_dependency_failure
            )
        return params

    def _run_eagerly(
        self, spec: JobSpec, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> AsyncResult:
        """Eager mode's ``enqueue``: the job published and run here and now
        (``jobqueue.eager``), with no transaction and nothing written."""
        from .eager.run import run_spec

        return run_spec(self, self._publishing(spec, args, kwargs), args, kwargs)

    def _enqueued(
        self, spec: JobSpec, args: Sequence[Any], kwargs: Mapping[str, Any], holder: str
    ) -> AsyncResult:
        """``enqueue``'s last step: ``holder`` is the job now holding the call
        (another when a unique task's key was taken: nothing was written)."""
        if holder != spec.id:
            return AsyncResult(holder, app=self)
        self._published(spec, args, kwargs)
        if spec.id_given:
            return AsyncResult(spec.id, app=self)
        return AsyncResult.trusted(spec.id, self)

    def _publishing(self, spec: JobSpec, args: Sequence[Any], kwargs: Mapping[str, Any]) -> JobSpec:
        """What every job passes just before it is written (``enqueue``, each
        canvas step, each beat tick): the ``before_task_publish`` signal, whose
        receivers may add headers (stored in its options with those given),
        then the ``before_publish`` hook. Returns the job as it is to be written."""
        if spec.headers is not None or signals.before_task_publish.receivers:
            headers = signals.send_before_publish(
                spec.task,
                spec.id,
                args,
                kwargs,
                spec.queue,
                spec.priority,
                spec.headers,
                spec.root_id,
                spec.parent_id,
            )
            options = with_headers(spec.options, headers) if headers else spec.options
            spec = spec._replace(options=options, headers=headers)
        if self.hooks.wanted("before_publish"):
            self.hooks.emit("before_publish", spec=spec)
        return spec

    def _published(self, spec: JobSpec, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """The job ``spec`` was written: ``after_task_publish``."""
        if signals.after_task_publish.receivers:
            signals.send_after_publish(
                spec.task,
                spec.id,
                args,
                kwargs,
                spec.queue,
                spec.headers,
                spec.root_id,
                spec.parent_id,
            )

    def add_periodic_task(
        self, schedule: Any, sig: Any, name: str | None = None, **entry: Any
    ) -> None:
        """Celery's ``add_periodic_task``: run ``sig`` (a signature or a task) on
        ``schedule`` (crontab, cron string, timedelta or seconds)."""
        from .canvas import Signature

        if isinstance(sig, Signature):
            entry.setdefault("args", list(sig.args))
            entry.setdefault("kwargs", dict(sig.kwargs))
            task_name = sig.task_name
        else:
            task_name = getattr(sig, "name", sig)
        key = name or task_name  # one schedule per task unless named
        self.conf.beat_schedule[key] = {"task": task_name, "schedule": schedule, **entry}

    def periodic(
        self, schedule: Any, name: str | None = None, **entry: Any
    ) -> Callable[[Task[P, R]], Task[P, R]]:
        """Decorate a task to run it on ``schedule``: ``@app.periodic(crontab(minute=0))``."""

        def register(task: Task[P, R]) -> Task[P, R]:
            if not isinstance(task, Task):
                # Decorators apply bottom-up: under @app.task, this one gets the
                # bare function, before it is a task with a name.
                what = getattr(task, "__name__", repr(task))
                raise TypeError(
                    f"@app.periodic decorates a task, and got {what!r}: put it above "
                    "@app.task (decorators apply from the bottom up)"
                )
            self.add_periodic_task(schedule, task, name=name or task.name, **entry)
            return task

        return register

    def enqueue_many(
        self,
        task: Task[Any, Any] | str,
        items: Iterable[Sequence[Any] | Mapping[str, Any]],
        *,
        queue: str | None = None,
        priority: int | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        expires: float | datetime | None = None,
        connection: Any = None,
    ) -> list[AsyncResult]:
        """Enqueue one job per item in a single statement. An item is the tuple
        of positional arguments, or a mapping of keyword arguments. For a
        ``unique`` task, items whose key is taken (or repeated) get the holder's
        result and write nothing."""
        batch = bulk.build(self, task, items, queue, priority, countdown, eta, expires)
        if batch is None:
            return []
        if batch.eager:
            from .eager.run import run_many

            return list(run_many(self, batch.params, batch.sent))
        holders = None
        if batch.holder_of is None:
            self.store.insert_jobs(batch.params, connection)
        else:
            holders = self.store.insert_jobs_unique(batch.params, connection)
        return bulk.results(self, batch, holders)

    async def aenqueue_many(
        self,
        task: Task[Any, Any] | str,
        items: Iterable[Sequence[Any] | Mapping[str, Any]],
        *,
        queue: str | None = None,
        priority: int | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        expires: float | datetime | None = None,
        connection: Any = None,
    ) -> list[AsyncResult]:
        """``enqueue_many`` for async code (``jobqueue.aio``): ``connection=`` an
        async connection whose transaction the jobs join."""
        return await self.aio.enqueue_many(
            task, items, queue, priority, countdown, eta, expires, connection
        )

    def revoke(
        self, ids: str | Iterable[str], terminate: bool = False, connection: Any = None
    ) -> int:
        """Revoke jobs by id (see ``AsyncResult.revoke``); returns how many were
        still unfinished."""
        if isinstance(ids, str):
            id_list = [check_id(ids, "id")]
        else:
            id_list = [check_id(i, "id") for i in ids]
        return self.store.revoke(id_list, bool(terminate), connection)

    def AsyncResult(self, id: str) -> AsyncResult:
        return AsyncResult(id, app=self)

    @cached_property
    def control(self) -> Control:
        """Manage jobs and queues: ``app.control.retry(...)``, ``purge()``,
        ``pause_queue(name)``... (see ``jobqueue.control``)."""
        from .control import Control

        return Control(self)

    @cached_property
    def aio(self) -> AsyncSide:
        """The async API's connections and waiters (``jobqueue.aio``), used by
        ``adelay``, ``aapply_async``, ``aenqueue_many``, ``aget``..."""
        from .aio import AsyncSide

        return AsyncSide(self)

    @cached_property
    def events(self) -> Events:
        """The live stream of task and worker events:
        ``app.events.stream(...)``, ``app.events.Receiver(handlers)`` (see
        ``jobqueue.events``)."""
        from .events import Events

        return Events(self)

    # -- lifecycle ---------------------------------------------------------------

    def migrate(self) -> None:
        """Bring the schema to the newest revision (``jobqueue db upgrade``)."""
        from .migrate import upgrade

        upgrade(self.db.dsn(), self.conf.schema)

    def close(self) -> None:
        self.results.stop()
        self.db.close()

    async def aclose(self) -> None:
        """``close`` for async code: also closes the running event loop's
        async pool and result listener (call it where the loop ends, such as
        an ASGI app's lifespan shutdown)."""
        if "aio" in self.__dict__:
            await self.aio.close()
        if self.db._pool is not None:  # the sync API was used too: closing it joins threads
            await asyncio.to_thread(self.close)
        else:
            self.results.stop()


__all__ = ["JobQueue", "current_app"]
