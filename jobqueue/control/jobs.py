"""Readable rows: a job as ``find_jobs`` returns it, an attempt of
``job_history``, a queue of ``queue_stats``. Plain frozen dataclasses with a
``to_dict()`` that is JSON-ready (ids as text, times in ISO 8601)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, TypeVar

T = TypeVar("T")


def _plain(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value


class _Row:
    """Built from a row of the store: a mapping, or a tuple in column order."""

    @classmethod
    def from_row(cls: type[T], row: Mapping[str, Any] | Sequence[Any]) -> T:
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        if isinstance(row, Mapping):
            return cls(**{name: row.get(name) for name in names})
        return cls(**dict(zip(names, row, strict=False)))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True)
class Job(_Row):
    """One job, with the columns of the ``all_jobs`` view in its order. A job
    still waiting in one row (no record yet) reads PENDING with ``attempts``
    0 and None where only a record has a value."""

    id: Any
    task: str
    queue: str
    priority: int
    state: str
    args: Any = None
    kwargs: Any = None
    options: Any = None
    run_at: datetime | None = None
    expires_at: datetime | None = None
    attempts: int = 0
    worker_id: Any = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: Any = None
    error: Any = None
    root_id: Any = None
    parent_id: Any = None
    revoked_at: datetime | None = None
    revoke_terminate: bool | None = None
    group_id: Any = None
    group_index: int | None = None
    progress_state: str | None = None
    progress: Any = None

    @property
    def error_type(self) -> str | None:
        return self.error.get("type") if isinstance(self.error, dict) else None

    @property
    def traceback(self) -> str | None:
        tb = self.error.get("traceback") if isinstance(self.error, dict) else None
        return None if tb is None else str(tb)


@dataclass(frozen=True)
class Attempt(_Row):
    """One attempt of a job (a row of the ``job_history`` view)."""

    job_id: Any
    task: str
    attempt: int
    worker_id: Any = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    state: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None


@dataclass(frozen=True)
class QueueStats(_Row):
    """One queue of the ``queue_stats`` view, as ``jobqueue queue list`` shows it."""

    queue: str
    pending: int = 0
    started: int = 0
    retry: int = 0
    success: int = 0
    failure: int = 0
    revoked: int = 0
    oldest_waiting: timedelta | None = None
    paused: bool = False


@dataclass(frozen=True)
class FairKey(_Row):
    """One fair key of one queue (the ``fair_keys`` view): its waiting jobs,
    those due, how long the oldest due one has waited, and its weight."""

    queue: str
    fair_key: str
    waiting: int = 0
    due: int = 0
    oldest_due_wait: timedelta | None = None
    weight: int = 1


__all__ = ["Attempt", "FairKey", "Job", "QueueStats"]
