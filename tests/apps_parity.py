"""Tasks for the Celery-parity tests (``tests.apps_parity:app`` in the worker).

Kept apart from ``tests.apps`` so these tasks (class-based ones, tasks that
reject or return results and signatures) do not change what the other tests'
worker registers.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from jobqueue import JobQueue, Reject
from tests.apps import CustomError


class PairError(Exception):
    """An exception whose constructor needs two arguments: a ChordError cannot
    also be one (it is built from a message alone)."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(code, detail)
        self.code, self.detail = code, detail


def build(app: JobQueue) -> SimpleNamespace:
    @app.task(name="p.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="p.tsum")
    def tsum(numbers: list[int]) -> int:
        return sum(numbers)

    @app.task(name="p.raise_custom", max_retries=0)
    def raise_custom(message: str) -> None:
        raise CustomError(message)

    @app.task(name="p.raise_pair", max_retries=0)
    def raise_pair(code: int) -> None:
        raise PairError(code, "paired")

    @app.task(name="p.raise_value", max_retries=0)
    def raise_value(message: str) -> None:
        raise ValueError(message)

    # -- Reject ------------------------------------------------------------------

    @app.task(name="p.refuse", autoretry_for=(Exception,))  # Reject is never autoretried
    def refuse(reason: str) -> None:
        raise Reject(reason, requeue=False)

    @app.task(name="p.requeue_once", bind=True)
    def requeue_once(self: Any) -> int:
        if self.request.retries == 0:
            raise Reject("not yet", requeue=True)
        return self.request.retries

    @app.task(name="p.requeue_always", max_retries=2)
    def requeue_always() -> None:
        raise Reject("never", requeue=True)

    @app.task(name="p.delivery", bind=True)
    def delivery(self: Any, fail_first: bool = False) -> dict[str, Any]:
        if fail_first and self.request.retries == 0:
            raise self.retry(countdown=0)
        return dict(self.request.delivery_info)

    @app.task(name="p.quiet", ignore_result=True)
    def quiet() -> int:
        return 42

    @app.task(name="p.untyped", typing=False)
    def untyped(x: int) -> int:
        return x

    @app.task(name="p.bound", bind=True)
    def bound(self: Any, x: int, y: int = 0) -> int:
        return x + y

    @app.task(name="p.keywords")
    def keywords(x: int, *rest: int, scale: int = 1, **extra: Any) -> int:
        return (x + sum(rest)) * scale

    return SimpleNamespace(app=app, **{k.removeprefix("p."): v for k, v in app.tasks.items()})


app = JobQueue()
tasks = build(app)
