"""Tasks the tests enqueue and the worker subprocesses run.

The worker loads ``tests.apps:app`` and gets its DSN and schema from the CLI
(``--dsn``/``--schema``); a test builds its own app on the same schema with
``build(JobQueue(dsn, schema=...))`` so both sides agree on task names.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from jobqueue import JobQueue


class CustomError(Exception):
    """An exception type importable on both sides."""


def build(app: JobQueue) -> SimpleNamespace:
    @app.task(name="add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="boom")
    def boom(message: str) -> None:
        raise CustomError(message)

    @app.task(name="sleep")
    def sleep(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    @app.task(name="echo")
    def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"args": list(args), "kwargs": kwargs}

    @app.task(name="whoami", bind=True)
    def whoami(self: Any) -> dict[str, Any]:
        r = self.request
        return {
            "id": r.id,
            "retries": r.retries,
            "hostname": r.hostname,
            "root_id": r.root_id,
            "queue": r.queue,
        }

    @app.task(name="unserializable")
    def unserializable() -> object:
        return object()

    @app.task(name="quiet", ignore_result=True)
    def quiet() -> int:
        return 42

    return SimpleNamespace(
        app=app,
        add=add,
        boom=boom,
        sleep=sleep,
        echo=echo,
        whoami=whoami,
        unserializable=unserializable,
        quiet=quiet,
    )


app = JobQueue()
tasks = build(app)
