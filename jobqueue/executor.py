"""Running one claimed job: resolve the task, call it, normalise the outcome.

This step is pure with respect to the database: it returns an ``Outcome`` and
the completer records it. A straight pipeline: resolve → run → encode.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import states
from .exceptions import TaskNotRegistered
from .serialization import dump_error, dumps
from .tasks import Request

if TYPE_CHECKING:
    from .app import JobQueue

log = logging.getLogger("jobqueue.task")


@dataclass(slots=True)
class Job:
    """A claimed job, as the claim statement returns it."""

    id: str
    task: str
    queue: str
    args: list[Any]
    kwargs: dict[str, Any]
    options: dict[str, Any]
    attempt: int
    run_at: datetime | None
    root_id: str | None
    parent_id: str | None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Job:
        job_id, task, queue, args, kwargs, options, attempt, run_at, root_id, parent_id = row
        return cls(
            str(job_id),
            task,
            queue,
            args,
            kwargs,
            options,
            attempt,
            run_at,
            None if root_id is None else str(root_id),
            None if parent_id is None else str(parent_id),
        )


@dataclass(slots=True)
class Outcome:
    """What happened to one attempt, ready to be written by the completer."""

    job_id: str
    attempt: int
    state: str
    result: str | None  # JSON text
    error: str | None  # JSON text


def execute(app: JobQueue, job: Job, hostname: str) -> Outcome:
    task = app.tasks.get(job.task)
    if task is None:
        exc = TaskNotRegistered(
            f"task {job.task!r} is not registered in this worker (app {app!r}); "
            "is the module that defines it imported by the app given to -A?"
        )
        log.error("Received unregistered task %s[%s]", job.task, job.id)
        return Outcome(job.id, job.attempt, states.FAILURE, None, dump_error(exc))

    request = Request(
        id=job.id,
        task=job.task,
        args=job.args,
        kwargs=job.kwargs,
        retries=job.attempt - 1,
        eta=job.run_at,
        hostname=hostname,
        queue=job.queue,
        root_id=job.root_id,
        parent_id=job.parent_id,
    )
    started = time.perf_counter()
    task._push_request(request)
    try:
        value = (
            task.fn(task, *job.args, **job.kwargs)
            if task.bind
            else task.fn(*job.args, **job.kwargs)
        )
    except Exception as exc:
        elapsed = time.perf_counter() - started
        log.error(
            "Task %s[%s] raised %s: %s (after %.3fs)",
            job.task,
            job.id,
            type(exc).__name__,
            exc,
            elapsed,
            exc_info=log.isEnabledFor(logging.DEBUG),
        )
        return Outcome(job.id, job.attempt, states.FAILURE, None, dump_error(exc))
    finally:
        task._push_request(None)

    if task.ignore_result:
        encoded = None
    else:
        try:
            encoded = dumps(value)
        except (TypeError, ValueError) as exc:
            error = TypeError(
                f"result of task {job.task!r} is not JSON serializable: "
                f"{type(value).__name__} ({exc})"
            )
            log.error("Task %s[%s] %s", job.task, job.id, error)
            return Outcome(job.id, job.attempt, states.FAILURE, None, dump_error(error))
    if log.isEnabledFor(logging.INFO):
        log.info("Task %s[%s] succeeded in %.4fs", job.task, job.id, time.perf_counter() - started)
    return Outcome(job.id, job.attempt, states.SUCCESS, encoded, None)
