"""``self.request``: what a running task knows about its own job, as
Celery's ``Request`` (the worker fills it from the claimed row; ``apply()``
and eager mode from the call)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .atomic import Transaction


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
    #: The job's priority (None when the task was called directly).
    priority: int | None = None
    #: Run in the caller's process by ``Task.apply()`` or eager mode
    #: (``jobqueue.eager``), not by a worker (Celery's name).
    is_eager: bool = False
    #: The chord whose header this job is a member of (Celery's ``request.chord``
    #: holds the body; here its id), else None. ``self.add_to_chord()`` uses it.
    chord: str | None = None
    #: An atomic task's transaction (``self.connection``, ``self.session``).
    transaction: Transaction | None = field(default=None, repr=False, compare=False)

    @property
    def delivery_info(self) -> dict[str, Any]:
        """Celery's ``request.delivery_info``, from the job: no exchange (``""``),
        the queue as the routing key, the priority, and ``redelivered``: whether
        an earlier attempt of the job ran (a retry, or a rescue after its
        worker was lost)."""
        return {
            "exchange": "",
            "routing_key": self.queue,
            "priority": self.priority,
            "redelivered": self.attempt > 1,
        }

    def __getattr__(self, name: str) -> Any:
        """A header by name, as Celery's request offers them
        (``getattr(request, "traceparent", None)``); only for names that are not
        the request's own."""
        headers = self.__dict__.get("headers")
        if headers and name in headers:
            return headers[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
