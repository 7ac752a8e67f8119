"""Enqueue, run and read back results through a real worker process."""

from __future__ import annotations

from typing import Any

import pytest

from jobqueue import AsyncResult, TaskNotRegistered, TimeoutError, states
from jobqueue.exceptions import RemoteTraceback
from tests.apps import CustomError


def test_delay_get_returns_result(jq: Any, start_worker: Any) -> None:
    start_worker("--concurrency", "2")
    result = jq.add.delay(2, 3)
    assert result.get(timeout=10) == 5
    assert result.state == states.SUCCESS
    assert result.ready() and result.successful() and not result.failed()
    assert result.result == 5 and result.traceback is None
    assert AsyncResult(result.id, app=jq.app).get() == 5


def test_failure_reraises_original_type_with_remote_traceback(jq: Any, start_worker: Any) -> None:
    start_worker()
    result = jq.boom.delay("it broke")
    with pytest.raises(CustomError, match="it broke") as info:
        result.get(timeout=10)
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert result.failed() and result.state == states.FAILURE
    assert result.traceback is not None and "CustomError: it broke" in result.traceback
    assert "raise CustomError(message)" in result.traceback
    assert isinstance(result.result, CustomError)
    assert isinstance(result.get(timeout=1, propagate=False), CustomError)


def test_get_times_out_on_slow_task(jq: Any, start_worker: Any) -> None:
    start_worker()
    result = jq.sleep.delay(3)
    with pytest.raises(TimeoutError):
        result.get(timeout=0.5)
    with pytest.raises(builtins_timeout()):
        result.get(timeout=0.1)
    assert result.get(timeout=30) == 3


def builtins_timeout() -> type[BaseException]:
    import builtins

    return builtins.TimeoutError


def test_unknown_id_is_pending(jq: Any) -> None:
    result = AsyncResult("0190e5f0-0000-7000-8000-000000000000", app=jq.app)
    assert result.state == states.PENDING and not result.ready() and result.result is None


def test_unregistered_task_fails_clearly_and_worker_keeps_running(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    """Past app.conf.unknown_task_grace after its enqueue (within it, a worker
    hands the job back for one that knows the task: tests/integration/test_deploys.py)."""
    unknown = jq.app.send_task("no.such.task", (1, 2))
    conn.execute(
        f"UPDATE \"{schema}\".job_queue SET created_at = now() - interval '1 hour' "
        "WHERE job_id = %s",
        [unknown.id],
    )
    worker = start_worker()
    with pytest.raises(TaskNotRegistered, match=r"no\.such\.task"):
        unknown.get(timeout=10)
    assert unknown.state == states.FAILURE
    assert jq.add.delay(1, 1).get(timeout=10) == 2
    assert worker.proc.poll() is None


def test_unserializable_result_fails_the_job_not_the_worker(jq: Any, start_worker: Any) -> None:
    start_worker()
    with pytest.raises(TypeError, match="not JSON serializable"):
        jq.unserializable.delay().get(timeout=10)
    assert jq.add.delay(2, 2).get(timeout=10) == 4


def test_ignore_result_stores_no_value(jq: Any, start_worker: Any) -> None:
    start_worker()
    result = jq.quiet.delay()
    assert result.get(timeout=10) is None
    assert result.state == states.SUCCESS


def test_bound_task_sees_its_request(jq: Any, start_worker: Any) -> None:
    start_worker("--hostname", "w1@test")
    result = jq.whoami.apply_async(queue="default")
    info = result.get(timeout=10)
    assert info == {
        "id": result.id,
        "retries": 0,
        "hostname": "w1@test",
        "root_id": result.id,
        "queue": "default",
    }


def test_args_and_kwargs_round_trip_as_json(jq: Any, start_worker: Any) -> None:
    start_worker()
    value = {"nested": [1, 2.5, None, True, "é"]}
    result = jq.echo.apply_async((1, "two", [3]), {"k": value})
    assert result.get(timeout=10) == {"args": [1, "two", [3]], "kwargs": {"k": value}}


def test_states_move_from_pending_to_started_to_success(
    jq: Any, start_worker: Any, conn: Any
) -> None:
    from tests.conftest import wait_for

    result = jq.sleep.delay(1)
    assert result.state == states.PENDING
    start_worker()
    wait_for(lambda: result.state == states.STARTED, 10, "STARTED")
    assert result.get(timeout=10) == 1
    assert result.state == states.SUCCESS
    assert result.date_done is not None
