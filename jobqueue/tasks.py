"""Tasks: a Python function registered under a name, plus its default options.

``delay(*args, **kwargs)`` is pure arguments; ``apply_async(args, kwargs,
**options)`` carries job options, so options never collide with a task's own
parameters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Generic, NoReturn, ParamSpec, TypeVar

from .exceptions import MaxRetriesExceededError, Retry
from .limits import FlowControl
from .options import call_options, check_queue, check_time_limits, resolve
from .retry import (
    DEFAULT_BACKOFF_MAX,
    DEFAULT_MAX_RETRIES,
    DEFAULT_RETRY_DELAY,
    RetryPolicy,
    exception_types,
)
from .serialization import dumps

if TYPE_CHECKING:
    from .app import JobQueue
    from .canvas import Chunks, Signature
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
    }
)

_UNSET: Any = object()
_NO_OPTIONS: dict[str, Any] = {}  # delay(): nothing to check


@dataclass
class Request:
    """What a running task knows about its own job (``self.request`` with bind=True)."""

    id: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    retries: int = 0
    eta: datetime | None = None
    hostname: str | None = None
    queue: str | None = None
    root_id: str | None = None
    parent_id: str | None = None
    soft_time_limit: float | None = None
    time_limit: float | None = None
    called_directly: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    #: What the job was published with: ``apply_async(headers=...)`` and what
    #: ``before_task_publish`` receivers added (a trace's ``traceparent``...).
    headers: dict[str, Any] | None = None
    #: Which run of the job this is, from 1 (``retries`` restarts from 0 when
    #: ``retry_jobs`` resets them; this never does).
    attempt: int = 1

    def __getattr__(self, name: str) -> Any:
        """A header by name, as Celery's request offers them
        (``getattr(request, "traceparent", None)``); only for names that are not
        the request's own."""
        headers = self.__dict__.get("headers")
        if headers and name in headers:
            return headers[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


class Task(Generic[P, R]):
    """A registered task. Call it to run it here and now; ``delay`` to enqueue."""

    def __init__(self, app: JobQueue, fn: Callable[..., R], *, name: str, **options: Any) -> None:
        self.app = app
        self.fn = fn
        self.name = name
        queue = options.get("queue")
        self.queue: str | None = None if queue is None else check_queue(queue, f"{name}'s queue")
        self.priority: int = options.get("priority", 0)
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
        self.policy = RetryPolicy(
            max_retries=self.max_retries,
            default_retry_delay=float(options.get("default_retry_delay", DEFAULT_RETRY_DELAY)),
            autoretry_for=exception_types(options.get("autoretry_for"), "autoretry_for"),
            dont_autoretry_for=exception_types(
                options.get("dont_autoretry_for"), "dont_autoretry_for"
            ),
            retry_backoff=options.get("retry_backoff", False),
            retry_backoff_max=float(options.get("retry_backoff_max", DEFAULT_BACKOFF_MAX)),
            retry_jitter=bool(options.get("retry_jitter", True)),
        )
        self.soft_time_limit, self.time_limit = check_time_limits(
            options.get("soft_time_limit"), options.get("time_limit")
        )
        # Celery's meaning (True: a job whose worker died goes back to the queue),
        # but on by default: jobqueue never loses a job unless told to.
        self.reject_on_worker_lost = bool(options.get("reject_on_worker_lost", True))
        self.flow = FlowControl.from_options(options)
        self._stored_options: tuple[tuple[Any, ...], str] | None = None
        # A context variable, not a thread-local: an async task runs on the
        # pool's event loop thread, in a copy of its slot thread's context, and
        # sees its own request there.
        self._request: ContextVar[Request | None] = ContextVar(f"request:{name}", default=None)
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", name)
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<@task: {self.name}>"

    # -- running -----------------------------------------------------------

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function in this process, like calling it directly."""
        if self.bind:
            return self.fn(self, *args, **kwargs)
        return self.fn(*args, **kwargs)

    @property
    def request(self) -> Request:
        """The job being run by this thread (set by the worker)."""
        current = self._request.get()
        if current is None:
            return Request(id="", task=self.name, args=[], kwargs={}, called_directly=True)
        return current

    def _push_request(self, request: Request | None) -> None:
        self._request.set(request)

    def retry(
        self,
        args: Any = None,
        kwargs: Any = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: datetime | None = None,
        countdown: float | None = None,
        max_retries: int | None = _UNSET,
        **options: Any,
    ) -> NoReturn:
        """End this attempt and schedule another (``bind=True`` tasks): ``raise self.retry(...)``.

        With no retries left, re-raises ``exc`` (or ``MaxRetriesExceededError``),
        so the job fails with it. ``args``/``kwargs`` are accepted for Celery
        compatibility; the retry runs with the job's original arguments.
        """
        request = self.request
        if request.called_directly:
            raise (
                exc
                if exc is not None
                else RuntimeError(f"{self.name}.retry() called outside a worker")
            )
        override = max_retries is not _UNSET
        if self.policy.exhausted(
            request.retries, max_retries if override else None, override=override
        ):
            if exc is not None:
                raise exc
            limit = max_retries if override else self.max_retries
            raise MaxRetriesExceededError(
                f"can't retry {self.name}[{request.id}]: max retries ({limit}) exceeded"
            )
        if eta is not None:
            moment = eta if eta.tzinfo else eta.astimezone()
            countdown = max((moment - datetime.now(timezone.utc)).total_seconds(), 0.0)
        if countdown is None:
            countdown = self.policy.countdown(request.retries)
        raise Retry(exc=exc, countdown=countdown, eta=eta)

    def update_state(
        self, task_id: str | None = None, state: str = "PROGRESS", meta: Any = None
    ) -> None:
        """Publish progress while running: ``AsyncResult.state`` shows ``state``
        and ``.info`` shows ``meta`` until the job finishes."""
        from .states import ALL_STATES

        request = self.request
        if request.called_directly:
            return
        if state in ALL_STATES:
            raise ValueError(f"update_state() takes a custom state, not {state!r}")
        # Only our own attempt may write our row; another job's, any.
        attempt = request.retries + 1 if task_id in (None, request.id) else None
        self.app.store.set_progress(task_id or request.id, state, dumps(meta), attempt)

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
        ``self.request.headers``). With ``connection=`` the job is written inside the
        caller's open transaction and exists only if it commits. ``link`` /
        ``link_error``: signatures enqueued with this job's result (or id) when
        it succeeds (or fails)."""
        call = call_options(options, f"{self.name}.apply_async()") if options else _NO_OPTIONS
        if link is not None or link_error is not None:
            from .canvas import Signature

            sig = Signature(self, args or (), kwargs, **call)
            for callback in _listed(link):
                sig.link(callback)
            for errback in _listed(link_error):
                sig.link_error(errback)
            result: AsyncResult = sig.apply_async(connection=connection)
            return result
        args, kwargs = tuple(args or ()), dict(kwargs or {})
        spec = resolve(self.app, self.name, self, args, kwargs, call)
        return self.app.enqueue(spec, self, args, kwargs, connection)

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

    def _settings(self, soft_time_limit: float | None, time_limit: float | None) -> dict[str, Any]:
        """job_options without the limit keys: retry and rescue settings, time limits."""
        soft, hard = check_time_limits(
            soft_time_limit if soft_time_limit is not None else self.soft_time_limit,
            time_limit if time_limit is not None else self.time_limit,
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
    ) -> tuple[str, dict[str, str]]:
        """``job_options`` as stored (JSON), and its limit keys.

        Without per-call limits or keys every job of the task carries the same
        JSON, so it is encoded once per setting of the task's attributes rather
        than per ``delay()`` (encoding it was a quarter of that call's Python)."""
        keys = self.flow.keys(self.name, args, kwargs or {})  # once: key functions are the user's
        if keys or soft_time_limit is not None or time_limit is not None:
            return dumps(self._settings(soft_time_limit, time_limit) | keys), keys
        setting = (  # what _settings reads from the task
            self.max_retries,
            self.soft_time_limit,
            self.time_limit,
            self.reject_on_worker_lost,
        )
        cached = self._stored_options
        if cached is None or cached[0] != setting:
            cached = self._stored_options = (setting, dumps(self._settings(None, None)))
        return cached[1], keys


def _listed(value: Signature | list[Signature] | None) -> list[Signature]:
    return [] if value is None else list(value) if isinstance(value, list) else [value]
