"""Tasks: a Python function registered under a name, plus its default options.

``delay(*args, **kwargs)`` is pure arguments; ``apply_async(args, kwargs,
**options)`` carries job options, so options never collide with a task's own
parameters.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from functools import cached_property
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from .celeryconf import TASK_OPTIONS as CELERY_TASK_OPTIONS
from .celeryconf import task_options as celery_task_options
from .limits import FlowControl
from .options import (
    call_options,
    check_priority,
    check_queue,
    check_time_limits,
    default_limits,
    dependencies,
    resolve,
)
from .request import Request
from .retry import (
    DEFAULT_BACKOFF_MAX,
    DEFAULT_MAX_RETRIES,
    DEFAULT_RETRY_DELAY,
    RetryPolicy,
    check_backoff,
    exception_types,
)
from .running import _UNSET, RunningTask
from .serialization import dumps

if TYPE_CHECKING:
    from .app import JobQueue
    from .canvas import Chunks, Signature
    from .eager import EagerResult
    from .options import JobSpec
    from .result import AsyncResult

P = ParamSpec("P")
R = TypeVar("R")

#: Options accepted by ``@app.task(...)``; anything else is a clear TypeError.
TASK_OPTIONS = frozenset(
    {
        "name",
        "queue",
        "priority",
        "bind",
        "ignore_result",
        "max_retries",
        "default_retry_delay",
        "autoretry_for",
        "dont_autoretry_for",
        "retry_backoff",
        "retry_backoff_max",
        "retry_jitter",
        "soft_time_limit",
        "time_limit",
        "reject_on_worker_lost",
        "rate_limit",
        "rate_limit_burst",
        "rate_limit_key",
        "concurrency_limit",
        "concurrency_key",
        "unique",
        "unique_key",
        "unique_window",
        "unique_states",
        "typing",
        "atomic",
        "on_duplicate",
        "fair_key",
    }
)

_NO_OPTIONS: dict[str, Any] = {}  # delay(): nothing to check


#: A Task subclass's overridable methods, called in the worker process around
#: each attempt (``worker/task_hooks.py``), as Celery calls them.
HOOKS = ("before_start", "on_success", "on_retry", "on_failure", "after_return")


def _class_options(cls: type) -> dict[str, Any]:
    """The task options a Task subclass gives as class attributes (Celery's
    way to set defaults), the most derived winning; jobqueue's own Task and
    an app's ``app.Task`` give none."""
    found: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if klass is not Task and issubclass(klass, Task):
            found.update(
                (k, v)
                for k, v in vars(klass).items()
                if k in TASK_OPTIONS or k in CELERY_TASK_OPTIONS
            )
    if any(k in found for k in CELERY_TASK_OPTIONS):  # acks_late, track_started
        found = celery_task_options(found, cls.__qualname__)
    return found


class Task(RunningTask, Generic[P, R]):
    """A registered task. Call it to run it here and now; ``delay`` to enqueue.

    ``@app.task`` makes one from a function. As in Celery, a task can also be
    a class: subclass ``app.Task`` (bound to the app) and define ``run``,
    then ``app.register_task(MyTask())``; or subclass ``jobqueue.Task`` (or
    ``app.Task``) as a base for functions, ``@app.task(base=MyBase)``. Class
    attributes named like ``@app.task``'s options (``name``, ``queue``,
    ``max_retries``, ``autoretry_for``, ``rate_limit``...) are defaults that
    the decorator's options override, and the hooks (``before_start``,
    ``on_success``, ``on_retry``, ``on_failure``, ``after_return``) are
    called in the worker process that runs each attempt."""

    #: The app, on a per-app base class (``app.Task``) and on every task.
    app: JobQueue

    def __init__(
        self,
        app: JobQueue | None = None,
        fn: Callable[..., R] | None = None,
        *,
        name: str | None = None,
        **options: Any,
    ) -> None:
        cls = type(self)
        given = _class_options(cls)
        class_name = given.pop("name", None)
        options = {**given, **options}
        if app is None:
            app = getattr(cls, "app", None)
            if app is None:
                raise TypeError(
                    f"{cls.__name__}() has no app: subclass app.Task, or use it as a base "
                    f"with @app.task(base={cls.__name__})"
                )
        if fn is None:  # a class-based task: its run() method is the function
            if cls.run is Task.run:
                raise TypeError(f"{cls.__name__} defines no run() method")
            fn = self.run  # bound: called without self
            options["bind"] = False
            name = name or class_name or f"{cls.__module__}.{cls.__qualname__}"
        elif name is None:
            name = f"{fn.__module__}.{fn.__qualname__}"
        if isinstance(name, str) and type(name) is not str:
            name = str.__str__(name)  # an Enum of task names: its value, as stored
        self.app = app
        self.fn = fn
        self.name = name
        queue = options.get("queue")
        self.queue: str | None = None if queue is None else check_queue(queue, f"{name}'s queue")
        #: None: the job's priority is app.conf.default_priority (or the call's).
        priority = options.get("priority")
        self.priority: int | None = None if priority is None else check_priority(priority)
        self.bind = bool(options.get("bind", False))
        self.ignore_result = bool(options.get("ignore_result", False))
        self.is_async = asyncio.iscoroutinefunction(fn)
        self.max_retries: int | None = options.get("max_retries", DEFAULT_MAX_RETRIES)
        if self.max_retries is not None and (
            not isinstance(self.max_retries, int) or self.max_retries < 0
        ):
            raise ValueError(
                f"max_retries must be None or an integer >= 0, got {self.max_retries!r}"
            )
        self.default_retry_delay = float(options.get("default_retry_delay", DEFAULT_RETRY_DELAY))
        self.policy = RetryPolicy(
            max_retries=self.max_retries,
            default_retry_delay=self.default_retry_delay,
            autoretry_for=exception_types(options.get("autoretry_for"), "autoretry_for"),
            dont_autoretry_for=exception_types(
                options.get("dont_autoretry_for"), "dont_autoretry_for"
            ),
            retry_backoff=check_backoff(options.get("retry_backoff", False)),
            retry_backoff_max=float(options.get("retry_backoff_max", DEFAULT_BACKOFF_MAX)),
            retry_jitter=bool(options.get("retry_jitter", True)),
        )
        self.soft_time_limit, self.time_limit = check_time_limits(
            options.get("soft_time_limit"), options.get("time_limit")
        )
        # Celery's meaning (True: a job whose worker died goes back to the queue),
        # but on by default: jobqueue never loses a job unless told to.
        self.reject_on_worker_lost = bool(options.get("reject_on_worker_lost", True))
        #: Its writes through self.connection / self.session and its job's
        #: completion commit together (jobqueue/atomic.py).
        self.atomic = bool(options.get("atomic", False))
        if self.atomic and self.is_async:
            raise TypeError(
                f"task {name!r}: atomic=True is for `def` tasks; an `async def` task "
                "cannot share the worker's transaction (make it a `def` task)"
            )
        self.flow = FlowControl.from_options(options, fn, name, skip_self=self.bind)
        self._stored_options: tuple[tuple[Any, ...], str] | None = None
        # Celery's typing=True: arguments are checked against the function's
        # signature when a job is enqueued (check_arguments).
        self.typing = bool(options.get("typing", True))
        self._binder: tuple[Callable[..., Any], int, int] | None = _UNSET
        # The hooks this task's class overrides: the worker calls only these
        # (none for a plain @app.task: nothing to do per job).
        self._hooks = frozenset(h for h in HOOKS if getattr(cls, h) is not getattr(Task, h))
        # A context variable, not a thread-local: an async task runs on the
        # pool's event loop thread, in a copy of its slot thread's context, and
        # sees its own request there.
        self._request: ContextVar[Request | None] = ContextVar(f"request:{name}", default=None)
        self.__doc__ = fn.__doc__ if fn.__doc__ is not None else cls.__doc__
        self.__name__ = getattr(fn, "__name__", name) if cls.run is Task.run else cls.__name__
        self.__wrapped__ = fn
        if cls.run is Task.run:  # a function's task: run() is the function, as in Celery
            self.__dict__["run"] = functools.partial(fn, self) if self.bind else fn

    # -- a subclass's body and hooks (Celery's names and arguments) ----------

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """A class-based task's body: define it in the subclass."""
        raise NotImplementedError(f"{type(self).__name__} defines no run() method")

    def before_start(self, task_id: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        """Called in the worker just before the task runs."""

    def on_success(
        self, retval: Any, task_id: str, args: list[Any], kwargs: dict[str, Any]
    ) -> None:
        """Called in the worker when the task returned (before the result is recorded)."""

    def on_retry(
        self, exc: BaseException, task_id: str, args: list[Any], kwargs: dict[str, Any], einfo: Any
    ) -> None:
        """Called in the worker when the attempt ends in a retry."""

    def on_failure(
        self, exc: BaseException, task_id: str, args: list[Any], kwargs: dict[str, Any], einfo: Any
    ) -> None:
        """Called in the worker when the attempt fails the job."""

    def after_return(
        self,
        status: str,
        retval: Any,
        task_id: str,
        args: list[Any],
        kwargs: dict[str, Any],
        einfo: Any,
    ) -> None:
        """Called in the worker after every attempt, with its state and its
        return value (or exception)."""

    def __repr__(self) -> str:
        return f"<@task: {self.name}>"

    # -- running -----------------------------------------------------------

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function in this process, like calling it directly."""
        if self.bind:
            return self.fn(self, *args, **kwargs)
        return self.fn(*args, **kwargs)

    def apply(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        task_id: str | None = None,
        throw: bool | None = None,
        **options: Any,
    ) -> EagerResult:
        """Run as a worker would, here and now, with no database (Celery's
        ``apply``): the same ``self.request``, signals, retries (run at once,
        not after their countdown), JSON round trip of arguments and result,
        and ``link``/``link_error`` callbacks. Returns an ``EagerResult``;
        ``throw`` (default ``app.conf.eager_propagates``) raises the task's
        exception instead. ``options``: ``apply_async``'s. See jobqueue.eager."""
        from .canvas import Signature

        if task_id is not None:
            options["task_id"] = task_id
        result: EagerResult = Signature(self, args or (), kwargs, **options).apply(throw=throw)
        return result

    # -- canvas ------------------------------------------------------------

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature of this task (partial: later args are prepended)."""
        from .canvas import Signature

        return Signature(self, args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: callbacks do not receive the parent's result."""
        from .canvas import Signature

        return Signature(self, args, kwargs, immutable=True)

    def signature(
        self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> Signature:
        from .canvas import Signature

        return Signature(self, args, kwargs, **options)

    subtask = signature

    def map(self, items: Iterable[Any]) -> Signature:
        """One job calling this task on each item; its result is the list."""
        from .canvas import map_signature

        return map_signature(self, items)

    def starmap(self, items: Iterable[Sequence[Any]]) -> Signature:
        """One job calling this task with each item unpacked as arguments."""
        from .canvas import starmap_signature

        return starmap_signature(self, items)

    def chunks(self, items: Iterable[Sequence[Any]], size: int) -> Chunks:
        """``items`` split into jobs of ``size`` calls each (``.group()`` for the group)."""
        from .canvas import Chunks

        return Chunks(self, items, size)

    # -- enqueueing --------------------------------------------------------

    def check_arguments(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """TypeError now if the function could not be called with ``args`` and
        ``kwargs`` (Celery's ``typing=True``), rather than a failed job later.

        Cost, measured with timeit (``delay(1, 2)``'s Python part before the
        insert, 5.4 us without the check): ``Signature.bind`` costs 1.5-1.8 us
        a call, so positional arguments alone are first counted against the
        function's plain parameters (0.2 us), and ``bind`` runs only for
        keywords, ``*args``, keyword-only parameters, or a wrong count (to name
        what is wrong). ``typing=False`` on the task skips the check."""
        checker = self._binder
        if checker is _UNSET:
            checker = self._binder = self._make_binder()
        if checker is None:
            return
        bind, fewest, most = checker
        if not kwargs and fewest <= len(args) <= most:
            return
        try:
            bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"task {self.name!r} cannot take these arguments: {exc}") from None

    def _make_binder(self) -> tuple[Callable[..., Any], int, int] | None:
        """The signature's ``bind`` (without ``self`` for bind=True tasks) and
        how many positional arguments alone satisfy it (-1, -1: always bind);
        None when there is nothing to check (typing=False, no signature)."""
        if not self.typing:
            return None
        try:
            signature = inspect.signature(self.fn)
        except (TypeError, ValueError):  # a builtin or a callable without one
            return None
        parameters = list(signature.parameters.values())
        if self.bind:
            parameters = parameters[1:]
            signature = signature.replace(parameters=parameters)
        plain = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        if not all(p.kind in plain for p in parameters):
            return signature.bind, -1, -1
        required = sum(p.default is inspect.Parameter.empty for p in parameters)
        return signature.bind, required, len(parameters)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult:
        """Enqueue with default options, in its own short transaction."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        link: Signature | list[Signature] | None = None,
        link_error: Signature | list[Signature] | None = None,
        connection: Any = None,
        **options: Any,
    ) -> AsyncResult:
        """Enqueue with options: any of ``jobqueue.options.CALL_OPTIONS`` (queue,
        priority, countdown, eta, expires, task_id, soft_time_limit,
        time_limit, headers: JSON values the task reads as
        ``self.request.headers``, ignore_result, and Celery's serializer,
        compression, retry, retry_policy and add_to_parent: see
        ``options.extra_options``). With ``connection=`` the job is written inside the
        caller's open transaction and exists only if it commits. ``link`` /
        ``link_error``: signatures enqueued with this job's result (or id) when
        it succeeds (or fails)."""
        job = self._job(args, kwargs, link, link_error, options)
        if isinstance(job, tuple):
            return self.app.enqueue(job[0], self, job[1], job[2], connection)
        result: AsyncResult = job.apply_async(connection=connection)
        return result

    def _job(
        self,
        args: Sequence[Any] | None,
        kwargs: Mapping[str, Any] | None,
        link: Signature | list[Signature] | None,
        link_error: Signature | list[Signature] | None,
        options: Mapping[str, Any],
    ) -> tuple[JobSpec, tuple[Any, ...], dict[str, Any]] | Signature:
        """``apply_async``'s first step (``jobqueue.aio`` shares it): the job
        resolved, with its arguments; or, with callbacks, the signature to enqueue."""
        depends_on, on_failure = None, "fail"
        if options and ("depends_on" in options or "on_dependency_failure" in options):
            options = dict(options)
            depends_on, on_failure = dependencies(options, f"{self.name}.apply_async()")
        call = call_options(options, f"{self.name}.apply_async()") if options else _NO_OPTIONS
        if depends_on is not None and (link is not None or link_error is not None):
            raise TypeError(
                f"{self.name}.apply_async(): depends_on= cannot be combined with link= or "
                "link_error= (a job with callbacks is a workflow); chain the callbacks after "
                "a job that depends on the others instead"
            )
        if link is not None or link_error is not None:
            from .canvas import Signature

            sig = Signature(self, args or (), kwargs, **call)
            for callback in _listed(link):
                sig.link(callback)
            for errback in _listed(link_error):
                sig.link_error(errback)
            return sig
        args, kwargs = tuple(args or ()), dict(kwargs or {})
        if self.typing:
            self.check_arguments(args, kwargs)
        spec = resolve(self.app, self.name, self, args, kwargs, call)
        if depends_on is not None:
            spec = spec._replace(depends_on=depends_on, on_dependency_failure=on_failure)
        return spec, args, kwargs

    async def adelay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult:
        """``delay`` for async code (``jobqueue.aio``): the insert is awaited."""
        return await self.app.aio.apply_async(self, args, kwargs, None, None, None, {})

    async def aapply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        link: Signature | list[Signature] | None = None,
        link_error: Signature | list[Signature] | None = None,
        connection: Any = None,
        **options: Any,
    ) -> AsyncResult:
        """``apply_async`` for async code: the same options and checks;
        ``connection=`` a psycopg ``AsyncConnection``, a SQLAlchemy
        ``AsyncConnection`` or an ``AsyncSession``, whose transaction the job
        joins (see ``jobqueue.aio``)."""
        return await self.app.aio.apply_async(
            self, args, kwargs, link, link_error, connection, options
        )

    def job_options(
        self,
        soft_time_limit: float | None = None,
        time_limit: float | None = None,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """What a job of this task carries for the worker and for SQL: retry and
        rescue settings, time limits, limit keys."""
        return self._settings(soft_time_limit, time_limit) | self.flow.keys(
            self.name, args, kwargs or {}
        )

    def base_options(self) -> dict[str, Any]:
        """The options every job of this task stores when its call gives no
        time limits (what a worker writes to ``task_settings`` for SQL)."""
        return self._settings(None, None)

    def _settings(self, soft_time_limit: float | None, time_limit: float | None) -> dict[str, Any]:
        """job_options without the limit keys: retry and rescue settings, time
        limits (the call's, else the task's, else the app's defaults)."""
        soft, hard = check_time_limits(
            *default_limits(
                self.app.conf,
                soft_time_limit if soft_time_limit is not None else self.soft_time_limit,
                time_limit if time_limit is not None else self.time_limit,
            )
        )
        options: dict[str, Any] = {"max_retries": self.max_retries}
        if soft is not None:
            options["soft_time_limit"] = soft
        if hard is not None:
            options["time_limit"] = hard
        if not self.reject_on_worker_lost:
            options["reject_on_worker_lost"] = False
        return options

    def stored_options(
        self,
        soft_time_limit: float | None = None,
        time_limit: float | None = None,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        prepended: bool = False,
    ) -> tuple[str, dict[str, str]]:
        """``job_options`` as stored (JSON), and its limit keys (``prepended``:
        see ``FlowControl.keys``).

        Without per-call limits or keys every job of the task carries the same
        JSON, so it is encoded once per setting of the task's attributes rather
        than per ``delay()`` (encoding it was a quarter of that call's Python)."""
        # Once: key functions are the user's.
        keys = self.flow.keys(self.name, args, kwargs or {}, prepended)
        if keys or soft_time_limit is not None or time_limit is not None:
            return dumps(self._settings(soft_time_limit, time_limit) | keys), keys
        conf = self.app.conf
        setting = (  # what _settings reads from the task and the app
            self.max_retries,
            self.soft_time_limit,
            self.time_limit,
            self.reject_on_worker_lost,
            conf.default_soft_time_limit,
            conf.default_time_limit,
        )
        cached = self._stored_options
        if cached is None or cached[0] != setting:
            cached = self._stored_options = (setting, dumps(self._settings(None, None)))
        return cached[1], keys


def _listed(value: Signature | list[Signature] | None) -> list[Signature]:
    return [] if value is None else list(value) if isinstance(value, list) else [value]


class AppTaskBase:
    """Gives an app its ``app.Task`` (a base of the app class, so that the
    name ``Task`` in the app's own code still means jobqueue's Task)."""

    @cached_property
    def Task(self) -> type[Task[Any, Any]]:
        """This app's base class for class-based tasks, as Celery's ``app.Task``:
        ``class Add(app.Task): def run(self, x, y): ...``, then
        ``app.register_task(Add())``. Made once per app."""
        return type("Task", (Task,), {"app": self, "__module__": Task.__module__})
