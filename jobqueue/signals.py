"""Signals: Celery's names and keyword arguments, for receivers written for Celery.

A receiver written for Celery ports by changing its import::

    from jobqueue.signals import task_failure

    @task_failure.connect
    def report(sender=None, task_id=None, exception=None, **kwargs): ...

Receivers are called with keyword arguments only: ``sender=`` (what the
signal says below), ``signal=`` (the signal, as Celery passes it) and the
signal's own arguments; accept ``**kwargs``, so a signal can gain an argument
without breaking its receivers. ``connect(receiver, sender=None, weak=True,
dispatch_uid=None)`` works as Celery's does: bare, as a decorator, or as a
decorator with options (``@task_success.connect(sender=add)``); ``weak=True``
(the default) holds the receiver by a weak reference, so connect a function
defined inside another function with ``weak=False``.

The failure contract: a receiver that raises is logged (``jobqueue.signals``)
and skipped; the other receivers still run, and the job's outcome, the
enqueue and the worker are untouched. Signals are process-wide (not per app),
and sent in the process and thread where the thing happens: the producer's for
``*_publish``; the slot that runs the task for ``task_prerun``,
``task_postrun``, ``task_success``, ``task_failure``, ``task_retry`` (a worker
thread, or the pool child with ``--pool processes``, so connect receivers at
import of a module the app imports: children import the app); the worker
process for ``task_received``, ``task_revoked``, ``task_unknown`` and the
failures of jobs whose child was killed or died. With no receiver connected a
signal costs one attribute test where it would be sent: its arguments are not
even built.

Task signals (sender: the ``Task``, or None for a task the process does not know):

- ``before_task_publish(sender=task name, body, exchange, routing_key, headers,
  properties, declare, retry_policy)``: a job is about to be written (``delay``,
  ``apply_async``, ``send_task``, each step of a canvas, each beat tick, each
  job of ``enqueue_many``). ``body`` is Celery's ``(args, kwargs, embed)``;
  ``routing_key`` the queue; ``exchange`` is ""; ``headers`` holds the job's
  ``task``, ``id``, ``root_id`` and ``parent_id`` (read-only: the job's own),
  the ``headers=`` given to ``apply_async``, and whatever a receiver adds:
  those are stored with the job (JSON only) and reach the worker as
  ``self.request.headers``. ``properties`` (``correlation_id``, ``priority``),
  ``declare`` and ``retry_policy`` are there for Celery's receivers; changing
  them changes nothing.
- ``after_task_publish(sender=task name, body, exchange, routing_key, headers)``:
  the job was written (inside the caller's transaction with ``connection=``:
  it exists once that commits). A ``unique`` job that found its key held sends
  nothing; a canvas sends it for every step once the canvas is written.
- ``task_received(sender=worker, request)``: the worker claimed the job
  (``request``: a ``jobqueue.Request``).
- ``task_prerun(sender=task, task_id, task, args, kwargs)``: the task is about
  to run (``task.request`` is the job's).
- ``task_postrun(sender=task, task_id, task, args, kwargs, retval, state)``:
  the task returned or raised (``state``: SUCCESS, RETRY, FAILURE or REVOKED).
- ``task_success(sender=task, result, runtime)``.
- ``task_failure(sender=task, task_id, exception, args, kwargs, traceback,
  einfo)``: the job fails (no retry left, or not a retried error); also for a
  job whose child was killed at its hard time limit or died.
- ``task_retry(sender=task, request, reason, einfo)``: the job will run again.
- ``task_revoked(sender=task, request, terminated, signum, expired)``: revoked
  before it started, stopped by ``revoke(terminate=True)`` (``signum``: 9 for a
  killed child, None in the thread pool) or expired before it started.
- ``task_unknown(sender=None, name, id, message, exc)``: a job of a task this
  worker does not know fails (``TaskNotRegistered``) once its grace for a
  worker that knows it is over (``message``: the claimed job).

Worker and beat signals:

- ``worker_init(sender=worker)``: the worker is starting, before it registers.
- ``worker_ready(sender=worker)``: registered, about to claim.
- ``worker_process_init(sender=None)``: in each process pool child, once the
  app is loaded, before its first job.
- ``worker_process_shutdown(sender=None, pid, exitcode)``: in a child about to
  exit (not one killed: a hard time limit, a terminate, a fenced worker).
- ``worker_shutdown(sender=worker)``: the worker has settled its jobs and is
  about to exit (also on a cold shutdown).
- ``beat_init(sender=beat)``: a beat starts.
"""

from __future__ import annotations

import logging
import traceback as _traceback
import weakref
from collections.abc import Callable, Hashable, Mapping, Sequence
from types import TracebackType
from typing import Any

from blinker import ANY, NamedSignal
from blinker._utilities import make_id

from .options import MESSAGE_HEADERS
from .serialization import dumps

log = logging.getLogger(__name__)

Receiver = Callable[..., Any]


class Signal(NamedSignal):
    """A blinker signal with Celery's manners (see the module's docstring)."""

    def __init__(self, name: str, doc: str | None = None) -> None:
        super().__init__(name, doc)
        self._uids: dict[tuple[Hashable, Hashable], Hashable] = {}

    def connect(
        self,
        receiver: Receiver | None = None,
        sender: Any = None,
        weak: bool = True,
        dispatch_uid: Hashable | None = None,
    ) -> Any:
        """Connect ``receiver`` for ``sender`` (None: any sender). Without a
        receiver, a decorator. A second receiver under the same
        ``dispatch_uid`` and sender is ignored while the first is connected."""
        if receiver is None:
            return lambda fn: self.connect(fn, sender, weak, dispatch_uid)
        sender = ANY if sender is None else sender
        if dispatch_uid is not None:
            key = (dispatch_uid, make_id(sender))
            held = self._uids.get(key)
            if held is not None and held in self.receivers:
                return receiver
            self._uids[key] = make_id(receiver)
        return super().connect(receiver, sender, weak)

    def disconnect(
        self,
        receiver: Receiver | None = None,
        sender: Any = None,
        dispatch_uid: Hashable | None = None,
    ) -> None:
        sender = ANY if sender is None else sender
        if dispatch_uid is not None:
            receiver_id = self._uids.pop((dispatch_uid, make_id(sender)), None)
            target = self.receivers.get(receiver_id) if receiver_id is not None else None
            receiver = target() if isinstance(target, weakref.ref) else target
        if receiver is not None:
            super().disconnect(receiver, sender)

    def send(self, sender: Any = None, /, **arguments: Any) -> list[tuple[Receiver, Any]]:
        """Call every receiver for ``sender`` with keyword arguments; returns
        ``(receiver, return value or the exception it raised)`` pairs. Never
        raises what a receiver raises: it is logged, and the others run."""
        results: list[tuple[Receiver, Any]] = []
        if not self.receivers or self.is_muted:
            return results
        for receiver in self.receivers_for(sender):
            try:
                results.append((receiver, receiver(signal=self, sender=sender, **arguments)))
            except Exception as exc:
                log.exception("receiver %r of signal %s raised; ignored", receiver, self.name)
                results.append((receiver, exc))
        return results

    send_robust = send  # Celery's name for the same promise


class ExceptionInfo:
    """What ``einfo`` gives receivers: Celery's ``ExceptionInfo`` fields."""

    def __init__(self, exception: BaseException) -> None:
        self.exception = exception
        self.type: type[BaseException] = type(exception)
        self.tb: TracebackType | None = exception.__traceback__

    @property
    def exc_info(self) -> tuple[type[BaseException], BaseException, TracebackType | None]:
        return self.type, self.exception, self.tb

    @property
    def traceback(self) -> str:
        return "".join(_traceback.format_exception(self.type, self.exception, self.tb))

    def __str__(self) -> str:
        return self.traceback

    def __repr__(self) -> str:
        return f"<ExceptionInfo: {self.exception!r}>"


before_task_publish = Signal("before_task_publish", "A job is about to be written.")
after_task_publish = Signal("after_task_publish", "A job was written.")
task_received = Signal("task_received", "A worker claimed a job.")
task_prerun = Signal("task_prerun", "A task is about to run.")
task_postrun = Signal("task_postrun", "A task returned or raised.")
task_success = Signal("task_success", "A job succeeded.")
task_failure = Signal("task_failure", "A job failed, with no retry.")
task_retry = Signal("task_retry", "A job will run again.")
task_revoked = Signal("task_revoked", "A job was revoked, terminated or expired.")
task_unknown = Signal("task_unknown", "A job of a task the worker does not know failed.")
worker_init = Signal("worker_init", "A worker is starting.")
worker_ready = Signal("worker_ready", "A worker registered and is about to claim.")
worker_process_init = Signal("worker_process_init", "A process pool child started.")
worker_process_shutdown = Signal("worker_process_shutdown", "A pool child is about to exit.")
worker_shutdown = Signal("worker_shutdown", "A worker is about to exit.")
beat_init = Signal("beat_init", "A beat starts.")


# -- sending the publish signals (called by the enqueue paths: app, canvas, beat) --

#: Celery's body is ``(args, kwargs, embed)``; jobqueue keeps a canvas in the
#: database, so the embed is always empty.
_EMBED: dict[str, Any] = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def _message(
    task: str, job_id: str, root_id: str | None, parent_id: str | None, given: Any
) -> dict[str, Any]:
    return {"task": task, "id": job_id, "root_id": root_id, "parent_id": parent_id, **(given or {})}


def send_before_publish(
    task: str,
    job_id: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    queue: str,
    priority: int,
    headers: Mapping[str, Any] | None,
    root_id: str | None = None,
    parent_id: str | None = None,
) -> dict[str, Any] | None:
    """``before_task_publish`` for one job; returns the headers to store with
    it (those given and those receivers added, JSON only), None for none."""
    message = _message(task, job_id, root_id, parent_id, headers)
    if before_task_publish.receivers:
        before_task_publish.send(
            task,
            body=(list(args), dict(kwargs), dict(_EMBED)),
            exchange="",
            routing_key=queue,
            headers=message,
            properties={"correlation_id": job_id, "priority": priority},
            declare=[],
            retry_policy=None,
        )
    stored = {k: v for k, v in message.items() if k not in MESSAGE_HEADERS}
    return _json_only(task, job_id, stored) or None


def send_after_publish(
    task: str,
    job_id: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    queue: str,
    headers: Mapping[str, Any] | None,
    root_id: str | None = None,
    parent_id: str | None = None,
) -> None:
    after_task_publish.send(
        task,
        body=(list(args), dict(kwargs), dict(_EMBED)),
        exchange="",
        routing_key=queue,
        headers=_message(task, job_id, root_id, parent_id, headers),
    )


def _json_only(task: str, job_id: str, headers: dict[str, Any]) -> dict[str, Any]:
    """The headers a receiver left that can be stored: a name that is not a
    string or a value that is not JSON is logged and dropped, never fails the
    enqueue (the receiver's bug is not the job's)."""
    try:
        dumps(headers)
        return headers
    except (TypeError, ValueError, RecursionError):
        pass
    kept = {}
    for name, value in headers.items():
        try:
            if not isinstance(name, str):
                raise TypeError(f"header names must be strings, got {name!r}")
            dumps(value)
        except (TypeError, ValueError, RecursionError) as exc:
            log.error("header %r of job %s (%s) dropped: not JSON (%s)", name, job_id, task, exc)
        else:
            kept[name] = value
    return kept


__all__ = [
    "ExceptionInfo",
    "Signal",
    "after_task_publish",
    "beat_init",
    "before_task_publish",
    "task_failure",
    "task_postrun",
    "task_prerun",
    "task_received",
    "task_retry",
    "task_revoked",
    "task_success",
    "task_unknown",
    "worker_init",
    "worker_process_init",
    "worker_process_shutdown",
    "worker_ready",
    "worker_shutdown",
]
