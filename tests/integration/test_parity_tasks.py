"""Celery parity, task side: Reject, class-based tasks, the enqueue-time
argument check, Request.delivery_info, per-call options. Real worker, real
PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from jobqueue import JobQueue, Reject, Task, chord, group, states
from tests.apps_parity import Defaults, build
from tests.conftest import wait_for

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


# -- class-based tasks -------------------------------------------------------------------


def test_app_task_is_a_base_class_of_this_app(pq: Any, dsn: str, schema: str) -> None:
    assert pq.app.Task is pq.app.Task and issubclass(pq.app.Task, Task)
    other = JobQueue(dsn, schema=schema, auto_migrate=False)
    try:
        assert other.Task is not pq.app.Task and other.Task.app is other

        class Orphan(Task[Any, Any]):
            def run(self) -> None: ...

        with pytest.raises(TypeError, match="has no app"):
            Orphan()

        class NoBody(other.Task):  # type: ignore[name-defined,misc]
            pass

        with pytest.raises(TypeError, match="defines no run"):
            NoBody()

        class Elsewhere(other.Task):  # type: ignore[name-defined,misc]
            def run(self) -> None: ...

        with pytest.raises(ValueError, match="another app"):
            pq.app.register_task(Elsewhere())
        with pytest.raises(TypeError, match="base="):
            pq.app.task(base=object)(lambda: None)
    finally:
        other.close()


def test_class_attributes_are_defaults(pq: Any) -> None:
    multiply = pq.app.tasks["p.multiply"]
    assert multiply.max_retries == 2 and multiply(6, 7) == 42 and multiply.run(2, 3) == 6
    assert type(multiply).__name__ == "Multiply" and multiply.name == "p.multiply"
    flaky = pq.app.tasks["p.class_flaky"]
    assert flaky.max_retries == 3 and flaky.policy.autoretries(OSError())
    assert pq.defaults.queue == "p-defaults" and pq.defaults.priority == 3
    assert pq.defaults.max_retries == 7 and isinstance(pq.defaults, Defaults)
    assert pq.overridden.queue == "default" and pq.overridden.priority == 3  # the option wins
    assert pq.defaults.delay().state == states.PENDING  # its queue: p-defaults
    with pytest.raises(TypeError, match="cannot take these arguments"):
        multiply.delay(1)  # run()'s signature, without self


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_class_based_tasks_and_hooks_run_in_a_worker(
    pq: Any, start_worker: Any, tmp_path: Any, pool: str
) -> None:
    start_worker("--pool", pool, "--concurrency", "2", app=APP)
    assert pq.app.tasks["p.multiply"].delay(6, 7).get(timeout=30) == 42
    assert pq.app.tasks["p.class_flaky"].delay(2).get(timeout=30) == 2

    ok, failing = tmp_path / "ok.log", tmp_path / "failing.log"
    assert pq.journaled.delay(str(ok), "ok").get(timeout=30) == 7
    with pytest.raises(OSError, match="always"):
        pq.journaled.delay(str(failing), "fail").get(timeout=30)
    assert ok.read_text().splitlines() == [
        "before_start True",
        "on_success 7",
        "after_return SUCCESS 7",
    ]
    assert failing.read_text().splitlines() == [
        "before_start True",
        "on_retry OSError True",
        "after_return RETRY OSError('always')",
        "before_start True",
        "on_failure OSError True",
        "after_return FAILURE OSError('always')",
    ]


def test_a_hook_that_raises_is_logged_and_the_outcome_stands(pq: Any, worker: Any) -> None:
    result = pq.broken_hooks.delay()
    assert result.get(timeout=30) == "fine" and result.state == states.SUCCESS
    wait_for(lambda: "on_success raised RuntimeError" in worker.log, 10, "the hook's log line")
    assert "before_start raised RuntimeError: before_start is broken" in worker.log
