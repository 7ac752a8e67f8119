"""The pool's local queue holds a job admitted ahead of its rate limit's
token (``not_before``) until then: late is allowed, early never is."""

from __future__ import annotations

import threading
import time

from jobqueue.worker.job import Job
from jobqueue.worker.pools.local import LocalQueue


def _job(n: int, delay: float | None = None) -> Job:
    job = Job(f"id-{n}", "t", "default", "[[],{},{}]", 1, None, None, None)
    if delay is not None:
        job.not_before = time.monotonic() + delay
    return job


def test_a_held_job_starts_no_earlier_than_its_time_and_others_pass_it() -> None:
    jobs = LocalQueue()
    held = _job(1, delay=0.2)
    jobs.put_many([held, _job(2), _job(3)])
    assert [jobs.get().id for _ in range(2)] == ["id-2", "id-3"]  # type: ignore[union-attr]
    got = jobs.get()
    assert got is held
    assert held.not_before is not None and time.monotonic() >= held.not_before


def test_held_jobs_come_in_the_order_of_their_times() -> None:
    jobs = LocalQueue()
    jobs.put_many([_job(1, 0.06), _job(2, 0.02), _job(3, 0.04)])
    order = []
    for _ in range(3):
        job = jobs.get()
        assert job is not None and job.not_before is not None
        assert time.monotonic() >= job.not_before
        order.append(job.id)
    assert order == ["id-2", "id-3", "id-1"]


def test_a_slot_waiting_for_a_later_job_takes_a_sooner_one_put_meanwhile() -> None:
    jobs = LocalQueue()
    jobs.put_many([_job(1, 30.0)])
    got: list[str] = []
    slot = threading.Thread(target=lambda: got.append(jobs.get().id))  # type: ignore[union-attr]
    slot.start()
    jobs.put_many([_job(2, 0.01)])
    slot.join(10)
    assert got == ["id-2"]
    assert [job.id for job in jobs.drain()] == ["id-1"]


def test_held_jobs_are_taken_back_by_drain_remove_and_listed_by_snapshot() -> None:
    jobs = LocalQueue()
    jobs.put_many([_job(1), _job(2, 30.0), _job(3, 20.0), _job(4, 10.0)])
    assert [job.id for job in jobs.snapshot()] == ["id-1", "id-4", "id-3", "id-2"]
    removed = jobs.remove("id-3")
    assert removed is not None and removed.id == "id-3"
    assert jobs.remove("id-3") is None
    assert [job.id for job in jobs.drain()] == ["id-1", "id-4", "id-2"]
    assert jobs.snapshot() == []
    jobs.close(1)
    assert jobs.get() is None


def test_a_claim_rows_start_delay_is_believed_only_within_bounds() -> None:
    """start_in comes from the database: a delay that is not a finite
    positive number starts the job at once; a huge one waits a second."""
    row = ("id", "t", "default", "[]", "{}", "{}", 1, None, None, None, False, False)
    rest = (None, 0.0, 0, None, None)  # expires_in, age, priority, fair key, weight
    for start_in, bound in ((None, None), (float("nan"), None), (-1.0, None), (0.0, None)):
        assert Job.from_row((*row, *rest, start_in, None)).not_before is bound
    before = time.monotonic()
    soon = Job.from_row((*row, *rest, 0.02, None)).not_before
    assert soon is not None and before + 0.02 <= soon <= time.monotonic() + 0.02
    late = Job.from_row((*row, *rest, 1e9, None)).not_before
    assert late is not None and late <= time.monotonic() + 1.0


def _ranked(n: int, priority: int | None) -> Job:
    job = _job(n)
    job.priority = priority
    return job


def test_jobs_leave_by_priority_then_in_the_order_they_came() -> None:
    """A high-priority job claimed while lower ones are prefetched starts
    next, not behind them; equal priorities keep their order; none is 0."""
    jobs = LocalQueue()
    jobs.put_many([_ranked(1, 0), _ranked(2, 0), _ranked(3, None)])
    jobs.put_many([_ranked(4, 9)])
    jobs.put_many([_ranked(5, 5), _ranked(6, 9), _ranked(7, -1)])
    assert [job.id for job in jobs.snapshot()] == [f"id-{n}" for n in (4, 6, 5, 1, 2, 3, 7)]
    assert jobs.remove("id-5") is not None
    order = [jobs.get().id for _ in range(6)]  # type: ignore[union-attr]
    assert order == [f"id-{n}" for n in (4, 6, 1, 2, 3, 7)]


def test_retired_slots_leave_first_and_closed_ones_after_the_jobs() -> None:
    jobs = LocalQueue()
    jobs.put_many([_ranked(1, 0), _ranked(2, 3)])
    jobs.retire(1)
    jobs.close(2)
    assert jobs.get() is None  # a retired slot, ahead of the jobs
    assert [jobs.get().id for _ in range(2)] == ["id-2", "id-1"]  # type: ignore[union-attr]
    assert jobs.get() is None and jobs.get() is None  # then the closed ones


def test_many_priorities_over_time_keep_the_order() -> None:
    jobs = LocalQueue()
    for n in range(40):  # more priorities than it keeps while none waits
        jobs.put_many([_ranked(n, n % 20)])
        assert jobs.get().id == f"id-{n}"  # type: ignore[union-attr]
    jobs.put_many([_ranked(100, 1), _ranked(101, 30), _ranked(102, -5)])
    assert [job.id for job in jobs.drain()] == ["id-101", "id-100", "id-102"]


def test_get_nowait_takes_a_waiting_job_or_none_and_unget_puts_it_first() -> None:
    """The process pool hands a child its next job with get_nowait while the
    child runs one; a job too large to go ahead is put back first (unget)."""
    jobs = LocalQueue()
    assert jobs.get_nowait() is None
    jobs.put_many([_job(1), _job(2), _job(3, delay=60)])
    first = jobs.get_nowait()
    assert first is not None and first.id == "id-1"
    jobs.unget(first)
    assert [job.id for job in jobs.snapshot()] == ["id-1", "id-2", "id-3"]
    assert [jobs.get_nowait().id for _ in range(2)] == ["id-1", "id-2"]  # type: ignore[union-attr]
    assert jobs.get_nowait() is None  # the held one is not due
    jobs.retire(1)
    jobs.put(_job(4))
    assert jobs.get_nowait() is None  # a slot is leaving: it takes its turn at get()
    assert jobs.get() is None
    assert jobs.get_nowait() is not None


def test_get_nowait_keeps_a_job_for_each_free_slot() -> None:
    """A busy child is handed a job ahead only when no free slot would take
    it: a child holding jobs ahead of a long one left the other slot idle."""
    jobs = LocalQueue()
    jobs.put_many([_job(1), _job(2)])
    assert jobs.get_nowait(keep=2) is None
    got = jobs.get_nowait(keep=1)
    assert got is not None and got.id == "id-1"
    assert jobs.get_nowait(keep=1) is None
    assert jobs.get() is not None  # the free slot's
