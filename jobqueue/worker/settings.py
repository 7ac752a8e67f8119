"""A worker's own options, in one object the CLI and ``Worker`` both read.

What every process of an app shares (poll interval default, heartbeat
interval, lease TTL, batch sizes) stays in ``app.conf``; what one worker
chooses at start (its queues, its slots, its pool) is here.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..options import check_queue
from .pools import POOLS

if TYPE_CHECKING:
    from ..app import JobQueue


#: Jobs a worker holds at most, as a multiple of its slots, unless told otherwise.
DEFAULT_PREFETCH_MULTIPLIER = 128


@dataclass(frozen=True)
class WorkerSettings:
    #: Queues to claim from, in this order of preference; none: app.conf.default_queue.
    queues: tuple[str, ...] = ()
    #: Slots (threads or child processes); None: app.conf.worker_concurrency,
    #: else 4 per CPU, at most 32.
    concurrency: int | None = None
    #: Seconds between polls when no NOTIFY arrives; None: app.conf.poll_interval.
    poll_interval: float | None = None
    #: The worker's name in logs and in ``workers``; None: jobqueue@<host name>.
    hostname: str | None = None
    #: "threads" or "processes" (docs/reliability.md, pools).
    pool: str = "threads"
    #: Process pool: replace a child after this many jobs (None: never).
    max_tasks_per_child: int | None = None
    #: Warm shutdown: seconds running jobs get to finish before they are released.
    shutdown_timeout: float = 30.0
    #: At most this many times ``concurrency`` jobs held at once (claimed ahead);
    #: None: app.conf.worker_prefetch_multiplier, else DEFAULT_PREFETCH_MULTIPLIER.
    prefetch_multiplier: int | None = None
    #: A file the worker creates once ready and touches at every heartbeat that
    #: got through; it stops touching it while fenced and removes it at exit.
    #: Liveness: its age under lease_ttl (docs/deployment.md, Kubernetes).
    health_file: str | None = None
    #: Stop (warm) once nothing is running and a claim finds nothing due: what
    #: was enqueued has run, and what it caused too (RQ's burst mode; the
    #: drain() of jobqueue.testing). Jobs due later (countdown, retries) stay.
    until_empty: bool = False

    def with_options(self, **options: Any) -> WorkerSettings:
        """A copy with ``options`` set (None leaves a setting as it is)."""
        given = {k: v for k, v in options.items() if v is not None}
        if "queues" in given:
            given["queues"] = tuple(given["queues"])
        return replace(self, **given)

    def resolve(self, app: JobQueue) -> WorkerSettings:
        """Every default filled in: a value given here (the CLI's flags) wins
        over the app's setting (``app.conf.worker_*``), which wins over the
        built-in default. Every value checked."""
        conf = app.conf
        concurrency = self.concurrency
        if concurrency is None:
            concurrency = conf.worker_concurrency or min(32, (os.cpu_count() or 1) * 4)
        prefetch = self.prefetch_multiplier
        if prefetch is None:
            prefetch = conf.worker_prefetch_multiplier or DEFAULT_PREFETCH_MULTIPLIER
        resolved = replace(
            self,
            queues=tuple(dict.fromkeys(self.queues or (app.conf.default_queue,))),
            concurrency=concurrency,
            prefetch_multiplier=prefetch,
            poll_interval=self.poll_interval if self.poll_interval else app.conf.poll_interval,
            hostname=self.hostname or f"jobqueue@{socket.gethostname()}",
        )
        resolved.check()
        return resolved

    def check(self) -> None:
        for queue in self.queues:
            check_queue(queue, "a worker's queue")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.poll_interval is not None and self.poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {self.poll_interval}")
        if self.prefetch_multiplier is not None and self.prefetch_multiplier < 1:
            raise ValueError(
                f"prefetch_multiplier must be at least 1, got {self.prefetch_multiplier}"
            )
        if self.pool not in POOLS:
            raise ValueError(f"unknown pool {self.pool!r}; choose one of {', '.join(POOLS)}")
        if self.max_tasks_per_child is not None and self.pool != "processes":
            raise ValueError("only the process pool replaces children (max_tasks_per_child)")
        if self.shutdown_timeout < 0:
            raise ValueError(f"shutdown_timeout must not be negative, got {self.shutdown_timeout}")
