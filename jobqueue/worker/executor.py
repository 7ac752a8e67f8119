"""Running one claimed job: resolve the task, call it, normalise the outcome.

This step never touches the database: it returns an ``Outcome`` that the
completer records. A straight pipeline: resolve → run → decide (success,
retry, failure) → encode. Pools call ``execute`` and, when they stop a job
themselves (time limit, crashed child, revocation), build the outcome with
``failed`` / ``lost`` / ``revoked`` so one policy applies everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .. import signals, states
from ..exceptions import (
    MalformedJob,
    Reject,
    Replaced,
    Retry,
    Snooze,
    TaskNotRegistered,
    TaskRevokedError,
    Terminated,
    WorkerLostError,
)
from ..request import Request
from ..serialization import (
    TAG,
    dump_error,
    dump_replaced,
    dump_result,
    dumps,
    error_text,
    revive_arguments,
)
from ..tasks import Task
from . import atomic, task_hooks
from .job import Job
from .outcome import Outcome, _outcome

if TYPE_CHECKING:
    from ..app import JobQueue

JOB_LOGGER = "jobqueue.task"  # the per-job lines' logger
log = logging.getLogger(JOB_LOGGER)

AsyncRunner = Callable[[Coroutine[Any, Any, Any]], Any]

# The run's signals, looked up once: execute() tests them for every job.
_PRERUN, _POSTRUN = signals.task_prerun, signals.task_postrun
_SUCCESS, _FAILURE, _RETRY = signals.task_success, signals.task_failure, signals.task_retry

# A retry further away than this is a bug in the task, not a schedule: PostgreSQL
# cannot store a timestamp ~290,000 years ahead, and JSON has no infinity.
MAX_RETRY_DELAY = 100 * 365.25 * 86400.0


def _say(
    level: int,
    job: Job,
    state: str,
    message: str,
    *args: Any,
    duration: float | None = None,
    exc: BaseException | None = None,
    exc_info: Any = None,
) -> None:
    """A per-job log line, "Task add[<id>] <message>": its text says what
    happened, its fields say to which job (keys of a JSON log line; see
    docs/operations.md, Logging): job_id, task, queue, attempt, state,
    duration (seconds, None when the job did not run) and exception."""
    if not log.isEnabledFor(level):
        return
    fields = {
        "job_id": job.id,
        "task": job.task,
        "queue": job.queue,
        "attempt": job.attempt,
        "state": state,
        "duration": None if duration is None else round(duration, 6),
        "exception": None if exc is None else type(exc).__name__,
    }
    log.log(
        level,
        "Task %s[%s] " + message,
        job.task,
        job.id,
        *args,
        extra=fields,
        exc_info=exc_info,
        stacklevel=2,
    )


def execute(
    app: JobQueue, job: Job, hostname: str, run_async: AsyncRunner = asyncio.run
) -> Outcome:
    """Run one job's task here (a pool's slot); the signals of its run are sent
    here too, with its request pushed: task_prerun, then task_success,
    task_retry or task_failure, then task_postrun."""
    return run_attempt(app, job, hostname, run_async)[0]


def run_attempt(
    app: JobQueue, job: Job, hostname: str, run_async: AsyncRunner = asyncio.run
) -> tuple[Outcome, Any, BaseException | None]:
    """``execute``, also returning the task's return value and what it raised
    (eager mode, jobqueue.eager, keeps them for its results)."""
    task = app.tasks.get(job.task)
    if task is None:
        return unknown_task(app, job), None, None
    try:
        request = make_request(job, task, hostname)
    except MalformedJob as bad:  # the pools check first (precheck); a direct call may not
        return malformed(job, bad), None, bad
    task._push_request(request)
    try:
        if _PRERUN.receivers:
            _PRERUN.send(task, task_id=job.id, task=task, args=request.args, kwargs=request.kwargs)
        hooked = task._hooks  # a Task subclass's (empty for a plain @app.task)
        if hooked:
            task_hooks.before(task, request)
        if task.atomic:
            outcome, value, exc = atomic.run(
                app,
                task,
                job,
                request,
                lambda: _run(task, job, request.args, request.kwargs, run_async),
            )
        else:
            outcome, value, exc = _run(task, job, request.args, request.kwargs, run_async)
        if hooked:
            task_hooks.after(task, request, outcome.state, value, exc)
        # Nobody listening (the usual case): four dict tests, no call.
        if _SUCCESS.receivers or _FAILURE.receivers or _RETRY.receivers or _POSTRUN.receivers:
            if isinstance(exc, Terminated):  # stopped by the pool, which sent task_revoked
                _send_postrun(task, job, exc, states.REVOKED)
            else:
                send_outcome(task, job, request, outcome, exc, value)
                _send_postrun(task, job, value if exc is None else exc, outcome.state)
        return outcome, value, exc
    finally:
        task._push_request(None)


def make_request(job: Job, task: Task[Any, Any] | None, hostname: str | None) -> Request:
    """What a running task knows of its job (``self.request``); ``MalformedJob``
    if its payload cannot be decoded."""
    args, kwargs, options = job._decode()
    if task is not None and TAG in job.payload:  # a result or signature given on (tagged)
        args = revive_arguments(args, task.app)
    soft, hard = job.limits(task)
    return Request(
        id=job.id,
        task=job.task,
        args=args,
        kwargs=kwargs,
        retries=job.retries,
        eta=job.run_at,
        hostname=hostname,
        queue=job.queue,
        root_id=job.root_id or job.id,
        parent_id=job.parent_id,
        soft_time_limit=soft,
        time_limit=hard,
        headers=options.get("headers"),
        attempt=job.attempt,
        priority=job.priority,
        is_eager=job.eager,
        chord=options.get("chord"),
    )


def _run(
    task: Task[Any, Any],
    job: Job,
    args: list[Any],
    kwargs: dict[str, Any],
    run_async: AsyncRunner,
) -> tuple[Outcome, Any, BaseException | None]:
    """Call the task: its outcome, its return value and what it raised."""
    started = time.perf_counter()
    try:
        value = task.fn(task, *args, **kwargs) if task.bind else task.fn(*args, **kwargs)
        if task.is_async:
            value = run_async(value)
    except Retry as retry:
        _say(
            logging.INFO,
            job,
            states.RETRY,
            "retry in %.1fs: %s",
            retry.countdown or 0,
            "requested" if retry.exc is None else _brief(retry.exc),
            duration=time.perf_counter() - started,
            exc=retry.exc or retry,
        )
        reason = retry.exc or retry
        return retry_outcome(job, reason, retry.countdown or 0.0), None, reason
    except Reject as reject:
        return rejected(task, job, reject, time.perf_counter() - started), None, reject
    except Snooze as snooze:
        return snoozed(job, snooze, time.perf_counter() - started), None, None
    except Replaced as replaced:
        return replaced_outcome(task, job, replaced, time.perf_counter() - started)
    except BaseException as exc:  # SystemExit & co. raised by a task fail its job, not the slot
        return failed(task, job, exc, time.perf_counter() - started), None, exc

    if type(value) is Snooze:  # `return Snooze(seconds)`
        return snoozed(job, value, time.perf_counter() - started), None, None
    options = job.options
    ignore = options.get("ignore_result")  # apply_async(ignore_result=...)
    # What follows in a workflow (a link, a chord's body) is given the stored
    # result: a step keeps it whatever it says, as Celery passes it on.
    if (task.ignore_result if ignore is None else ignore) and not (
        job.in_canvas and ("link" in options or "chord" in options)
    ):
        encoded = None
    else:
        try:
            encoded = dump_result(value)  # AsyncResults and signatures too, tagged
        except (TypeError, ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
            error = TypeError(
                f"result of task {job.task!r} is not JSON serializable: "
                f"{type(value).__name__} ({exc})"
            )
            elapsed = time.perf_counter() - started
            _say(logging.ERROR, job, states.FAILURE, "%s", error, duration=elapsed, exc=error)
            return _outcome(job, states.FAILURE, error=dump_error(error)), value, error
    runtime = time.perf_counter() - started
    _say(logging.INFO, job, states.SUCCESS, "succeeded in %.4fs", runtime, duration=runtime)
    return _outcome(job, states.SUCCESS, result=encoded, runtime=runtime), value, None


def replaced_outcome(
    task: Task[Any, Any], job: Job, replaced: Replaced, elapsed: float
) -> tuple[Outcome, Any, BaseException | None]:
    """The task called ``self.replace(sig)``: SUCCESS, its result a pointer to
    the replacement (``{"__jobqueue__": "replaced", "by": ...}``), which the
    completer writes in the same transaction (job_replace). A replacement
    that cannot be built fails the job."""
    from ..freezer import freeze_replacement

    try:
        params, result = freeze_replacement(
            task.app,
            replaced.sig,
            job.id,
            job.root_id or job.id,
            job.options,
            job.membership,
            job.eager,
        )
        encoded = dump_replaced(result)
    except Exception as exc:  # not JSON, an unknown option, the database away
        _say(
            logging.ERROR, job, states.FAILURE, "replace failed: %s", exc, duration=elapsed, exc=exc
        )
        return _outcome(job, states.FAILURE, error=dump_error(exc)), None, exc
    _say(logging.INFO, job, states.SUCCESS, "replaced by %s", result.id, duration=elapsed)
    outcome = _outcome(job, states.SUCCESS, result=encoded, runtime=elapsed, replacement=params)
    return outcome, result, None


# -- signals of an attempt's end ------------------------------------------------------


def send_outcome(
    task: Task[Any, Any] | None,
    job: Job,
    request: Request | None,
    outcome: Outcome,
    exc: BaseException | None,
    value: Any = None,
) -> None:
    """task_success, task_retry or task_failure for ``outcome``, each only if
    someone listens (the arguments are not built otherwise)."""
    state = outcome.state
    if state == states.SUCCESS:
        if signals.task_success.receivers:
            signals.task_success.send(task, result=value, runtime=outcome.runtime)
    elif state == states.RETRY:
        if signals.task_retry.receivers:
            signals.task_retry.send(
                task,
                request=request or _request(job, task),
                reason=exc,
                einfo=None if exc is None else signals.ExceptionInfo(exc),
            )
    elif state == states.FAILURE and signals.task_failure.receivers:
        args, kwargs = _arguments(job)
        signals.task_failure.send(
            task,
            task_id=job.id,
            exception=exc,
            args=args,
            kwargs=kwargs,
            traceback=None if exc is None else exc.__traceback__,
            einfo=None if exc is None else signals.ExceptionInfo(exc),
        )


def _send_postrun(task: Task[Any, Any], job: Job, retval: Any, state: str) -> None:
    if signals.task_postrun.receivers:
        signals.task_postrun.send(
            task,
            task_id=job.id,
            task=task,
            args=job.args,
            kwargs=job.kwargs,
            retval=retval,
            state=state,
        )


def _arguments(job: Job) -> tuple[list[Any], dict[str, Any]]:
    try:
        return job.args, job.kwargs
    except MalformedJob:
        return [], {}


def _request(job: Job, task: Task[Any, Any] | None, hostname: str | None = None) -> Request:
    """The request of a job that is not running here (revoked, lost...):
    without its arguments if they cannot be decoded."""
    try:
        return make_request(job, task, hostname)
    except MalformedJob:
        return Request(id=job.id, task=job.task, args=[], kwargs={}, attempt=job.attempt)


def _brief(exc: BaseException) -> str:
    """The exception's message for a log line: never raises, at most ~1,000 characters."""
    text = error_text(exc)
    return text if len(text) <= 1000 else f"{text[:1000]}… ({len(text)} characters)"


#: Not a job state: the outcome of a job handed back unrun (``unknown_task``).
HANDED_BACK = "RELEASED"
#: Seconds before a handed-back job is due again: long enough that the worker
#: that handed it back does not take it again at once, short enough that a
#: worker that knows the task soon does.
HANDBACK_DELAY = 5.0


def unknown_task(app: JobQueue, job: Job) -> Outcome:
    """A job of a task this worker does not know. During a rolling deploy a
    worker of the previous release may claim a task only the new release
    knows: hand it back, unrun and uncounted, for a worker that knows it,
    until ``app.conf.unknown_task_grace`` seconds after it was enqueued; then
    fail it (``TaskNotRegistered``)."""
    grace = app.conf.unknown_task_grace
    if job.age is not None and job.age < grace:
        _say(
            logging.WARNING,
            job,
            HANDED_BACK,
            "is not registered in this worker: handed back for a worker that "
            "knows it (%.0fs of its %.0fs grace left)",
            grace - job.age,
            grace,
        )
        return _outcome(job, HANDED_BACK, delay=HANDBACK_DELAY, unknown_task=job.task)
    exc = TaskNotRegistered(
        f"task {job.task!r} is not registered in this worker (app {app!r}), and no worker "
        f"that knows it took the job within {grace:.0f}s of its enqueue "
        "(app.conf.unknown_task_grace); is the module that defines it imported by the "
        "app given to -A?"
    )
    _say(logging.ERROR, job, states.FAILURE, "is not registered in this worker", exc=exc)
    if signals.task_unknown.receivers:
        signals.task_unknown.send(None, name=job.task, id=job.id, message=job, exc=exc)
    return _outcome(job, states.FAILURE, error=dump_error(exc))


def failed(
    task: Task[Any, Any] | None, job: Job, exc: BaseException, elapsed: float | None = None
) -> Outcome:
    """The attempt raised ``exc``: retry if the task auto-retries it and has
    retries left, else the job fails with it."""
    after = "" if elapsed is None else f" (after {elapsed:.3f}s)"
    if task is not None and task.policy.autoretries(exc) and not task.policy.exhausted(job.retries):
        try:
            delay = task.policy.countdown(job.retries, exc)
        except ValueError as bad:  # a retry_backoff function that failed
            _say(logging.ERROR, job, states.FAILURE, "%s", bad, duration=elapsed, exc=bad)
            return _outcome(job, states.FAILURE, error=dump_error(bad))
        _say(
            logging.WARNING,
            job,
            states.RETRY,
            "raised %s: %s%s; retry %d in %.1fs",
            type(exc).__name__,
            _brief(exc),
            after,
            job.attempt,
            delay,
            duration=elapsed,
            exc=exc,
        )
        return retry_outcome(job, exc, delay)
    _say(
        logging.ERROR,
        job,
        states.FAILURE,
        "raised %s: %s%s",
        type(exc).__name__,
        _brief(exc),
        after,
        duration=elapsed,
        exc=exc,
        exc_info=exc if log.isEnabledFor(logging.DEBUG) else None,
    )
    return _outcome(job, states.FAILURE, error=dump_error(exc))


def rejected(task: Task[Any, Any], job: Job, reject: Reject, elapsed: float) -> Outcome:
    """The task raised ``Reject``: back to the queue now if it asked to be
    requeued and has retries left (as a lost job), else FAILURE with the
    Reject, never autoretried."""
    if reject.requeue and not task.policy.exhausted(job.retries):
        _say(logging.WARNING, job, states.RETRY, "%s; back to the queue", reject,
             duration=elapsed, exc=reject)  # fmt: skip
        return _outcome(job, states.RETRY, error=dump_error(reject), delay=0.0)
    _say(logging.ERROR, job, states.FAILURE, "%s", reject, duration=elapsed, exc=reject)
    return _outcome(job, states.FAILURE, error=dump_error(reject))


SNOOZED = "SNOOZED"  # an outcome (job_complete_many): back to the queue, no retry used


def snoozed(job: Job, snooze: Snooze, elapsed: float) -> Outcome:
    """``self.snooze(seconds)``: the job waits ``seconds`` and runs again; its
    retries are untouched (the run is kept in its history as SNOOZED). A
    delay that cannot be stored fails the job, naming it."""
    outcome = retry_outcome(job, snooze, snooze.seconds, what="snooze")
    if outcome.state != states.RETRY:
        return outcome
    _say(logging.INFO, job, SNOOZED, "snoozed for %.1fs", outcome.delay or 0.0, duration=elapsed)
    outcome.state = SNOOZED
    return outcome


def retry_outcome(job: Job, exc: BaseException, delay: float, what: str = "retry") -> Outcome:
    """Another attempt in ``delay`` seconds, or a failure naming the delay when
    it cannot be stored (not a finite number of seconds within MAX_RETRY_DELAY)."""
    try:
        seconds = float(delay)
    except (TypeError, ValueError):
        seconds = math.nan
    if not 0 <= seconds <= MAX_RETRY_DELAY:  # also false for NaN
        if math.isfinite(seconds) and seconds < 0:
            seconds = 0.0  # "in the past" means now, as for an ETA already passed
        else:
            error = ValueError(
                f"{what} of task {job.task!r} asked for a delay of {delay!r} seconds; "
                f"a {what} delay must be a finite number of seconds up to {MAX_RETRY_DELAY:.0f}"
            )
            _say(logging.ERROR, job, states.FAILURE, "%s", error, exc=error)
            return _outcome(job, states.FAILURE, error=dump_error(error))
    return _outcome(job, states.RETRY, error=dump_error(exc), delay=seconds)


def lost(task: Task[Any, Any] | None, job: Job, reason: str, *, signal: bool = True) -> Outcome:
    """The process running the attempt died: back to the queue (the attempt
    counts) unless the task says ``reject_on_worker_lost=False`` or has no
    retries left. The same rule as the SQL lease rescue. ``signal``: send its
    task_retry or task_failure from here (its process is gone)."""
    exc = WorkerLostError(reason)
    requeue = task is None or task.reject_on_worker_lost
    if requeue and not (task is not None and task.policy.exhausted(job.retries)):
        _say(logging.WARNING, job, states.RETRY, "lost (%s); back to the queue", reason, exc=exc)
        outcome = _outcome(job, states.RETRY, error=dump_error(exc), delay=0.0)
    else:
        _say(logging.ERROR, job, states.FAILURE, "lost (%s)", reason, exc=exc)
        outcome = _outcome(job, states.FAILURE, error=dump_error(exc))
    if signal:
        send_outcome(task, job, None, outcome, exc)  # its process is gone: sent from here
    return outcome


def killed(task: Task[Any, Any] | None, job: Job, exc: BaseException) -> Outcome:
    """The job's process was killed at its hard time limit: ``failed``, with
    its task_failure (or task_retry) sent from here, as its process cannot."""
    outcome = failed(task, job, exc)
    send_outcome(task, job, None, outcome, exc)
    return outcome


def expired(job: Job, task: Task[Any, Any] | None = None) -> Outcome:
    """Claimed past its ``expires``: recorded REVOKED without running."""
    _say(logging.INFO, job, states.REVOKED, "expired before it started")
    _send_revoked(task, job, terminated=False, signum=None, expired=True)
    error = dump_error(TaskRevokedError("expired before it started"))
    return _outcome(job, states.REVOKED, error=error)


def revoked(
    job: Job, exc: BaseException, task: Task[Any, Any] | None = None, signum: int | None = None
) -> Outcome:
    """Revoked: before it started (``TaskRevokedError``), or stopped while it
    ran (``Terminated``; ``signum``: the signal that killed its process)."""
    _say(logging.WARNING, job, states.REVOKED, "terminated: %s", exc, exc=exc)
    terminated = isinstance(exc, Terminated)
    _send_revoked(task, job, terminated=terminated, signum=signum, expired=False)
    return _outcome(job, states.REVOKED, error=dump_error(exc))


def _send_revoked(
    task: Task[Any, Any] | None, job: Job, *, terminated: bool, signum: int | None, expired: bool
) -> None:
    if signals.task_revoked.receivers:
        signals.task_revoked.send(
            task,
            request=_request(job, task),
            terminated=terminated,
            signum=signum,
            expired=expired,
        )


def malformed(job: Job, exc: MalformedJob) -> Outcome:
    """No attempt could run the job: FAILURE now, never a retry."""
    _say(logging.ERROR, job, states.FAILURE, "%s", exc, exc=exc)
    return _outcome(job, states.FAILURE, error=dump_error(exc))


def precheck(
    job: Job, may_start: Callable[[], bool] | None = None, task: Task[Any, Any] | None = None
) -> Outcome | None:
    """What a slot reports instead of running ``job``, checked first when it
    starts the job: handed back unstarted if the worker is fenced (its lease
    may be lost: the job may run elsewhere), REVOKED if it expired while it
    waited in the pool, FAILURE if its payload is malformed. None: run it."""
    if may_start is not None and not may_start():
        _say(logging.WARNING, job, HANDED_BACK, "not started: this worker is fenced")
        return _outcome(job, HANDED_BACK, delay=0.0)
    if job.has_expired():
        return expired(job, task)
    try:
        job._decode()
    except MalformedJob as exc:
        return malformed(job, exc)
    return None


def unstarted(job: Job, why: str) -> Outcome:
    """Handed back without running, to be claimed again at once: a job a
    process-pool child held next when the child was stopped (``why``)."""
    _say(logging.INFO, job, HANDED_BACK, "not started: %s", why)
    return _outcome(job, HANDED_BACK, delay=0.0)


def broken(job: Job, exc: BaseException) -> Outcome:
    """The safety net of the pools: ``exc`` was raised around the job, outside
    the task (a bug, an exception that cannot even be described...). The job
    fails with it, without retries, and the slot goes on. Never raises."""
    with contextlib.suppress(BaseException):  # logging must not stop the outcome
        _say(logging.ERROR, job, states.FAILURE, "failed in its pool slot", exc=exc, exc_info=exc)
    try:
        error = dump_error(exc)
    except BaseException:
        error = _bare_error(exc)
    return _outcome(job, states.FAILURE, error=error)


def _bare_error(exc: BaseException) -> str:
    """An error naming only the exception's type, for when nothing more can be had."""
    try:
        cls = type(exc)
        name, module = str(cls.__qualname__), str(cls.__module__)
    except BaseException:
        name, module = "BaseException", "builtins"
    message = "(the error raised could not be described)"
    fields = {"type": name, "module": module, "message": message, "args": None, "traceback": None}
    return dumps(fields)
