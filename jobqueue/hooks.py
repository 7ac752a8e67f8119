"""Hooks: the few points where a job's state really changes, for subscribers.

Events, metrics and framework integrations subscribe here instead of being
written into the enqueue path, the executor or the worker. Celery's signals
(``jobqueue.signals``: process-wide, Celery's arguments) are sent beside
these hooks, from the same places, and from the executor for each run.
Each app has its own registry (``app.hooks``); every hook is called with
keyword arguments only, so a hook can gain an argument without breaking its
subscribers (accept ``**kwargs``).

- ``before_publish(spec)``: a job's options are resolved (``options.JobSpec``)
  and it is about to be written: ``delay``/``apply_async``/``send_task``,
  each canvas step, each beat tick;
- ``before_publish_many(task, ids, queue)``: ``enqueue_many`` is about to
  write its jobs;
- ``worker_ready(worker)``: a worker has registered and is about to claim;
- ``outcomes_recorded(worker, outcomes)``: the completer committed a batch of
  outcomes (``worker.outcome.Outcome``);
- ``worker_stopped(worker)``: a worker has settled its jobs and unregistered.

A subscriber that raises is logged and skipped: a hook never stops a job or
a worker. With no subscriber, emitting a hook costs one dict lookup.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

HOOKS = (
    "before_publish",
    "before_publish_many",
    "worker_ready",
    "outcomes_recorded",
    "worker_stopped",
)

Subscriber = Callable[..., object]


class Hooks:
    def __init__(self) -> None:
        self._subscribers: dict[str, list[Subscriber]] = {}

    def connect(self, hook: str, subscriber: Subscriber | None = None) -> Any:
        """Subscribe to ``hook``: ``app.hooks.connect("worker_ready", fn)``, or
        as a decorator, ``@app.hooks.connect("worker_ready")``."""
        if hook not in HOOKS:
            raise ValueError(f"unknown hook {hook!r}; hooks: {', '.join(HOOKS)}")

        def add(fn: Subscriber) -> Subscriber:
            self._subscribers[hook] = [*self._subscribers.get(hook, ()), fn]
            return fn

        return add(subscriber) if subscriber is not None else add

    def disconnect(self, hook: str, subscriber: Subscriber) -> None:
        self._subscribers[hook] = [s for s in self._subscribers.get(hook, ()) if s != subscriber]

    def wanted(self, hook: str) -> bool:
        """Whether anyone listens (to skip building costly arguments)."""
        return bool(self._subscribers.get(hook))

    def emit(self, hook: str, **arguments: Any) -> None:
        for subscriber in self._subscribers.get(hook, ()):
            try:
                subscriber(**arguments)
            except Exception:
                log.exception("subscriber %r of hook %s failed", subscriber, hook)
