"""Tasks: a Python function registered under a name, plus its default options.

``delay(*args, **kwargs)`` is pure arguments; ``apply_async(args, kwargs,
**options)`` carries job options, so options never collide with a task's own
parameters.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

if TYPE_CHECKING:
    from .app import JobQueue
    from .result import AsyncResult

P = ParamSpec("P")
R = TypeVar("R")

#: Options accepted by ``@app.task(...)``; anything else is a clear TypeError.
TASK_OPTIONS = frozenset({"name", "queue", "priority", "bind", "ignore_result"})


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
    called_directly: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class Task(Generic[P, R]):
    """A registered task. Call it to run it here and now; ``delay`` to enqueue."""

    def __init__(
        self,
        app: JobQueue,
        fn: Callable[..., R],
        *,
        name: str,
        queue: str | None = None,
        priority: int = 0,
        bind: bool = False,
        ignore_result: bool = False,
    ) -> None:
        self.app = app
        self.fn = fn
        self.name = name
        self.queue = queue
        self.priority = priority
        self.bind = bind
        self.ignore_result = ignore_result
        self._local = threading.local()
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
        current: Request | None = getattr(self._local, "request", None)
        if current is None:
            return Request(id="", task=self.name, args=[], kwargs={}, called_directly=True)
        return current

    def _push_request(self, request: Request | None) -> None:
        self._local.request = request

    # -- enqueueing --------------------------------------------------------

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult:
        """Enqueue with default options, in its own short transaction."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        expires: float | datetime | None = None,
        task_id: str | None = None,
        connection: Any = None,
    ) -> AsyncResult:
        """Enqueue with options. With ``connection=`` the job is written inside
        the caller's open transaction and exists only if it commits."""
        return self.app.send_task(
            self.name,
            args,
            kwargs,
            queue=queue if queue is not None else self.queue,
            priority=priority if priority is not None else self.priority,
            countdown=countdown,
            eta=eta,
            expires=expires,
            task_id=task_id,
            connection=connection,
        )
