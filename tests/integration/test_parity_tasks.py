"""Celery parity, task side: Reject, class-based tasks, the enqueue-time
argument check, Request.delivery_info, per-call options. Real worker, real
PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from jobqueue import JobQueue, Reject, chord, group, states
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


# -- Celery's per-call options --------------------------------------------------------


def test_ignore_result_per_call(pq: Any, worker: Any, schema: str, conn: Any) -> None:
    ignored = pq.add.apply_async((1, 2), ignore_result=True)
    kept = pq.quiet.apply_async(ignore_result=False)  # the task ignores results; this call not
    assert kept.get(timeout=30) == 42
    assert ignored.get(timeout=30) is None and ignored.state == states.SUCCESS
    row = conn.execute(f'SELECT result FROM "{schema}".jobs WHERE id = %s', [ignored.id]).fetchone()
    assert row == (None,)
    # In a workflow, a step whose result the next one needs keeps it (Celery
    # passes it on); the last step's is ignored.
    chained = (pq.add.s(1, 1) | pq.add.s(1) | pq.quiet.si()).apply_async(ignore_result=True)
    assert chained.get(timeout=30) is None and chained.parent.get(timeout=30) == 3


def test_celery_call_options_accepted_or_refused_with_a_reason(
    pq: Any, schema: str, conn: Any
) -> None:
    accepted = [
        {"serializer": "json"},
        {"compression": "gzip"},
        {"retry": True, "retry_policy": {"max_retries": 3, "interval_start": 0}},
        {"add_to_parent": False},
    ]
    for options in accepted:
        assert pq.add.apply_async((1, 1), **options).state == states.PENDING
        assert pq.app.send_task("p.add", (1, 1), **options).state == states.PENDING
        assert pq.add.s(1, 1).set(**options).apply_async().state == states.PENDING

    def count() -> int:
        return int(conn.execute(f'SELECT count(*) FROM "{schema}".jobs').fetchone()[0])

    written = count()
    refused = [
        ({"serializer": "pickle"}, ValueError, "JSON .*only"),
        ({"compression": "rar"}, ValueError, "unknown compression"),
        ({"retry": "yes"}, TypeError, "retry must be True or False"),
        ({"retry_policy": {"tries": 3}}, TypeError, "unknown key"),
        ({"ignore_result": 1}, TypeError, "ignore_result must be"),
        ({"shadow": "other"}, TypeError, "shadow= is not supported: .*headers="),
        ({"routing_key": "math"}, TypeError, "routing_key= is not supported: .*queue="),
        ({"exchange": "tasks"}, TypeError, "exchange= is not supported"),
        ({"producer": object()}, TypeError, "unknown option"),
    ]
    for options, error, message in refused:
        with pytest.raises(error, match=message):
            pq.add.apply_async((1, 1), **options)
        with pytest.raises(error, match=message):
            pq.add.s(1, 1).set(**options).apply_async()
    assert count() == written  # nothing written


# -- enqueue-time argument check (Celery's typing=True) ---------------------------------


def test_wrong_arguments_raise_at_the_call_and_write_nothing(
    pq: Any, schema: str, conn: Any
) -> None:
    def count() -> int:
        return int(conn.execute(f'SELECT count(*) FROM "{schema}".jobs').fetchone()[0])

    before = count()
    wrong = [
        lambda: pq.add.delay(5),
        lambda: pq.add.delay(1, 2, 3),
        lambda: pq.add.delay(1, z=2),
        lambda: pq.add.apply_async((1,), {"x": 1}),
        lambda: pq.bound.delay(),  # self is not an argument to give
        lambda: pq.bound.delay(1, 2, 3),
        lambda: pq.keywords.delay(scale=2),
        lambda: pq.add.s(1).delay(),  # a signature enqueued on its own
        lambda: (pq.add.s(1, 1) | pq.add.s(2, 3)).delay(),  # a step given one more
        lambda: (pq.add.s(1, 1) | pq.add.si(2)).delay(),  # immutable: given nothing
        lambda: chord([pq.add.s(1, 1)], pq.add.s(1, 2)).delay(),  # a body given the list
        lambda: pq.add.s(1, 1).set(link=pq.add.s(1, 2)).delay(),  # a callback too
        lambda: group(pq.add.s(1, 1), pq.add.s(1)).delay(),
    ]
    for call in wrong:
        with pytest.raises(TypeError, match="cannot take these arguments"):
            call()
    assert count() == before
    right = [
        lambda: pq.add.delay(1, 2),
        lambda: pq.add.delay(x=1, y=2),
        lambda: pq.bound.delay(1),
        lambda: pq.keywords.delay(1, 2, 3, scale=2, other=1),
        lambda: pq.untyped.delay(1, 2, 3),  # typing=False: not checked
        lambda: pq.app.send_task("p.add", (1,)),  # send_task is not checked (as in Celery)
        lambda: pq.app.send_task("elsewhere.task", (1, 2, 3)),
        lambda: (pq.add.s(1, 1) | pq.add.s(2) | pq.add.si(1, 1)).delay(),
        lambda: chord([pq.add.s(1, 1)], pq.tsum.s()).delay(),
        lambda: pq.add.s(1, 1).set(link=pq.add.s(1)).delay(),
    ]
    for call in right:
        call()
    assert count() > before
