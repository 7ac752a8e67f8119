"""A worker: claim -> execute (in a pool) -> complete, kept alive by a heartbeat.

- ``runner``: the Worker, its life cycle and its threads (claim loop,
  listener, completer, heartbeat);
- ``settings``: a worker's own options (``WorkerSettings``), read by the CLI;
- ``completer``: the thread that records outcomes in batches;
- ``waiting``: when enqueues must wake this worker (conditional NOTIFY);
- ``executor``: running one claimed job, pure (returns an ``Outcome``);
- ``pools``: where jobs run (a thread or a child process per slot);
- ``recording``: writing a batch of outcomes, and what happens when the
  database refuses one.

Maintenance that any worker may run for everyone (rescue, retention, vacuum)
lives in ``jobqueue.maintenance``.
"""

from .runner import Worker
from .settings import WorkerSettings

__all__ = ["Worker", "WorkerSettings"]
