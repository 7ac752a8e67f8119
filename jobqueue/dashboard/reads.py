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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
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


@dataclass(frozen=True)
class Scan:
    """One bounded walk of the primary keys: the rows that matched, how many
    were read, and the lowest id read (where the next page goes on from)."""

    rows: list[Row]
    scanned: int
    lowest: str | None
    budget: int

    @property
    def exhausted(self) -> bool:
        """The walk read every row in its range (nothing older is left)."""
        return self.scanned < self.budget


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

    def jobs(self, filters: JobFilter, before: str | None, page: int, budget: int) -> Scan:
        params = {
            "state": filters.state,
            "queue": filters.queue,
            "task": filters.task,
            "exception": filters.exception,
            "args": filters.args,
            "before": _below(before, filters.until),
            "low": id_floor(filters.since) if filters.since else LOWEST_ID,
            "page": page,
            "budget": budget,
        }
        return _scan(self._run("dashboard_jobs", params), budget, 2)

    def job_ids(self, filters: JobFilter, before: str | None, budget: int) -> Scan:
        """(id, state) of every match among ``budget`` rows below ``before``."""
        params = {
            "state": filters.state,
            "queue": filters.queue,
            "task": filters.task,
            "exception": filters.exception,
            "args": filters.args,
            "before": _below(before, filters.until),
            "low": id_floor(filters.since) if filters.since else LOWEST_ID,
            "budget": budget,
        }
        return _scan(self._run("dashboard_job_ids", params), budget, 2)

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

    def failures(self, before: str | None, since: datetime | None, budget: int) -> Scan:
        params = {
            "before": before or HIGHEST_ID,
            "low": id_floor(since) if since else LOWEST_ID,
            "budget": budget,
        }
        return _scan(self._run("dashboard_failures", params), budget, 2)

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


def _scan(rows: list[Row], budget: int, skip: int) -> Scan:
    """Rows of a bounded walk: each starts with (scanned, lowest); a walk that
    matched nothing gives one row of NULLs after them."""
    scanned = int(rows[0][0]) if rows else 0
    lowest = str(rows[0][1]) if rows and rows[0][1] is not None else None
    matched = [r[skip:] for r in rows if r[skip] is not None]
    return Scan(matched, scanned, lowest, budget)


__all__ = ["HIGHEST_ID", "LOWEST_ID", "JobFilter", "Reads", "Scan", "id_floor"]
