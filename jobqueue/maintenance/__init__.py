"""Maintenance: the work that keeps the tables healthy, apart from running jobs.

Each step is one small object with a ``name`` and ``run(conn)``, run on a
worker's heartbeat session (``Maintenance.run``). None of them depends on the
worker that runs it: any live worker may take any step, and steps never wait
on each other (SKIP LOCKED, try-locks), so several workers running them at
once is safe. That is also where a single maintenance leader plugs in: run
the steps on one worker only.

- ``Rescue``: jobs of workers whose lease expired go back to their queue;
- ``Partitions``: the history partitions of the coming days are created;
- ``Retention``: finished jobs and bookkeeping past their age are deleted
  (whole partitions where every job in them expired);
- ``Vacuum``: the tables on the claim path are vacuumed and analyzed;
- ``MetricsFold``: the metric counters of closed sessions are folded into one;
- ``Dependencies``: finished dependencies the completions missed are counted;
- ``Batches``: finished batch members the completions missed are counted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import psycopg

from ..db import transient
from .batches import Batches
from .dependencies import Dependencies
from .metrics import MetricsFold
from .partitions import Partitions
from .rescue import Rescue
from .retention import Retention
from .vacuum import Vacuum

if TYPE_CHECKING:
    from ..app import JobQueue

log = logging.getLogger(__name__)


class Step(Protocol):
    name: str

    def run(self, conn: psycopg.Connection[Any]) -> None: ...


class Maintenance:
    """The steps, run in order; one failing never stops the others (nor the
    heartbeat that runs them: that would get a live worker's jobs rescued)."""

    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = list(steps)

    @classmethod
    def for_app(cls, app: JobQueue) -> Maintenance:
        return cls(
            [
                Rescue(app.store),
                Partitions(app.store),
                Retention(app.store, app.conf),
                Vacuum(app.store),
                MetricsFold(app.store),
                Dependencies(app.store),
                Batches(app.store),
            ]
        )

    def run(self, conn: psycopg.Connection[Any]) -> None:
        """Transient errors (the connection) propagate: the caller reconnects."""
        for step in self.steps:
            try:
                step.run(conn)
            except psycopg.Error as exc:
                if transient(exc):
                    raise
                log.exception("maintenance step %s failed; the others go on", step.name)


__all__ = [
    "Batches",
    "Dependencies",
    "Maintenance",
    "MetricsFold",
    "Partitions",
    "Rescue",
    "Retention",
    "Step",
    "Vacuum",
]
