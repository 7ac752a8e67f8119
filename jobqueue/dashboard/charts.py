"""Throughput and failures per queue and minute over the last hour, drawn as
inline SVG on the server (no JavaScript, no request of its own: the chart
refreshes with the overview's partial).

Where the numbers come from, and what they cost. Jobs finished per minute
could be counted from ``jobs.finished_at`` over the last hour, but nothing
indexes ``finished_at`` (an index on a column the completion updates would
end its HOT updates: work added to every completion), and jobs finished in
the last hour may have been enqueued any time before, in any partition: a
scan of history. The outcome counters of ``job_metrics`` (revision 0015)
already count every job that ends, per queue, and hold a few rows per
(queue, task, session) whatever the history: ``Sampler`` reads their sums
(``dashboard_outcomes``, a few milliseconds) every ``every`` seconds in a
thread of the dashboard, and a minute's throughput is the difference of the
counters across it. Each dashboard process samples for itself.

The hour before it started is read once, with the first sample and in the
same snapshot (``first``: ``dashboard_finished_minutes``, jobs finished per
queue and minute, reading only the hours of ids that job_counts says had a
finish in that hour), bounded in time: when that read fails or takes too
long, the charts start empty and say since when they sample (a minute not
sampled is shown empty, not as zero).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("jobqueue.dashboard")

MINUTES = 60

Counts = dict[str, tuple[int, int]]  # queue -> (succeeded, failed), as the counters read
# queue -> minute's start (whole epoch seconds) -> (succeeded, failed), before sampling began
History = dict[str, dict[int, tuple[int, int]]]


@dataclass(frozen=True)
class Minute:
    start: float  # epoch seconds
    succeeded: int | None  # None: not sampled across this minute
    failed: int | None


class Sampler:
    """Samples the outcome counters (``read``) every ``every`` seconds in a
    daemon thread, started by the first ``start()`` call; keeps an hour and a
    bit. ``series(queue)`` gives the last ``MINUTES`` minutes."""

    def __init__(
        self,
        read: Callable[[], Counts],
        every: float = 10.0,
        clock: Callable[[], float] = time.time,
        first: Callable[[float], tuple[Counts, History]] | None = None,
    ) -> None:
        self.read = read
        self.first = first
        self.every = every
        self.clock = clock
        self.samples: deque[tuple[float, Counts]] = deque(maxlen=int(3900 / every) + 2)
        self.history: History = {}
        self.filled = False  # the hour before the first sample was read
        self.since: float | None = None  # what the charts cover from (epoch seconds)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._failing = False

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._loop, name="jobqueue-dashboard-sampler", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every)

    def sample(self) -> None:
        if self.since is None and self.first is not None:
            start = self.clock()
            try:
                counts, history = self.first(start - 60 * MINUTES)
            except Exception as exc:  # too slow, or the database away: sample from now on
                log.info("charts: the last hour's history not read (%s); sampling from now", exc)
            else:
                with self._lock:
                    self.history, self.filled = history, True
                    self.since = start - 60 * MINUTES
                    self.samples.append((start, counts))
                return
        try:
            counts = self.read()
        except Exception as exc:  # the database away: the charts show a gap
            if not self._failing:
                log.warning("cannot sample the outcome counters for the charts: %s", exc)
            self._failing = True
            return
        if self._failing:
            log.info("sampling the outcome counters again")
        self._failing = False
        with self._lock:
            taken = self.clock()
            if self.since is None:
                self.since = taken
            self.samples.append((taken, counts))

    def series(self, queue: str, now: float | None = None) -> list[Minute]:
        """The last ``MINUTES`` whole minutes and the current one, oldest first."""
        now = self.clock() if now is None else now
        with self._lock:
            samples = list(self.samples)
            history = self.history.get(queue, {})
            filled = self.filled
        first_taken = samples[0][0] if samples else None
        current = now - now % 60
        out = []
        for i in range(MINUTES - 1, -1, -1):
            start = current - 60 * i
            # Finished before the first sample: from the history read then.
            old_ok, old_failed = (0, 0)
            read_before = filled and first_taken is not None and start < first_taken
            if read_before:
                old_ok, old_failed = history.get(round(start), (0, 0))
            # From the last sample before the minute, or (the dashboard
            # started during it) its first sample: a partial minute.
            before = _at(samples, start, queue) or _first(samples, start, queue)
            after = _at(samples, min(start + 60, now), queue)
            if before is None or after is None or after[0] <= before[0]:
                if read_before and first_taken is not None and start + 60 <= first_taken:
                    out.append(Minute(start, old_ok, old_failed))  # wholly before sampling
                else:
                    out.append(Minute(start, None, None))
                continue
            out.append(
                Minute(
                    start,
                    old_ok + max(after[1][0] - before[1][0], 0),  # never negative (a reset)
                    old_failed + max(after[1][1] - before[1][1], 0),
                )
            )
        return out


def _at(
    samples: list[tuple[float, Counts]], moment: float, queue: str
) -> tuple[float, tuple[int, int]] | None:
    """The last sample taken at or before ``moment`` (a queue it lacks: zeros)."""
    found = None
    for taken, counts in samples:
        if taken > moment:
            break
        found = (taken, counts.get(queue, (0, 0)))
    return found


def _first(
    samples: list[tuple[float, Counts]], moment: float, queue: str
) -> tuple[float, tuple[int, int]] | None:
    """The first sample taken at or after ``moment``."""
    for taken, counts in samples:
        if taken >= moment:
            return taken, counts.get(queue, (0, 0))
    return None


def totals(minutes: list[Minute]) -> tuple[int, int, bool]:
    """Succeeded and failed over the minutes sampled, and whether any was."""
    seen = [m for m in minutes if m.succeeded is not None]
    return (
        sum(m.succeeded or 0 for m in seen),
        sum(m.failed or 0 for m in seen),
        bool(seen),
    )


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    height: float
    fy: float  # the failed part, drawn over the bar's foot
    fheight: float
    title: str


def bars(minutes: list[Minute], width: int = 180, height: int = 32) -> list[Bar]:
    """One bar per minute (succeeded + failed, failed in red at its foot),
    scaled to the busiest minute; minutes not sampled or without a finished
    job have no bar."""
    peak = max(((m.succeeded or 0) + (m.failed or 0) for m in minutes), default=0) or 1
    step = width / max(len(minutes), 1)
    out = []
    for i, m in enumerate(minutes):
        ok, failed = m.succeeded or 0, m.failed or 0
        if not ok + failed:
            continue  # not sampled, or nothing finished: no bar (the chart's title has totals)
        h = height * (ok + failed) / peak
        fh = height * failed / peak
        when = time.strftime("%H:%M", time.localtime(m.start))
        out.append(
            Bar(
                x=round(i * step, 2),
                y=round(height - h, 2),
                height=round(h, 2),
                fy=round(height - fh, 2),
                fheight=round(fh, 2),
                title=f"{when}: {ok} succeeded, {failed} failed",
            )
        )
    return out


__all__ = ["MINUTES", "Bar", "Minute", "Sampler", "bars", "totals"]
