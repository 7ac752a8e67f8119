"""What the dashboard's pages read: one method per ``dashboard_*`` statement
of ``sql/queries.sql`` (the section that says why each is fast at 10 M
jobs). The dashboard's *actions* are not here: they are the operations'
SQL functions, called through ``Store`` and ``app.control``.

A page's reads share one transaction (one snapshot: the numbers of a page
agree with each other) bounded on the server by ``statement_timeout``. They
need only SELECT (``jobqueue db grant --monitor``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..app import JobQueue
    from ..db import Row

LOWEST_ID = "00000000-0000-0000-0000-000000000000"
HIGHEST_ID = "ffffffff-ffff-ffff-ffff-ffffffffffff"


def id_floor(moment: datetime) -> str:
    """The lowest UUIDv7 of ``moment`` (what uuid7_floor() gives in SQL)."""
    millis = min(max(math.floor(moment.timestamp() * 1000), 0), 2**48 - 1)
    digits = f"{millis:012x}"
    return f"{digits[:8]}-{digits[8:]}-7000-8000-000000000000"


@dataclass(frozen=True)
class JobFilter:
    """The jobs list's filters (checked by the page that builds it)."""

    state: str | None = None
    queue: str | None = None
    task: str | None = None
    exception: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    args: str | None = None  # JSON text, for containment (args @> it, or kwargs @> it)

    @property
    def counted(self) -> bool:
        """Whether counters can say about how many match (no task, exception
        or argument filter)."""
        return self.task is None and self.exception is None and self.args is None


# The states a job with an error can be in (all counted per hour by job_counts).
ERROR_STATES = ("FAILURE", "RETRY", "REVOKED")

# Rows read by a walk's first steps: a dense filter fills its page from the
# first step's few hundred rows; a sparse one reads more at each step, up to
# the budget (so the time left is checked at least every budget rows).
FIRST_STEPS = (500, 2_000, 8_000)


def steps(budget: int) -> Iterator[int]:
    for size in FIRST_STEPS:
        if size >= budget:
            break
        yield size
    while True:
        yield budget


def id_time(job_id: str) -> datetime:
    """When a UUIDv7 was made (its first 48 bits: Unix ms)."""
    millis = int(job_id.replace("-", "")[:12], 16)
    return datetime.fromtimestamp(min(millis / 1000, 253402300799), timezone.utc)


@dataclass(frozen=True)
class Walk:
    """One page's walk of the jobs newest first: its matches (id, state),
    how many rows it read, and where the next page goes on (``cursor``: the
    ids below it; None when nothing older is left). ``stopped``: the time
    ran out before the page filled, and ``cursor`` says how far back it
    looked."""

    rows: list[Row]
    read: int
    cursor: str | None
    stopped: bool = False

    @property
    def exhausted(self) -> bool:
        return self.cursor is None

    @property
    def searched_to(self) -> datetime | None:
        return id_time(self.cursor) if self.cursor else None


@dataclass
class Failures:
    """The failures page's walk: (task, exception) -> [failures, newest id],
    newest group first, and where it stopped, as ``Walk``."""

    groups: dict[tuple[str, str], list[Any]]
    read: int
    cursor: str | None
    stopped: bool = False

    @property
    def exhausted(self) -> bool:
        return self.cursor is None

    @property
    def searched_to(self) -> datetime | None:
        return id_time(self.cursor) if self.cursor else None


def _over(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


class Reads:
    def __init__(self, app: JobQueue, timeout: float = 5.0) -> None:
        self.app = app
        self.timeout = timeout
        self._conn: Any = None

    @contextmanager
    def page(self) -> Iterator[Reads]:
        """The reads of one page, in one bounded transaction."""
        with self.app.db.transaction() as conn:
            reads = Reads(self.app, self.timeout)
            reads._conn = conn
            reads._run("dashboard_timeout", {"ms": f"{max(int(self.timeout * 1000), 1)}ms"})
            yield reads

    def _run(self, name: str, params: dict[str, Any]) -> list[Row]:
        return self.app.db.run(self._conn, name, params)

    # -- overview, queues, workers, schedules, limits ----------------------------------

    def queues(self) -> list[Row]:
        return self._run("dashboard_queues", {})

    def outcomes(self) -> list[Row]:
        """(queue, succeeded, failed) counters: what the charts sample."""
        return self._run("dashboard_outcomes", {})

    def finished_minutes(self, since: float, timeout: float) -> list[Row]:
        """(queue, minute's start in epoch seconds, succeeded, failed) of the
        jobs finished since ``since`` (epoch seconds), read for at most
        ``timeout`` seconds (this transaction's later reads too)."""
        self._run("dashboard_timeout", {"ms": f"{max(int(timeout * 1000), 1)}ms"})
        return self._run(
            "dashboard_finished_minutes", {"since": datetime.fromtimestamp(since, timezone.utc)}
        )

    def workers(self) -> list[Row]:
        return self._run("dashboard_workers", {})

    def lapsed(self) -> list[Row]:
        return self._run("dashboard_lapsed", {})

    def schedules(self) -> list[Row]:
        return self._run("dashboard_schedules", {})

    def schedules_soon(self, limit: int = 5) -> list[Row]:
        return self._run("dashboard_schedules_soon", {"limit": limit})

    def limits(self) -> list[Row]:
        return self._run("dashboard_limits", {})

    # -- jobs ----------------------------------------------------------------------

    def walk(
        self, filters: JobFilter, before: str | None, page: int, budget: int,
        deadline: float | None = None,
    ) -> Walk:  # fmt: skip
        """The first ``page`` jobs that match ``filters`` below the id
        ``before``, newest first, read ``budget`` rows at most per statement
        until ``deadline`` (``time.monotonic()``; None: no limit). Where they
        are read from: see dashboard_walk_all in queries.sql."""
        high = _below(before, filters.until)
        low = id_floor(filters.since) if filters.since else LOWEST_ID
        states: tuple[str, ...] | None = (filters.state,) if filters.state else None
        if filters.state == "PENDING":
            statement = "dashboard_walk_waiting"
        elif filters.state == "STARTED":
            statement = "dashboard_walk_running"
        elif filters.state is not None or filters.exception is not None:
            # Finished and retrying jobs (an exception is only on those), over
            # the hours that hold some.
            statement, states = "dashboard_walk_history", states or ERROR_STATES
        else:
            statement = "dashboard_walk_all"
        params = {
            "states": list(states) if states else None,
            "queue": filters.queue,
            "task": filters.task,
            "exception": filters.exception,
            "args": filters.args,
        }
        if statement == "dashboard_walk_history":
            assert states is not None
            segments = self._hours(states, filters.queue, high, low)
        else:
            segments = iter([(low, high)])
        found: list[Row] = []
        read = 0
        for start, end in segments:
            cursor = end
            for size in steps(budget):
                rows = self._run(
                    statement,
                    {**params, "high": cursor, "low": start, "budget": size,
                     "page": page - len(found)},
                )  # fmt: skip
                scanned = int(rows[0][0]) if rows else 0
                found += [r[2:] for r in rows if r[2] is not None]
                read += scanned
                if len(found) >= page:
                    return Walk(found, read, str(found[-1][0]))
                if scanned < size or rows[0][1] is None:
                    break  # this segment is read to its start
                cursor = str(rows[0][1])
                if _over(deadline):
                    return Walk(found, read, cursor, stopped=True)
            if _over(deadline) and start > low:
                return Walk(found, read, start, stopped=True)
        return Walk(found, read, None)

    def _hours(
        self, states: tuple[str, ...], queue: str | None, high: str, low: str
    ) -> Iterator[tuple[str, str]]:
        """Id ranges [start, end) of the hours below ``high`` (and from
        ``low``) that hold jobs of ``states`` (and ``queue``), newest first."""
        top, batch = high, 24
        while True:
            hours = self._run(
                "dashboard_walk_hours",
                {"states": list(states), "queue": queue, "high": top, "low": low, "limit": batch},
            )
            for (hour,) in hours:
                start = max(id_floor(hour), low)
                end = min(id_floor(hour + timedelta(hours=1)), top)
                if start < end:
                    yield start, end
            if len(hours) < batch:
                return
            top = id_floor(hours[-1][0])

    def rows(self, ids: list[str]) -> list[Row]:
        """The jobs list's columns of these jobs, newest first."""
        return self._run("dashboard_jobs_rows", {"ids": ids}) if ids else []

    def estimate(self, filters: JobFilter) -> int:
        params = {
            "state": filters.state,
            "queue": filters.queue,
            "since": filters.since,
            "until": filters.until,
        }
        return int(self._run("dashboard_jobs_estimate", params)[0][0] or 0)

    def job(self, job_id: str) -> Row | None:
        rows = self._run("dashboard_job", {"id": job_id})
        return rows[0] if rows else None

    def attempts(self, job_id: str) -> list[Row]:
        return self._run("dashboard_job_attempts", {"id": job_id})

    def children(self, job_id: str) -> list[Row]:
        return self._run("dashboard_job_children", {"id": job_id})

    def group(self, group_id: str) -> list[Row]:
        return self._run("dashboard_group", {"id": group_id})

    def chord(self, chord_id: str) -> Row | None:
        rows = self._run("dashboard_chord", {"id": chord_id})
        return rows[0] if rows else None

    # -- failures and workflows ------------------------------------------------------

    def failures(
        self, before: str | None, since: datetime | None, budget: int,
        deadline: float | None = None,
    ) -> Failures:  # fmt: skip
        """Jobs failed below ``before`` (and since ``since``), grouped by
        task and exception type, newest first, until ``deadline``."""
        low = id_floor(since) if since else LOWEST_ID
        cursor = before or HIGHEST_ID
        groups: dict[tuple[str, str], list[Any]] = {}
        read = 0
        for size in steps(budget):
            rows = self._run("dashboard_failures", {"high": cursor, "low": low, "budget": size})
            scanned = int(rows[0][0]) if rows else 0
            read += scanned
            # Newest group first: a step's groups are all older than the last's.
            for task, exception, n, newest in sorted(
                (r[2:] for r in rows if r[2] is not None), key=lambda g: str(g[3]), reverse=True
            ):
                group = groups.setdefault((str(task), str(exception)), [0, str(newest)])
                group[0] += int(n)
            if scanned < size or rows[0][1] is None:
                return Failures(groups, read, None)
            cursor = str(rows[0][1])
            if _over(deadline):
                return Failures(groups, read, cursor, stopped=True)
        raise AssertionError("steps() never ends")  # pragma: no cover

    def failure_examples(self, ids: list[str]) -> dict[str, Row]:
        """id -> (id, message, finished_at) of these failed jobs."""
        rows = self._run("dashboard_failure_examples", {"ids": ids}) if ids else []
        return {str(r[0]): r for r in rows}

    def failed_totals(self) -> dict[str, int]:
        return {str(task): int(n) for task, n in self._run("dashboard_failed_totals", {})}

    def workflow_roots(self, before: str | None, page: int) -> list[str]:
        rows = self._run("dashboard_workflow_roots", {"before": before or HIGHEST_ID, "page": page})
        return [str(r[0]) for r in rows]

    def workflow_summaries(self, roots: list[str]) -> list[Row]:
        return self._run("dashboard_workflow_summaries", {"roots": roots}) if roots else []

    def workflow(self, root: str, limit: int) -> list[Row]:
        return self._run("dashboard_workflow", {"root": root, "limit": limit})

    def chords(self, ids: list[str]) -> list[Row]:
        return self._run("dashboard_chords", {"ids": ids}) if ids else []


def _below(before: str | None, until: datetime | None) -> str:
    """The exclusive upper id of a page: the cursor, or the end of the range."""
    bounds = [b for b in (before, id_floor(until) if until else None) if b]
    return min(bounds) if bounds else HIGHEST_ID


__all__ = [
    "HIGHEST_ID",
    "LOWEST_ID",
    "Failures",
    "JobFilter",
    "Reads",
    "Walk",
    "id_floor",
    "id_time",
]
