"""The test app plus async tasks that enqueue with the asyncio API from inside
a worker, for worker subprocesses: ``-A tests.apps_aio:app``."""

from __future__ import annotations

from jobqueue import JobQueue
from tests.apps import build

app = JobQueue()
tasks = build(app)


@app.task(name="aio.enqueue_add")
async def enqueue_add(x: int) -> str:
    """Enqueue add(x, x) on the worker's async pool; the new job's id."""
    result = await tasks.add.adelay(x, x)
    return result.id
