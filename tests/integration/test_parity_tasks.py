"""Celery parity, task side: Reject, class-based tasks, the enqueue-time
argument check, Request.delivery_info, per-call options. Real worker, real
PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from jobqueue import JobQueue, Reject, states
from tests.apps_parity import build

APP = "tests.apps_parity:app"


@pytest.fixture
def pq(dsn: str, schema: str) -> Iterator[SimpleNamespace]:
    app = JobQueue(dsn, schema=schema, auto_migrate=False)
    yield build(app)
    app.close()


@pytest.fixture
def worker(start_worker: Any) -> Any:
    return start_worker("--concurrency", "4", app=APP)


# -- Reject --------------------------------------------------------------------


def test_reject_without_requeue_fails_the_job_with_the_reject(pq: Any, worker: Any) -> None:
    result = pq.refuse.delay("spam")
    with pytest.raises(Reject, match="spam") as caught:
        result.get(timeout=30)
    assert caught.value.reason == "spam" and caught.value.requeue is False
    assert result.state == states.FAILURE and result.retries == 0  # not autoretried


def test_reject_with_requeue_runs_the_job_again(pq: Any, worker: Any) -> None:
    assert pq.requeue_once.delay().get(timeout=30) == 1


def test_a_job_always_requeued_stops_at_max_retries(pq: Any, worker: Any) -> None:
    result = pq.requeue_always.delay()
    with pytest.raises(Reject, match="never"):
        result.get(timeout=30)
    assert result.retries == 2


# -- Request.delivery_info -------------------------------------------------------


def test_delivery_info_describes_the_job(pq: Any, worker: Any) -> None:
    info = pq.delivery.apply_async(queue="default", priority=5).get(timeout=30)
    assert info == {"exchange": "", "routing_key": "default", "priority": 5, "redelivered": False}
    again = pq.delivery.apply_async((True,), priority=-2).get(timeout=30)
    assert again == {"exchange": "", "routing_key": "default", "priority": -2, "redelivered": True}
