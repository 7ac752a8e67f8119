"""The jobqueue benchmark app (``-A benchmarks.peers.jobqueue_app:app``).

The worker gets its DSN from ``--dsn``; the runner sets ``app.conf.dsn``.
"""

from __future__ import annotations

from benchmarks.peers._common import record_latency
from benchmarks.tasks import register
from jobqueue import JobQueue

app = JobQueue(auto_migrate=False)
noop = register(app)


@app.task(name="stamp")
def stamp(sent: float) -> None:
    record_latency(sent)
