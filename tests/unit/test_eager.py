"""Task.apply() and eager mode, with no database at all.

Every app here points at a port nothing listens on, with the embedded
fallback off, and the ``no_connection`` guard fails a test that even tries
to open a connection: what eager mode promises is that unit tests need no
PostgreSQL. The canvas cases mirror the worker's (tests/integration/
test_canvas.py); tests/integration/test_testing_plugin.py runs one set of
canvases both ways and compares them job by job.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from jobqueue import (
    ChordError,
    EagerGroupResult,
    EagerResult,
    JobQueue,
    MaxRetriesExceededError,
    TaskNotRegistered,
    chain,
    chord,
    group,
    signals,
    states,
)
from jobqueue.eager import run as eager_run


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends


@pytest.fixture(autouse=True)
def no_connection(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Records every connection attempt (it would fail anyway: nothing listens)."""
    attempts: list[Any] = []
    original = psycopg.Connection.connect

    def connect(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "connect", connect)  # psycopg_pool's way
    monkeypatch.setattr(psycopg, "connect", connect)  # jobqueue.db's
    monkeypatch.delenv("JOBQUEUE_DSN", raising=False)
    monkeypatch.delenv("JOBQUEUE_TEST_DSN", raising=False)
    yield attempts
    assert attempts == [], f"eager mode tried to connect: {attempts}"


@pytest.fixture
def app() -> Iterator[JobQueue]:
    app = JobQueue(f"postgresql://nobody@127.0.0.1:{_closed_port()}/none", embedded=False)
    yield app
    app.close()


@pytest.fixture
def tasks(app: JobQueue) -> Any:
    """A few tasks, and a log of what ran (task name, arguments, request)."""
    ran: list[tuple[str, Any]] = []

    class T:
        log = ran

        @staticmethod
        @app.task
        def add(x: int, y: int) -> int:
            ran.append(("add", (x, y)))
            return x + y

        @staticmethod
        @app.task
        def tsum(values: list[int]) -> int:
            ran.append(("tsum", values))
            return sum(values)

        @staticmethod
        @app.task
        def echo(value: Any) -> Any:
            ran.append(("echo", value))
            return value

        @staticmethod
        @app.task(max_retries=0)
        def boom(message: str = "boom") -> None:
            ran.append(("boom", message))
            raise ValueError(message)

        @staticmethod
        @app.task
        def on_error(failed_id: str) -> str:
            ran.append(("on_error", failed_id))
            return failed_id

    return T


# -- Task.apply() ------------------------------------------------------------------


def test_apply_returns_a_finished_eager_result(app: JobQueue, tasks: Any) -> None:
    from jobqueue.result import EagerResult as where_celery_has_it

    result = tasks.add.apply((2, 3))
    assert isinstance(result, EagerResult) and where_celery_has_it is EagerResult
    assert (result.state, result.get(), result.result) == (states.SUCCESS, 5, 5)
    assert result.ready() and result.successful() and not result.failed()
    assert result.traceback is None and result.retries == 0
    assert result.task_name == tasks.add.name and result.date_done is not None
    given = tasks.add.apply((1, 1), task_id="01a24c52-0000-7000-8000-000000000001")
    assert given.id == "01a24c52-0000-7000-8000-000000000001" and given.get() == 2


def test_apply_works_whatever_eager_says(app: JobQueue, tasks: Any) -> None:
    assert app.conf.eager is False
    assert tasks.add.apply(kwargs={"x": 1, "y": 2}).get() == 3


def test_arguments_and_results_make_the_json_round_trip(app: JobQueue, tasks: Any) -> None:
    """A worker's task gets lists for tuples and returns what JSON keeps: so
    does an eager one, and what JSON cannot carry fails as it would there."""
    assert tasks.echo.apply(((1, 2),)).get() == [1, 2]
    assert tasks.echo.apply(({"k": (1,)},)).get() == {"k": [1]}
    with pytest.raises(TypeError, match=r"argument 0 of task .* is not JSON serializable"):
        tasks.echo.apply((object(),))
    assert tasks.log == [("echo", [1, 2]), ("echo", {"k": [1]})]

    @app.task
    def unjsonable() -> Any:
        return {1, 2}

    result = unjsonable.apply()
    assert result.state == states.FAILURE
    with pytest.raises(TypeError, match="is not JSON serializable"):
        result.get()


def test_a_failure_keeps_the_tasks_own_exception(app: JobQueue, tasks: Any) -> None:
    result = tasks.boom.apply(("bad input",))
    assert result.state == states.FAILURE and result.failed()
    assert isinstance(result.result, ValueError) and str(result.result) == "bad input"
    assert result.traceback is not None and "ValueError: bad input" in result.traceback
    with pytest.raises(ValueError, match="bad input") as raised:
        result.get()
    assert raised.value is result.result  # the object the task raised, its traceback with it
    assert isinstance(result.get(propagate=False), ValueError)


def test_throw_and_eager_propagates_raise_at_the_call(app: JobQueue, tasks: Any) -> None:
    with pytest.raises(ValueError, match="now"):
        tasks.boom.apply(("now",), throw=True)
    assert tasks.boom.apply(("later",)).failed()
    app.conf.eager_propagates = True
    with pytest.raises(ValueError, match="default"):
        tasks.boom.apply(("default",))
    assert tasks.boom.apply(("off",), throw=False).failed()


def test_bound_task_sees_a_workers_request(app: JobQueue) -> None:
    seen: list[Any] = []

    @app.task(bind=True)
    def who(self: Any, x: int) -> None:
        seen.append(self.request)

    result = who.apply((7,), headers={"tenant": "a"}, queue="q1")
    request = seen[0]
    assert request.id == result.id and request.task == who.name
    assert (request.args, request.kwargs) == ([7], {})
    assert request.retries == 0 and request.attempt == 1
    assert request.called_directly is False and request.is_eager is True
    assert request.root_id == result.id and request.parent_id is None
    assert request.queue == "q1" and request.headers == {"tenant": "a"}
    assert request.tenant == "a"
    assert who.request.called_directly is True  # outside the run: as before


# -- retries ---------------------------------------------------------------------------


def test_self_retry_runs_again_at_once_up_to_max_retries(app: JobQueue) -> None:
    seen: list[int] = []

    @app.task(bind=True, max_retries=3)
    def flaky(self: Any, succeed_at: int) -> int:
        seen.append(self.request.retries)
        if self.request.retries < succeed_at:
            raise self.retry(countdown=3600)  # not waited for
        return int(self.request.retries)

    started = time.monotonic()
    result = flaky.apply((2,))
    assert time.monotonic() - started < 5
    assert (result.get(), result.retries, seen) == (2, 2, [0, 1, 2])

    seen.clear()
    exhausted = flaky.apply((10,))
    assert seen == [0, 1, 2, 3]
    assert exhausted.state == states.FAILURE and exhausted.retries == 3
    assert isinstance(exhausted.result, MaxRetriesExceededError)


def test_retry_with_exc_fails_with_it_when_exhausted(app: JobQueue) -> None:
    @app.task(bind=True, max_retries=1)
    def fetch(self: Any) -> None:
        try:
            raise ConnectionError("down")
        except ConnectionError as exc:
            raise self.retry(exc=exc) from exc

    result = fetch.apply()
    assert result.retries == 1 and isinstance(result.result, ConnectionError)


def test_autoretry_for(app: JobQueue) -> None:
    runs: list[int] = []

    @app.task(bind=True, autoretry_for=(KeyError,), dont_autoretry_for=(LookupError,))
    def keyed(self: Any) -> None:
        runs.append(self.request.retries)
        raise KeyError("k")

    @app.task(bind=True, autoretry_for=(OSError,), max_retries=2, retry_backoff=True)
    def net(self: Any) -> str:
        runs.append(self.request.retries)
        if self.request.retries < 2:
            raise OSError("flaky")
        return "ok"

    assert keyed.apply().retries == 0 and runs == [0]  # dont_autoretry_for wins
    runs.clear()
    assert net.apply().get() == "ok" and runs == [0, 1, 2]


def test_unlimited_retries_stop_at_the_attempt_cap(
    app: JobQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(eager_run, "MAX_ATTEMPTS", 5)
    runs: list[int] = []

    @app.task(bind=True, max_retries=None)
    def forever(self: Any) -> None:
        runs.append(self.request.retries)
        raise self.retry(countdown=0)

    result = forever.apply()
    assert runs == [0, 1, 2, 3, 4]
    assert result.failed() and "after 5 attempts" in str(result.result)


def test_update_state_is_checked_then_dropped(app: JobQueue) -> None:
    @app.task(bind=True)
    def progress(self: Any, state: str) -> str:
        self.update_state(state=state, meta={"done": 1})
        return "ok"

    assert progress.apply(("PROGRESS",)).get() == "ok"
    bad = progress.apply(("SUCCESS",))
    assert isinstance(bad.result, ValueError) and "custom state" in str(bad.result)


# -- signals ---------------------------------------------------------------------------


def test_the_runs_signals_fire_as_in_a_worker(app: JobQueue, tasks: Any) -> None:
    got: list[tuple[str, Any]] = []

    def prerun(sender: Any = None, task_id: Any = None, **kw: Any) -> None:
        got.append(("prerun", task_id))

    def postrun(sender: Any = None, task_id: Any = None, state: Any = None, **kw: Any) -> None:
        got.append(("postrun", state))

    def success(sender: Any = None, result: Any = None, **kw: Any) -> None:
        got.append(("success", result))

    def failure(sender: Any = None, exception: Any = None, **kw: Any) -> None:
        got.append(("failure", type(exception).__name__))

    def published(sender: Any = None, headers: Any = None, **kw: Any) -> None:
        got.append(("published", sender))

    pairs = [
        (signals.task_prerun, prerun),
        (signals.task_postrun, postrun),
        (signals.task_success, success),
        (signals.task_failure, failure),
        (signals.after_task_publish, published),
    ]
    for signal, receiver in pairs:
        signal.connect(receiver, weak=False)
    try:
        ok = tasks.add.apply((1, 2))
        tasks.boom.apply()
    finally:
        for signal, receiver in pairs:
            signal.disconnect(receiver)
    assert got[:4] == [
        ("published", tasks.add.name),
        ("prerun", ok.id),
        ("success", 3),
        ("postrun", states.SUCCESS),
    ]
    assert got[5:] == [("prerun", got[5][1]), ("failure", "ValueError"), ("postrun", "FAILURE")]


# -- eager mode: delay, apply_async, send_task, enqueue_many -----------------------------


def test_eager_mode_runs_delay_and_apply_async_here(app: JobQueue, tasks: Any) -> None:
    app.conf.eager = True
    assert tasks.add.delay(2, 3).get() == 5
    result = tasks.add.apply_async((1, 1), countdown=3600, queue="slow")
    assert isinstance(result, EagerResult) and result.get() == 2
    assert app.send_task(tasks.add.name, (4, 4)).get() == 8
    many = app.enqueue_many(tasks.add, [(1, 2), {"x": 3, "y": 4}])
    assert [r.get() for r in many] == [3, 7]
    with pytest.raises(TypeError, match="item 0: argument 0"):
        app.enqueue_many(tasks.echo, [(object(),)])


def test_eager_send_task_of_an_unknown_task_fails_its_job(app: JobQueue) -> None:
    app.conf.eager = True
    result = app.send_task("elsewhere.task", (1,))
    assert result.failed() and isinstance(result.result, TaskNotRegistered)
    assert "not registered in this process" in str(result.result)


def test_eager_callbacks(app: JobQueue, tasks: Any) -> None:
    app.conf.eager = True
    result = tasks.add.apply_async((1, 2), link=tasks.echo.s(), link_error=tasks.on_error.s())
    assert result.get() == 3
    assert [c.get() for c in result.children] == [3]
    assert result.children[0].parent == result
    failed = tasks.boom.apply_async(link=tasks.echo.s(), link_error=tasks.on_error.s())
    (errback,) = [c for c in failed.children if c.successful()]
    assert errback.get() == failed.id  # the error callback gets the failed job's id
    assert ("echo", 3) in tasks.log and all(name != "echo" or v == 3 for name, v in tasks.log)


def test_a_task_that_enqueues_runs_its_child_eagerly(app: JobQueue, tasks: Any) -> None:
    @app.task
    def parent(x: int) -> int:
        return int(tasks.add.delay(x, 1).get())

    app.conf.eager = True
    assert parent.delay(41).get() == 42


def test_async_tasks_run_eagerly_inside_and_outside_an_event_loop(app: JobQueue) -> None:
    @app.task
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    assert double.apply((2,)).get() == 4

    async def inside() -> int:
        return int(double.apply((5,)).get())

    assert asyncio.run(inside()) == 10


# -- eager mode: canvas -------------------------------------------------------------------


def test_chain_passes_results(app: JobQueue, tasks: Any) -> None:
    app.conf.eager = True
    result = (tasks.add.s(1, 2) | tasks.add.s(10) | tasks.add.s(100))()
    assert result.get() == 113
    assert result.parent is not None and result.parent.get() == 13
    immutable = chain(tasks.add.s(1, 1), tasks.add.si(5, 5)).apply_async()
    assert immutable.get() == 10


def test_group_and_chord(app: JobQueue, tasks: Any) -> None:
    app.conf.eager = True
    grouped = group(tasks.add.s(i, i) for i in range(4))()
    assert isinstance(grouped, EagerGroupResult)
    assert grouped.get() == [0, 2, 4, 6] and grouped.ready() and grouped.successful()
    assert grouped.completed_count() == 4
    assert chord([tasks.add.s(i, i) for i in range(4)], tasks.tsum.s())().get() == 12
    assert chord([])(tasks.tsum.s()).get() == 0
    # A group inside a chain becomes a chord: the next step gets the list.
    assert (tasks.add.s(1, 1) | group(tasks.add.s(1), tasks.add.s(2)) | tasks.tsum.s())().get() == 7


def test_a_failed_header_fails_the_chord_as_the_database_does(app: JobQueue, tasks: Any) -> None:
    app.conf.eager = True
    body = tasks.tsum.s()
    body.link_error(tasks.on_error.s())
    result = chord([tasks.add.s(1, 1), tasks.boom.s("header")], body)()
    assert result.state == states.FAILURE
    assert isinstance(result.result, ChordError)
    assert "raised ValueError: header" in str(result.result)
    assert not any(name == "tsum" for name, _ in tasks.log)  # the body never ran
    assert ("on_error", result.id) in tasks.log  # its error callback did, with its id


def test_a_failed_step_fails_the_rest_of_the_chain(app: JobQueue, tasks: Any) -> None:
    app.conf.eager = True
    result = chain(tasks.add.s(1, 1), tasks.boom.s(), tasks.echo.s()).apply_async()
    assert result.failed() and isinstance(result.result, ValueError)
    assert not any(name == "echo" for name, _ in tasks.log)
    app.conf.eager_propagates = True
    with pytest.raises(ValueError):
        chain(tasks.add.s(1, 1), tasks.boom.s(), tasks.echo.s()).apply_async()


def test_map_starmap_chunks(app: JobQueue, tasks: Any) -> None:
    app.conf.eager = True
    assert tasks.echo.map([1, 2]).delay().get() == [1, 2]
    assert tasks.add.starmap([(1, 2), (3, 4)]).delay().get() == [3, 7]
    assert tasks.add.chunks([(i, i) for i in range(5)], 2)().get() == [[0, 2], [4, 6], [8]]


def test_signature_apply_needs_no_eager_mode(app: JobQueue, tasks: Any) -> None:
    assert (tasks.add.s(1, 2) | tasks.add.s(3)).apply().get() == 6
    assert group(tasks.add.s(1, 1), tasks.add.s(2, 2)).apply().get() == [2, 4]


def test_the_guard_sees_a_connection_attempt(
    app: JobQueue, tasks: Any, no_connection: list[Any]
) -> None:
    """The guard above is what proves the rest: without eager mode, delay() does try."""
    app.conf.db_retry_seconds = 0.2  # it would keep trying for 10 s
    with pytest.raises(Exception):  # noqa: B017 - nothing listens: whatever psycopg raises
        tasks.add.delay(1, 2)
    assert no_connection, "the guard saw no attempt"
    no_connection.clear()


def test_the_async_api_runs_eagerly_too(app: JobQueue, tasks: Any, no_connection: Any) -> None:
    """adelay, aapply_async, asend_task, aenqueue_many and a canvas's
    aapply_async honour eager mode as their sync twins do (no pool is opened)."""
    app.conf.eager = True

    async def main() -> list[Any]:
        one = await tasks.add.adelay(2, 3)
        two = await tasks.add.aapply_async((1, 1), countdown=60)
        sent = await app.asend_task(tasks.add.name, (4, 4))
        many = await app.aenqueue_many(tasks.add, [(1, 2), (3, 4)])
        flow = await (tasks.add.s(1, 1) | tasks.add.s(10)).aapply_async()
        return [one, two, sent, *many, flow]

    results = asyncio.run(main())
    assert all(isinstance(r, EagerResult) for r in results)
    assert [r.get() for r in results] == [5, 2, 8, 3, 7, 12]
