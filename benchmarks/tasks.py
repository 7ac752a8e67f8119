"""Tasks for the benchmark workers (``-A benchmarks.tasks:app``).

The worker subprocesses get their DSN and schema from the command line; the
benchmark builds its own app per schema and registers the same task names with
``register``, so both sides agree.
"""

from __future__ import annotations

from jobqueue import JobQueue, Task


def register(app: JobQueue) -> Task[[], None]:
    @app.task(name="noop")
    def noop() -> None:
        return None

    return noop


app = JobQueue()
noop = register(app)
