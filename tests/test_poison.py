"""Jobs a worker cannot run, and what a slot does with them.

A job whose stored payload cannot be decoded or validated, one that expired
while it waited for a slot, and any fault around a job in a pool must end
that job (reported exactly once) and leave the slot running the next one.
The pool tests drive the pools directly (no database); the worker tests write
the bad rows with SQL and run a real worker.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import pytest

from jobqueue import JobQueue, states
from jobqueue.executor import Job, Outcome
from jobqueue.pools.local import LocalQueue
from jobqueue.pools.threads import ThreadPool
from jobqueue.serialization import loads
from tests.conftest import wait_for


def _row(job_id: str, task: str, args: str = "[]", options: str = "{}", **extra: Any) -> Any:
    """A job_claim row: 12 columns, or 13 when ``expires_in`` is given."""
    head = (job_id, task, "default", args, "{}", options, 1, None, None, None, False, False)
    return head + ((extra["expires_in"],) if "expires_in" in extra else ())


class _Pool:
    """A ThreadPool on an app that never connects, collecting what it reports."""

    def __init__(self, app: JobQueue, size: int = 1) -> None:
        self.outcomes: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self.pool = ThreadPool(app, size=size, hostname="test", report=self.outcomes.put)
        self.pool.start()

    def next(self, timeout: float = 10.0) -> Outcome:
        return self.outcomes.get(timeout=timeout)

    def nothing_more(self) -> bool:
        return self.outcomes.empty()


@pytest.fixture
def app() -> Any:
    # No DSN is ever used: the pools do not touch the database.
    application = JobQueue("postgresql://unused.invalid/none", auto_migrate=False)
    yield application


# -- D: the claim's expiry, and taking back a prefetched job --------------------------


def test_a_claim_row_with_or_without_expires_in_gives_a_monotonic_deadline() -> None:
    plain = Job.from_row(_row("a", "t"))
    assert plain.expires_deadline is None and not plain.has_expired()
    unbounded = Job.from_row(_row("b", "t", expires_in=None))
    assert unbounded.expires_deadline is None
    before = time.monotonic()
    soon = Job.from_row(_row("c", "t", expires_in=60.0))
    assert soon.expires_deadline is not None
    assert before + 60.0 <= soon.expires_deadline <= time.monotonic() + 60.0
    assert not soon.has_expired()
    assert Job.from_row(_row("d", "t", expires_in=-0.5)).has_expired()


def test_local_queue_remove_takes_back_only_a_job_not_yet_started() -> None:
    local = LocalQueue()
    first, second, third = (Job.from_row(_row(i, "t")) for i in ("1", "2", "3"))
    for job in (first, second, third):
        local.put(job)
    local.close(1)
    assert local.remove("2") is second
    assert local.remove("2") is None  # already taken back
    assert local.get() is first  # started: no longer in the queue
    assert local.remove("1") is None
    assert local.remove("unknown") is None
    assert local.get() is third
    assert local.get() is None  # the slot's stop marker is kept


def test_the_thread_pool_discards_a_prefetched_job(app: JobQueue) -> None:
    gate = threading.Event()
    ran: list[str] = []

    @app.task(name="wait_gate")
    def wait_gate(tag: str) -> str:
        ran.append(tag)
        gate.wait(10)
        return tag

    pool = _Pool(app)
    pool.pool.submit(Job.from_row(_row("busy", "wait_gate", '["busy"]')))
    wait_for(lambda: ran == ["busy"], what="the slot to start the first job")
    revoked = Job.from_row(_row("prefetched", "wait_gate", '["prefetched"]'))
    pool.pool.submit(revoked)
    pool.pool.submit(Job.from_row(_row("next", "wait_gate", '["next"]')))
    assert pool.pool.discard("prefetched") is revoked
    assert pool.pool.discard("busy") is None  # running: not the pool's to take back
    gate.set()
    assert [pool.next().job_id, pool.next().job_id] == ["busy", "next"]
    assert ran == ["busy", "next"]
    assert pool.nothing_more()


def test_a_job_that_expires_while_it_waits_for_a_slot_is_revoked_unrun(app: JobQueue) -> None:
    gate = threading.Event()
    ran: list[str] = []

    @app.task(name="wait_gate")
    def wait_gate(tag: str) -> str:
        ran.append(tag)
        gate.wait(10)
        return tag

    pool = _Pool(app)
    pool.pool.submit(Job.from_row(_row("busy", "wait_gate", '["busy"]')))
    wait_for(lambda: ran == ["busy"], what="the slot to start the first job")
    # Not expired when claimed; it expires while the only slot is busy.
    stale = Job.from_row(_row("stale", "wait_gate", '["stale"]', expires_in=0.2))
    fresh = Job.from_row(_row("fresh", "wait_gate", '["fresh"]', expires_in=3600.0))
    pool.pool.submit(stale)
    pool.pool.submit(fresh)
    wait_for(stale.has_expired, what="the prefetched job's expiry")
    gate.set()
    outcomes = {o.job_id: o for o in (pool.next(), pool.next(), pool.next())}
    assert outcomes["busy"].state == states.SUCCESS
    assert outcomes["fresh"].state == states.SUCCESS
    assert outcomes["stale"].state == states.REVOKED
    error = loads(outcomes["stale"].error or "null")
    assert error["type"] == "TaskRevokedError" and "expired" in error["message"]
    assert ran == ["busy", "fresh"]  # the expired job never ran
    assert pool.nothing_more()
