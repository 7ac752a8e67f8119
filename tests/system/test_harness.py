"""The test harness's own guarantees, where a failure must explain itself."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import WorkerHung


def test_a_worker_that_does_not_stop_in_time_is_reported_with_its_stacks(
    start_worker: Any,
) -> None:
    """``terminate`` past its timeout raises WorkerHung with every thread's
    stack (faulthandler, on SIGABRT) and the server's sessions: an
    intermittent hang at shutdown then says what it was waiting for. Here the
    timeout is too short for any worker to meet."""
    worker = start_worker("--concurrency", "1")
    with pytest.raises(WorkerHung) as raised:
        worker.terminate(timeout=0.001)
    report = str(raised.value)
    assert "did not stop within" in report
    assert "server sessions:" in report and "jobqueue-worker" in report
    assert "Thread 0x" in report and "jobqueue/worker/" in report  # the stacks
