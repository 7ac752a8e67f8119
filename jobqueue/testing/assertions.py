"""Assertions over the real tables: what was enqueued, with which arguments.

They read the jobs as every other reader does (``app.control.jobs``, the
``find_jobs`` SQL function), so a job counts only once its transaction has
committed, exactly as a worker would see it. Arguments are compared as
stored: after the JSON round trip, so ``args=(1, 2)`` matches the stored
``[1, 2]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..serialization import dumps, loads

if TYPE_CHECKING:
    from ..app import JobQueue
    from ..control import Job
    from ..tasks import Task

#: Shown in a failed assertion's message, at most.
_SHOWN = 10


def enqueued_jobs(
    task: Task[Any, Any] | str,
    *,
    queue: str | None = None,
    state: str | None = "PENDING",
    app: JobQueue | None = None,
) -> list[Job]:
    """The jobs of ``task`` (a task, or its name with ``app=``), oldest first:
    by default those waiting to run (due or scheduled); ``state=None`` for
    every state. Each is a ``jobqueue.control.Job`` (id, task, queue,
    priority, state, args, kwargs, options, run_at...)."""
    name, owner = _task(task, app)
    return list(owner.control.jobs(task=name, queue=queue, state=state))


def assert_enqueued(
    task: Task[Any, Any] | str,
    args: Sequence[Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    *,
    queue: str | None = None,
    count: int | None = None,
    state: str | None = "PENDING",
    app: JobQueue | None = None,
) -> list[Job]:
    """Assert that jobs of ``task`` wait to run, with these ``args`` and
    ``kwargs`` (each compared in full when given) in ``queue``: at least one,
    or exactly ``count``. Returns the matching jobs."""
    name, _ = _task(task, app)
    jobs = enqueued_jobs(task, queue=queue, state=state, app=app)
    matching = [job for job in jobs if _matches(job, args, kwargs)]
    if (not matching and count is None) or (count is not None and len(matching) != count):
        wanted = "a job" if count is None else f"{count} job(s)"
        raise AssertionError(
            f"expected {wanted} of {name} {_describe(args, kwargs, queue, state)}, "
            f"found {len(matching)}; {_listing(name, jobs, state)}"
        )
    return matching


def assert_not_enqueued(
    task: Task[Any, Any] | str,
    args: Sequence[Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    *,
    queue: str | None = None,
    state: str | None = "PENDING",
    app: JobQueue | None = None,
) -> None:
    """Assert that no job of ``task`` with these arguments waits to run."""
    name, _ = _task(task, app)
    jobs = enqueued_jobs(task, queue=queue, state=state, app=app)
    matching = [job for job in jobs if _matches(job, args, kwargs)]
    if matching:
        raise AssertionError(
            f"expected no job of {name} {_describe(args, kwargs, queue, state)}, "
            f"found {len(matching)}; {_listing(name, matching, state)}"
        )


def _task(task: Task[Any, Any] | str, app: JobQueue | None) -> tuple[str, JobQueue]:
    if isinstance(task, str):
        if app is None:
            from ..current import current_app

            app = current_app()
        return task, app
    return task.name, app if app is not None else task.app


def _matches(job: Job, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None) -> bool:
    # As stored: a tuple is a list there, and so on.
    if args is not None and job.args != loads(dumps(list(args))):
        return False
    return kwargs is None or job.kwargs == loads(dumps(dict(kwargs)))


def _describe(
    args: Sequence[Any] | None,
    kwargs: Mapping[str, Any] | None,
    queue: str | None,
    state: str | None,
) -> str:
    parts = []
    if args is not None:
        parts.append(f"args={list(args)!r}")
    if kwargs is not None:
        parts.append(f"kwargs={dict(kwargs)!r}")
    if queue is not None:
        parts.append(f"queue={queue!r}")
    parts.append(f"state={state}" if state else "in any state")
    return "with " + ", ".join(parts)


def _listing(name: str, jobs: list[Job], state: str | None) -> str:
    where = f"{state} " if state else ""
    if not jobs:
        return f"there are no {where}jobs of {name}"
    lines = [
        f"  {job.id} queue={job.queue} state={job.state} args={job.args!r} kwargs={job.kwargs!r}"
        for job in jobs[:_SHOWN]
    ]
    more = f"\n  ... and {len(jobs) - _SHOWN} more" if len(jobs) > _SHOWN else ""
    return f"{where}jobs of {name}:\n" + "\n".join(lines) + more
