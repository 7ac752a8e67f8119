"""The overview's charts (jobqueue/dashboard/charts.py): a minute's bars come
from the hour read at the first sample, from the counters' samples after it,
or both for the minute the first sample fell in."""

from __future__ import annotations

import pytest

from jobqueue.dashboard.charts import MINUTES, Counts, History, Sampler

T0 = 1_800_000_000.0  # a whole minute (epoch seconds)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_hour_before_the_first_sample_comes_from_history() -> None:
    clock = Clock(T0 + 30)  # half way through a minute
    counters = {"q": (100, 10)}
    history: History = {"q": {round(T0 - 120): (4, 1), round(T0): (2, 0)}}
    asked: list[float] = []

    def first(since: float) -> tuple[Counts, History]:
        asked.append(since)
        return dict(counters), history

    sampler = Sampler(lambda: dict(counters), every=10, clock=clock, first=first)
    sampler.sample()
    assert asked == [T0 + 30 - 3600] and sampler.since == T0 + 30 - 3600
    counters["q"] = (103, 11)  # 3 succeeded, 1 failed after the first sample
    clock.now = T0 + 60
    sampler.sample()
    minutes = sampler.series("q", now=T0 + 60)
    assert len(minutes) == MINUTES
    by_start = {m.start: m for m in minutes}
    assert (by_start[T0 - 120].succeeded, by_start[T0 - 120].failed) == (4, 1)
    assert (by_start[T0 - 60].succeeded, by_start[T0 - 60].failed) == (0, 0)  # read: none
    # The minute of the first sample: history before it, counters after.
    assert (by_start[T0].succeeded, by_start[T0].failed) == (2 + 3, 0 + 1)
    assert all(m.succeeded is not None for m in minutes[:-1])


def test_without_the_history_the_charts_start_at_the_first_sample() -> None:
    clock = Clock(T0 + 30)

    def first(since: float) -> tuple[Counts, History]:
        raise TimeoutError("canceling statement due to statement timeout")

    sampler = Sampler(lambda: {"q": (5, 0)}, every=10, clock=clock, first=first)
    sampler.sample()
    assert sampler.since == T0 + 30  # what the overview shows: sampling since
    clock.now = T0 + 90
    sampler.sample()
    minutes = sampler.series("q", now=T0 + 90)
    assert minutes[-3].succeeded is None  # before the dashboard started: empty, not zero
    assert minutes[-1].succeeded == 0  # between two samples


@pytest.mark.parametrize("fails", [False, True])
def test_the_history_is_read_once(fails: bool) -> None:
    calls = []

    def first(since: float) -> tuple[Counts, History]:
        calls.append(since)
        if fails:
            raise RuntimeError("away")
        return {}, {}

    sampler = Sampler(dict, every=10, clock=Clock(T0), first=first)
    for _ in range(3):
        sampler.sample()
    assert len(calls) == 1
