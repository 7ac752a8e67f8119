"""Signals: sent where a job's state changes, in both pools and for async tasks;
a receiver that raises changes nothing; headers travel from the enqueue to the task."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from jobqueue import JobQueue, Task, chain, group, signals, states
from jobqueue.beat import Beat
from jobqueue.exceptions import TaskRevokedError
from jobqueue.worker import Worker
from tests.apps import CustomError
from tests.conftest import wait_for

# As in tests/signals_app.py, which only worker subprocesses import (its receivers
# are connected at its import, process-wide).
SIGNALS_FILE = "JOBQUEUE_TEST_SIGNALS"
ALL_SIGNALS = [name for name in signals.__all__ if name not in ("ExceptionInfo", "Signal")]


@dataclass
class Seen:
    signal: str
    sender: Any
    arguments: dict[str, Any]
    job: str | None  # the request pushed while the signal was sent, if a task's
    thread: int


@contextmanager
def connected(signal: signals.Signal, receiver: Callable[..., Any]) -> Iterator[None]:
    signal.connect(receiver, weak=False)
    try:
        yield
    finally:
        signal.disconnect(receiver)


@pytest.fixture
def seen() -> Iterator[list[Seen]]:
    """Every signal sent in this process during the test, in order, with a
    receiver that raises connected beside each one."""
    log: list[Seen] = []
    lock = threading.Lock()

    def record(sender: Any = None, signal: Any = None, **arguments: Any) -> None:
        job = sender.request.id if isinstance(sender, Task) else None
        with lock:
            log.append(Seen(signal.name, sender, arguments, job, threading.get_ident()))

    def explode(sender: Any = None, **arguments: Any) -> None:
        raise RuntimeError("a receiver's bug")

    for name in ALL_SIGNALS:
        getattr(signals, name).connect(explode, weak=False)
        getattr(signals, name).connect(record, weak=False)
    yield log
    for name in ALL_SIGNALS:
        getattr(signals, name).disconnect(explode)
        getattr(signals, name).disconnect(record)


@contextmanager
def running(app: JobQueue, **options: Any) -> Iterator[Worker]:
    worker = Worker(app, **{"concurrency": 2, **options})
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(30)
        assert not thread.is_alive()


def of_job(log: list[Seen], job_id: str) -> list[str]:
    """The signals sent about one job, in order."""
    names = []
    for s in list(log):
        if (
            s.job == job_id
            or s.arguments.get("task_id") == job_id
            or getattr(s.arguments.get("request"), "id", None) == job_id
            or s.arguments.get("headers", {}).get("id") == job_id
            or s.arguments.get("id") == job_id
        ):
            names.append(s.signal)
    return names


def test_thread_pool_sends_each_runs_signals_in_order(jq: Any, seen: list[Seen]) -> None:
    with running(jq.app) as worker:
        ok = jq.add.delay(2, 3)
        bad = jq.boom.delay("no")
        again = jq.explicit_retry.delay()  # one retry, then MaxRetriesExceededError
        awaited = jq.async_add.delay(1, 2)
        assert ok.get(timeout=20) == 5
        assert awaited.get(timeout=20) == 3
        with pytest.raises(CustomError):
            bad.get(timeout=20)
        with pytest.raises(Exception, match="max retries"):
            again.get(timeout=20)
    publish = ["before_task_publish", "after_task_publish", "task_received"]
    run = ["task_prerun", "task_success", "task_postrun"]
    assert of_job(seen, ok.id) == [*publish, *run]
    assert of_job(seen, awaited.id) == [*publish, *run]
    assert of_job(seen, bad.id) == [*publish, "task_prerun", "task_failure", "task_postrun"]
    assert of_job(seen, again.id) == [
        *publish,
        *("task_prerun", "task_retry", "task_postrun"),
        "task_received",
        *("task_prerun", "task_failure", "task_postrun"),
    ]

    def one(signal: str, job: str) -> Seen:
        (found,) = [s for s in seen if s.signal == signal and s.job == job]
        return found

    assert one("task_success", ok.id).arguments["result"] == 5
    assert one("task_success", ok.id).sender is jq.add
    prerun, postrun = one("task_prerun", ok.id), one("task_postrun", ok.id)
    assert prerun.arguments["args"] == [2, 3] and prerun.arguments["task"] is jq.add
    assert postrun.arguments["retval"] == 5 and postrun.arguments["state"] == states.SUCCESS
    assert prerun.thread == postrun.thread  # the slot's thread: a receiver may keep state there
    failure = one("task_failure", bad.id).arguments
    assert isinstance(failure["exception"], CustomError)
    assert failure["args"] == ["no"] and failure["traceback"] is not None
    assert "CustomError: no" in failure["einfo"].traceback
    assert one("task_postrun", bad.id).arguments["state"] == states.FAILURE
    retry = one("task_retry", again.id).arguments
    assert retry["request"].id == again.id and retry["request"].retries == 0
    assert one("task_success", awaited.id).arguments["result"] == 3
    lifecycle = [s.signal for s in seen if s.signal.startswith("worker_")]
    assert lifecycle == ["worker_init", "worker_ready", "worker_shutdown"]
    assert all(s.sender is worker for s in seen if s.signal.startswith("worker_"))


def test_revoked_expired_and_unknown_jobs(jq: Any, seen: list[Seen]) -> None:
    jq.app.conf.unknown_task_grace = 0
    expired = jq.add.apply_async((1, 1), expires=datetime.now(timezone.utc) - timedelta(seconds=1))
    unknown = jq.app.send_task("nobody.knows")
    with running(jq.app):
        with pytest.raises(TaskRevokedError):
            expired.get(timeout=20)
        with pytest.raises(Exception, match="not registered"):
            unknown.get(timeout=20)
        running_job = jq.ticking.delay(30)
        wait_for(lambda: "task_prerun" in of_job(seen, running_job.id), 20, "the job to start")
        running_job.revoke(terminate=True)
        with pytest.raises(TaskRevokedError):
            running_job.get(timeout=20)
        wait_for(lambda: "task_postrun" in of_job(seen, running_job.id), 20, "its thread to end")
    (revoked,) = [s for s in seen if s.signal == "task_revoked" and s.arguments["expired"]]
    assert revoked.arguments["request"].id == expired.id and revoked.sender is jq.add
    terminated = [s for s in seen if s.signal == "task_revoked" and s.arguments["terminated"]]
    assert [s.arguments["request"].id for s in terminated] == [running_job.id]
    assert terminated[0].arguments["signum"] is None  # the thread pool raises, kills nothing
    # Stopped, not failed: no task_failure, and its postrun says REVOKED.
    assert "task_failure" not in of_job(seen, running_job.id)
    (postrun,) = [s for s in seen if s.signal == "task_postrun" and s.job == running_job.id]
    assert postrun.arguments["state"] == states.REVOKED
    (miss,) = [s for s in seen if s.signal == "task_unknown"]
    assert miss.sender is None and miss.arguments["name"] == "nobody.knows"
    assert miss.arguments["id"] == unknown.id and miss.arguments["message"].id == unknown.id
    assert type(miss.arguments["exc"]).__name__ == "TaskNotRegistered"


def test_headers_from_apply_async_and_receivers_reach_the_task(
    jq: Any, seen: list[Seen], conn: Any, schema: str, caplog: Any
) -> None:
    def add_trace(sender: Any = None, headers: Any = None, **kwargs: Any) -> None:
        headers["traceparent"] = f"trace-of-{headers['id']}"
        headers["unstorable"] = object()  # not JSON: dropped and logged, the job still goes

    with connected(signals.before_task_publish, add_trace), running(jq.app):
        plain = jq.headers.apply_async(headers={"tenant": "acme"})
        awaited = jq.async_headers.delay()
        steps = chain(jq.headers.si(), group(jq.headers.si(), jq.headers.si())).apply_async()
        many = jq.app.enqueue_many(jq.headers, [(), ()])
        assert plain.get(timeout=20) == {"tenant": "acme", "traceparent": f"trace-of-{plain.id}"}
        assert awaited.get(timeout=20) == {"traceparent": f"trace-of-{awaited.id}"}
        members = steps.get(timeout=20)
        assert [r.get(timeout=20) for r in many] == [
            {"traceparent": f"trace-of-{r.id}"} for r in many
        ]
    assert len(members) == 2 and all(m["traceparent"].startswith("trace-of-") for m in members)
    # Every step of the canvas was published now, with its own id in its headers.
    rows = conn.execute(
        f"SELECT id::text, options -> 'headers' FROM \"{schema}\".jobs WHERE task = 'headers'"
    ).fetchall()
    assert len(rows) == 6
    assert all(headers["traceparent"] == f"trace-of-{job}" for job, headers in rows)
    assert "header 'unstorable'" in caplog.text
    publish = [s for s in seen if s.signal == "before_task_publish" and s.sender == "headers"]
    assert len(publish) == 6
    body = publish[0].arguments["body"]
    assert body[0] == [] and body[1] == {} and publish[0].arguments["routing_key"] == "default"


def test_a_prerun_receiver_reads_the_request_headers(jq: Any) -> None:
    headers_seen: list[Any] = []

    def prerun(sender: Any = None, task: Any = None, **kwargs: Any) -> None:
        headers_seen.append((task.request.headers, getattr(task.request, "tenant", None)))

    with connected(signals.task_prerun, prerun), running(jq.app):
        result = jq.headers.apply_async(headers={"tenant": "acme"})
        assert result.get(timeout=20) == {"tenant": "acme"}
    assert headers_seen == [({"tenant": "acme"}, "acme")]


def test_bad_headers_are_refused_at_the_call(jq: Any) -> None:
    with pytest.raises(ValueError, match="header 'id' is the job's own"):
        jq.add.apply_async((1, 2), headers={"id": "mine"})
    with pytest.raises(TypeError, match="headers must be a mapping"):
        jq.add.apply_async((1, 2), headers=["a"])
    with pytest.raises(TypeError, match="headers must be JSON values"):
        jq.add.apply_async((1, 2), headers={"a": object()})


def test_a_beat_tick_is_published_with_headers(jq: Any, seen: list[Seen], conn: Any) -> None:
    def add_trace(sender: Any = None, headers: Any = None, **kwargs: Any) -> None:
        headers["traceparent"] = "from-beat"

    jq.app.conf.beat_schedule = {"tick": {"task": "headers", "schedule": 0.5}}
    beat = Beat(jq.app, max_sleep=0.1)
    thread = threading.Thread(target=beat.run, daemon=True)
    with connected(signals.before_task_publish, add_trace):
        thread.start()
        try:
            row = wait_for(
                lambda: conn.execute(
                    f"SELECT options -> 'headers' FROM \"{jq.app.conf.schema}\".jobs "
                    "WHERE task = 'headers'"
                ).fetchone(),
                20,
                "a tick",
            )
        finally:
            beat.stop()
            thread.join(20)
    assert row[0] == {"traceparent": "from-beat"}
    assert [s.sender for s in seen if s.signal == "beat_init"] == [beat]
    assert "after_task_publish" in [s.signal for s in seen]


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_process_pool_children_send_the_run_signals(
    jq: Any, start_worker: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The receivers live in the children (connected at import of the app
    module) and write what they see to a file; the test process has none."""
    path = tmp_path / "signals.jsonl"
    monkeypatch.setenv(SIGNALS_FILE, str(path))
    worker = start_worker("--pool", "processes", "--concurrency", "2", app="tests.signals_app:app")
    ok = jq.add.delay(2, 3)
    bad = jq.boom.delay("no")
    traced = jq.headers.apply_async(headers={"tenant": "acme"})
    awaited = jq.async_headers.delay()
    assert ok.get(timeout=30) == 5
    with pytest.raises(CustomError):  # the receiver that raises changed nothing
        bad.get(timeout=30)
    assert awaited.get(timeout=30) is None  # no receiver adds headers in this process
    assert traced.get(timeout=30) == {"tenant": "acme"}
    assert worker.terminate() == 0
    lines = _lines(path)
    parent = worker.proc.pid
    children = {line["pid"] for line in lines if line["signal"] == "worker_process_init"}
    inits = [line for line in lines if line["signal"] == "worker_process_init"]
    assert len(children) == 2 == len(inits) and parent not in children  # once in each child

    def where(signal: str, job: str) -> list[dict[str, Any]]:
        return [
            line
            for line in lines
            if line["signal"] == signal and job in (line.get("job"), line.get("task_id"))
        ]

    for job, outcome in ((ok.id, "task_success"), (bad.id, "task_failure")):
        for signal in ("task_prerun", outcome, "task_postrun"):
            (line,) = where(signal, job)
            assert line["pid"] in children
    assert where("task_success", ok.id)[0]["result"] == 5
    assert where("task_failure", bad.id)[0]["exception"] == "CustomError"
    assert where("task_prerun", traced.id)[0]["headers"] == {"tenant": "acme"}
    assert where("task_postrun", awaited.id)[0]["state"] == states.SUCCESS
    shutdowns = [line for line in lines if line["signal"] == "worker_process_shutdown"]
    assert {line["pid"] for line in shutdowns} == children
    in_parent = [line["signal"] for line in lines if line["pid"] == parent]
    assert [s for s in in_parent if s.startswith("worker_")] == [
        "worker_init",
        "worker_ready",
        "worker_shutdown",
    ]
    assert in_parent.count("task_received") == 4
    assert os.environ[SIGNALS_FILE] == str(path)


def test_process_pool_kill_at_the_hard_limit_sends_the_failure_from_the_worker(
    jq: Any, start_worker: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "signals.jsonl"
    monkeypatch.setenv(SIGNALS_FILE, str(path))
    worker = start_worker("--pool", "processes", "--concurrency", "1", app="tests.signals_app:app")
    result = jq.runaway.apply_async(countdown=0)  # time_limit=1, max_retries default: 3
    wait_for(
        lambda: [
            line
            for line in _lines(path)
            if line["signal"] in ("task_retry", "task_failure") and line.get("task") == "runaway"
        ],
        30,
        "the hard limit",
    )
    lines = _lines(path)
    (prerun,) = [line for line in lines if line["signal"] == "task_prerun"][:1]
    stopped = [line for line in lines if line["signal"] in ("task_retry", "task_failure")]
    assert stopped[0]["pid"] == worker.proc.pid != prerun["pid"]  # sent by the worker
    assert not [line for line in lines if line["signal"] == "task_postrun"]  # killed mid-run
    result.revoke()
