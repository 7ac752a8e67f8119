"""Hooks: emitted where a job's state changes; a failing subscriber breaks nothing."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from jobqueue import chain
from jobqueue.worker import Worker


def test_publish_hooks_see_every_resolved_job(jq: Any) -> None:
    seen: list[tuple[str, str]] = []
    batches: list[tuple[str, int, str]] = []
    jq.app.hooks.connect("before_publish", lambda spec, **_: seen.append((spec.task, spec.queue)))

    @jq.app.hooks.connect("before_publish_many")
    def many(task: str, ids: list[str], queue: str, **_: Any) -> None:
        batches.append((task, len(ids), queue))

    jq.add.delay(1, 2)
    jq.app.send_task("add", (1, 2), queue="other")
    chain(jq.add.s(1, 1), jq.add.s(2)).apply_async()
    jq.app.enqueue_many(jq.add, [(1, 1), (2, 2), (3, 3)])
    assert seen == [("add", "default"), ("add", "other"), ("add", "default"), ("add", "default")]
    assert batches == [("add", 3, "default")]


def test_worker_hooks_and_a_failing_subscriber(jq: Any) -> None:
    events: list[str] = []
    recorded: list[str] = []

    def explode(**_: Any) -> None:
        raise RuntimeError("a subscriber's bug")

    for hook in ("worker_ready", "outcomes_recorded", "worker_stopped", "before_publish"):
        jq.app.hooks.connect(hook, explode)  # first: the others still run
    jq.app.hooks.connect("worker_ready", lambda worker, **_: events.append("ready"))
    jq.app.hooks.connect("worker_stopped", lambda worker, **_: events.append("stopped"))
    jq.app.hooks.connect(
        "outcomes_recorded",
        lambda worker, outcomes, **_: recorded.extend(o.job_id for o in outcomes),
    )
    worker = Worker(jq.app, concurrency=2)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    result = jq.add.delay(2, 3)
    assert result.get(timeout=20) == 5
    worker.stop()
    thread.join(30)
    assert events == ["ready", "stopped"]
    assert result.id in recorded


def test_an_unknown_hook_is_refused(jq: Any) -> None:
    with pytest.raises(ValueError, match="unknown hook 'task_sucess'"):
        jq.app.hooks.connect("task_sucess", print)
