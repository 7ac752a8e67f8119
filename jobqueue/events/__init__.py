"""Events, Celery-style: a live stream of what happens to jobs and workers
(``app.events``, ``jobqueue events``; see docs/operations.md, "Events").

A surface over the core: the statements that report events are in
``sql/queries.sql`` (``events_wanted``, ``events_notify``), and they send
nothing unless a listener holds the events lock, so the core pays about a
microsecond per statement for this package when nobody listens. The core
imports it only lazily (``JobQueue.events``, the CLI).
"""

from .hints import MISSED, TASK_TYPES, TYPES, WORKER_TYPES
from .reading import Event
from .stream import Events, EventStream, Receiver

__all__ = [
    "MISSED",
    "TASK_TYPES",
    "TYPES",
    "WORKER_TYPES",
    "Event",
    "EventStream",
    "Events",
    "Receiver",
]
