"""Execution pools: where a worker's claimed jobs run.

The contract (``Pool``) is small: ``submit`` never blocks the claim loop;
every submitted job is reported exactly once through ``report`` unless the
pool is ``kill``-ed first, in which case the worker releases what is left, or
taken back (``drain``, ``discard``) before it started. A job whose ``expires``
passed while it waited for a slot is reported expired (REVOKED), not run.

- ``threads`` (default): a thread per slot; ``async def`` tasks share one event
  loop thread. Soft limits and termination are delivered as exceptions at the
  task's next Python bytecode (or ``await``); a hard limit records the failure
  at once and abandons the thread, whose slot is refilled.
- ``processes``: a child process per slot (``spawn``), so hard limits,
  termination and fencing really stop the task; children are replaced after a
  crash, a kill and after ``max_tasks_per_child`` jobs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from ..job import Job
from ..outcome import Outcome

if TYPE_CHECKING:
    from ...app import JobQueue

Report = Callable[[Outcome], None]
Gate = Callable[[], bool]
POOLS = ("threads", "processes")


class Pool(Protocol):
    def start(self) -> None: ...

    def submit(self, job: Job) -> None: ...

    def submit_many(self, jobs: list[Job]) -> None:
        """A claim's jobs, in order (one wake-up for all of them)."""
        ...

    def drain(self) -> list[Job]:
        """Take back the submitted jobs not started yet (prefetched ones)."""
        ...

    def discard(self, job_id: str) -> Job | None:
        """Take back a submitted job that has not started yet (revoked while
        prefetched); None if it started or is unknown."""
        ...

    def terminate(self, job_id: str) -> bool:
        """Stop a running job (revoke with terminate); True if it was running here."""
        ...

    def fence(self) -> int:
        """The worker is fenced (its lease may have lapsed: its jobs may run
        elsewhere). Stop the running jobs where the pool can, each reported as
        lost; returns how many it stopped. What it cannot stop finishes, and
        the database refuses the outcome of a job that was rescued."""
        ...

    def close(self) -> None:
        """No more jobs: idle slots exit; running jobs finish and are reported."""
        ...

    def resize(self, delta: int) -> int:
        """Add (``delta`` > 0) or retire slots (never the last one): a retired
        slot leaves once its running job is reported. Returns the new size."""
        ...

    def running(self) -> list[tuple[Job, float]]:
        """The jobs running now, each with the time (``time.time()``) it started."""
        ...

    def reserved(self) -> list[Job]:
        """The jobs waiting for a free slot (prefetched), in order."""
        ...

    def processes(self) -> list[int]:
        """The pids of the pool's child processes (none for threads)."""
        ...

    def kill(self) -> None:
        """Stop everything now without reporting: the worker releases those jobs."""
        ...


def make_pool(
    kind: str,
    app: JobQueue,
    *,
    size: int,
    hostname: str,
    report: Report,
    max_tasks_per_child: int | None = None,
    may_start: Gate | None = None,
) -> Pool:
    """``may_start``: asked when a slot is about to start a job; False hands
    the job back unstarted (the worker is fenced: its lease may be lost)."""
    if kind == "threads":
        from .threads import ThreadPool

        return ThreadPool(app, size=size, hostname=hostname, report=report, may_start=may_start)
    if kind == "processes":
        from .processes import ProcessPool

        return ProcessPool(
            app,
            size=size,
            hostname=hostname,
            report=report,
            max_tasks_per_child=max_tasks_per_child,
            may_start=may_start,
        )
    raise ValueError(f"unknown pool {kind!r}; choose one of {', '.join(POOLS)}")
