"""Signals without a database: Celery's manners of connect and send, headers."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from jobqueue import Request, states
from jobqueue.signals import Signal, send_before_publish
from jobqueue.worker.executor import precheck
from jobqueue.worker.job import Job


@pytest.fixture
def signal() -> Iterator[Signal]:
    yield Signal("test_signal")


def test_receivers_get_keyword_arguments_and_filter_by_sender(signal: Signal) -> None:
    calls: list[tuple[Any, ...]] = []

    @signal.connect
    def any_sender(sender: Any = None, signal: Any = None, **kwargs: Any) -> None:
        calls.append(("any", sender, signal.name, kwargs))

    @signal.connect(sender="tasks.add")
    def only_add(sender: Any = None, **kwargs: Any) -> None:
        calls.append(("add", sender))

    signal.send("tasks.add", x=1)
    signal.send("tasks.mul", x=2)
    assert calls == [
        ("any", "tasks.add", "test_signal", {"x": 1}),
        ("add", "tasks.add"),
        ("any", "tasks.mul", "test_signal", {"x": 2}),
    ] or calls == [
        ("add", "tasks.add"),
        ("any", "tasks.add", "test_signal", {"x": 1}),
        ("any", "tasks.mul", "test_signal", {"x": 2}),
    ]


def test_a_receiver_that_raises_is_logged_and_the_others_run(
    signal: Signal, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []

    def broken(**kwargs: Any) -> None:
        raise RuntimeError("bug")

    def fine(**kwargs: Any) -> str:
        ran.append("fine")
        return "ok"

    signal.connect(broken, weak=False)
    signal.connect(fine, weak=False)
    with caplog.at_level(logging.ERROR, "jobqueue.signals"):
        results = dict(signal.send(None))
    assert ran == ["fine"] and results[fine] == "ok"
    assert isinstance(results[broken], RuntimeError)
    assert "of signal test_signal raised" in caplog.text


def test_dispatch_uid_connects_once_and_disconnects(signal: Signal) -> None:
    calls: list[str] = []
    signal.connect(lambda **kw: calls.append("first"), weak=False, dispatch_uid="one")
    signal.connect(lambda **kw: calls.append("second"), weak=False, dispatch_uid="one")
    signal.send(None)
    assert calls == ["first"]
    signal.disconnect(dispatch_uid="one")
    signal.send(None)
    assert calls == ["first"] and not signal.receivers


def test_a_weak_receiver_goes_with_its_function(signal: Signal) -> None:
    def make() -> None:
        signal.connect(lambda **kw: None)  # weak by default, as in Celery

    make()
    assert not list(signal.receivers_for(None))


def test_stored_headers_are_json_and_not_the_jobs_own(caplog: pytest.LogCaptureFixture) -> None:
    from jobqueue.signals import before_task_publish

    def receiver(sender: Any = None, headers: Any = None, **kwargs: Any) -> None:
        headers["traceparent"] = "00-abc-def-01"
        headers["bad"] = {1, 2}
        headers["id"] = "changed"  # the job's own: changes nothing

    before_task_publish.connect(receiver, weak=False)
    try:
        with caplog.at_level(logging.ERROR, "jobqueue.signals"):
            stored = send_before_publish("add", "job-1", (1,), {}, "default", 0, {"a": 1})
    finally:
        before_task_publish.disconnect(receiver)
    assert stored == {"a": 1, "traceparent": "00-abc-def-01"}
    assert "header 'bad' of job job-1 (add) dropped" in caplog.text
    assert send_before_publish("add", "job-2", (), {}, "default", 0, None) is None


def test_headers_read_as_request_attributes() -> None:
    request = Request(id="1", task="t", args=[], kwargs={}, headers={"traceparent": "x"})
    assert request.traceparent == "x" and getattr(request, "missing", None) is None
    assert Request(id="1", task="t", args=[], kwargs={}).headers is None
    with pytest.raises(AttributeError):
        _ = Request(id="1", task="t", args=[], kwargs={}).traceparent


def test_headers_that_are_not_an_object_fail_the_job() -> None:
    job = Job("1", "add", "default", '[[],{},{"headers":[1]}]', 1, None, None, None)
    outcome = precheck(job)
    assert outcome is not None and outcome.state == states.FAILURE
    assert "options.headers must be a JSON object, got an array" in str(outcome.error)
