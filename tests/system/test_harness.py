"""The test harness's own guarantees, where a failure must explain itself."""

from __future__ import annotations

from typing import Any

import pytest

from jobqueue import states
from tests.conftest import WorkerHung, wait_for


def test_a_worker_that_does_not_stop_in_time_is_reported_with_its_stacks(
    jq: Any, start_worker: Any
) -> None:
    """``terminate`` past its timeout raises WorkerHung with every thread's
    stack (faulthandler, on SIGABRT) and the server's sessions: an
    intermittent hang at shutdown then says what it was waiting for. Here the
    worker is running a minute-long job, which a warm shutdown waits for, so
    its sessions are still there when the report asks (with only a short
    timeout, a quick shutdown had sometimes closed them already)."""
    worker = start_worker("--concurrency", "1")
    running = jq.ticking.delay(60)
    wait_for(lambda: running.state == states.STARTED, 30, "the long job to start")
    with pytest.raises(WorkerHung) as raised:
        worker.terminate(timeout=0.5)
    report = str(raised.value)
    assert "did not stop within" in report
    assert "server sessions:" in report and "jobqueue-worker" in report
    assert "Thread 0x" in report and "jobqueue/worker/" in report  # the stacks
