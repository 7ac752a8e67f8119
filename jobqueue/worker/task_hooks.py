"""A Task subclass's hooks, called around each attempt in the process that runs it.

As Celery calls them: ``before_start`` just before the task runs; then
``on_success``, ``on_retry`` or ``on_failure`` with how the attempt ended;
then ``after_return``. A hook that raises is logged with the job's id and
ignored: the job's outcome is the task's, never a hook's. Only the hooks a
task's class overrides are called (a plain ``@app.task`` has none: nothing is
done per job). Attempts that end outside the task's process (its worker lost,
killed at its hard time limit, revoked before it started) call no hook.
"""

from __future__ import annotations

import logging
from typing import Any

from .. import states
from ..request import Request
from ..signals import ExceptionInfo
from ..tasks import Task

log = logging.getLogger("jobqueue.task")


def before(task: Task[Any, Any], request: Request) -> None:
    if "before_start" in task._hooks:
        _call(task, request, "before_start", request.id, request.args, request.kwargs)


def after(
    task: Task[Any, Any], request: Request, state: str, value: Any, exc: BaseException | None
) -> None:
    """The hooks of an attempt that ended in ``state``, with its return value
    (SUCCESS) or what it raised."""
    hooks = task._hooks
    job_id, args, kwargs = request.id, request.args, request.kwargs
    einfo = None if exc is None else ExceptionInfo(exc)
    if state == states.SUCCESS:
        if "on_success" in hooks:
            _call(task, request, "on_success", value, job_id, args, kwargs)
    elif state == states.RETRY:
        if "on_retry" in hooks:
            _call(task, request, "on_retry", exc, job_id, args, kwargs, einfo)
    elif state == states.FAILURE and "on_failure" in hooks:
        _call(task, request, "on_failure", exc, job_id, args, kwargs, einfo)
    if "after_return" in hooks:
        retval = value if exc is None else exc
        _call(task, request, "after_return", state, retval, job_id, args, kwargs, einfo)


def _call(task: Task[Any, Any], request: Request, hook: str, *args: Any) -> None:
    try:
        getattr(task, hook)(*args)
    except Exception as exc:
        log.error(
            "Task %s[%s] %s raised %s: %s (ignored: the job's outcome stands)",
            task.name,
            request.id,
            hook,
            type(exc).__name__,
            exc,
            exc_info=exc,
            extra={"job_id": request.id, "task": task.name, "hook": hook},
        )
