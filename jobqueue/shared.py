"""``@shared_task``: a task for reusable code (a Django app, a library) that
does not know which app it will run under.

The function is registered with every app, those already made and those made
later (``register_shared``, from ``JobQueue.__init__``), under one name. The
decorator returns a ``SharedTask``, which stands for the task of the current
app (``jobqueue.current``: the app made last) at the moment it is used, as
Celery's does: ``send_email.delay(...)`` enqueues through whichever app the
project made, though ``send_email`` was defined before it existed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, overload

from .celeryconf import TASK_OPTIONS as CELERY_TASK_OPTIONS
from .current import all_apps, current_app
from .tasks import TASK_OPTIONS, P, R

if TYPE_CHECKING:
    from .app import JobQueue
    from .canvas import Signature
    from .result import AsyncResult
    from .tasks import Task

_lock = threading.Lock()
_shared: list[tuple[Callable[..., Any], dict[str, Any]]] = []


class SharedTask(Generic[P, R]):
    """The current app's task of this name; its attributes are that task's."""

    def __init__(self, fn: Callable[..., R], name: str) -> None:
        self.name = name
        self.__wrapped__ = fn
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", name)
        self.__qualname__ = getattr(fn, "__qualname__", name)
        self.__module__ = fn.__module__

    def __repr__(self) -> str:
        return f"<@shared_task: {self.name}>"

    @property
    def task(self) -> Task[P, R]:
        """The task as registered with the current app."""
        app = current_app()
        found = app.tasks.get(self.name)
        if found is None:  # an app made while the decorator ran: register it now
            register_shared(app)
            found = app.tasks[self.name]
        return found

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.task(*args, **kwargs)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult:
        return self.task.delay(*args, **kwargs)

    def apply_async(self, *args: Any, **options: Any) -> AsyncResult:
        return self.task.apply_async(*args, **options)

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        return self.task.s(*args, **kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        return self.task.si(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.task, name)


@overload
def shared_task(fn: Callable[P, R], /) -> SharedTask[P, R]: ...


@overload
def shared_task(**options: Any) -> Callable[[Callable[P, R]], SharedTask[P, R]]: ...


def shared_task(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """``@shared_task`` or ``@shared_task(name=..., ...)``, with the options of
    ``@app.task``: register the function with every app, now and to come."""
    known = TASK_OPTIONS.union(CELERY_TASK_OPTIONS, {"base"})  # what @app.task takes
    unknown = set(options) - known
    if unknown:
        raise TypeError(
            f"@shared_task got unknown option(s) {sorted(unknown)}; known options: {sorted(known)}"
        )

    def register(func: Callable[..., Any]) -> SharedTask[Any, Any]:
        settings = dict(options)
        settings["name"] = settings.get("name") or f"{func.__module__}.{func.__qualname__}"
        with _lock:
            _shared.append((func, settings))
        for app in all_apps():
            _register(app, func, settings)
        return SharedTask(func, settings["name"])

    return register(fn) if fn is not None else register


def register_shared(app: JobQueue) -> None:
    """Register every shared task with ``app`` (a new app: ``JobQueue.__init__``)."""
    with _lock:
        shared = list(_shared)
    for func, settings in shared:
        _register(app, func, settings)


def _register(app: JobQueue, func: Callable[..., Any], settings: dict[str, Any]) -> None:
    if settings["name"] not in app.tasks:  # an app's own task of that name wins
        register: Callable[[Callable[..., Any]], Any] = app.task(**settings)
        register(func)
