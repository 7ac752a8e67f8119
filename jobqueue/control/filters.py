"""Which jobs an operation acts on: one ``Filters`` for Python and the CLI.

Every bulk operation (``retry``, ``cancel``, ``delete``, ``move``, ``jobs``)
takes the same filters, and they are checked here, once, before any SQL
runs: a mistake is a ``ValueError`` (or ``TypeError``) that says what was
expected, never a database error or an operation that matched nothing
because of a typo. ``params()`` gives them in the shape of the SQL
functions' named parameters.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from .. import states
from ..ids import check_id

#: The states a job is in as the SQL functions see it (custom progress
#: states set by ``update_state`` read as STARTED there).
STATES = frozenset(
    {
        states.PENDING,
        states.STARTED,
        states.RETRY,
        states.SUCCESS,
        states.FAILURE,
        states.REVOKED,
    }
)
WAITING = frozenset({states.PENDING, states.RETRY})
UNFINISHED = WAITING | {states.STARTED}
FINISHED = frozenset(states.READY_STATES)
RETRYABLE = frozenset({states.FAILURE, states.REVOKED})

_TIMES = ("enqueued_after", "enqueued_before", "finished_after", "finished_before")


@dataclass(frozen=True)
class Filters:
    """The jobs to act on: all of them when every field is None.

    ``ids`` one id or several (an empty list is an error: it would match
    nothing, or everything, depending on who reads it); ``state`` one of
    ``STATES`` (any case); the times must be timezone-aware; ``limit`` the
    most jobs to act on in total (None: every match)."""

    ids: tuple[str, ...] | None = None
    queue: str | None = None
    task: str | None = None
    state: str | None = None
    exception: str | None = None
    enqueued_after: datetime | None = None
    enqueued_before: datetime | None = None
    finished_after: datetime | None = None
    finished_before: datetime | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.ids is not None:
            set_(self, "ids", _ids(self.ids))
        for name in ("queue", "task", "exception"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        if self.state is not None:
            state = str(self.state).upper()
            if state not in STATES:
                raise ValueError(
                    f"unknown state {self.state!r}: expected one of {', '.join(sorted(STATES))}"
                )
            set_(self, "state", state)
        for name in _TIMES:
            _check_time(name, getattr(self, name))
        _check_order(self.enqueued_after, self.enqueued_before, "enqueued")
        _check_order(self.finished_after, self.finished_before, "finished")
        if self.limit is not None and (
            isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1
        ):
            raise ValueError(f"limit must be a positive integer, got {self.limit!r}")

    def params(self) -> dict[str, Any]:
        """The filters as the SQL functions' named parameters (no ``limit``:
        the caller turns it into each batch's ``max_jobs``)."""
        params = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "limit"}
        if self.ids is not None:
            params["ids"] = list(self.ids)
        return params

    def restrict(self, allowed: frozenset[str], operation: str) -> None:
        """Refuse a ``state`` the operation never acts on (``retry --state
        SUCCESS`` would silently do nothing)."""
        if self.state is not None and self.state not in allowed:
            raise ValueError(
                f"{operation} acts on {' or '.join(sorted(allowed))} jobs; "
                f"state {self.state!r} matches none"
            )

    def describe(self) -> str:
        """The filters in words, for prompts and messages."""
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or f.name == "limit":
                continue
            if f.name == "ids":
                parts.append(f"id {value[0]}" if len(value) == 1 else f"{len(value)} ids")
            elif isinstance(value, datetime):
                parts.append(f"{f.name.replace('_', ' ')} {value.isoformat()}")
            else:
                parts.append(f"{f.name} {value}")
        return ", ".join(parts) if parts else "no filter"


def _ids(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (check_id(value, "id"),)
    if not isinstance(value, Iterable):
        raise TypeError(f"ids must be a job id or a list of them, got {value!r}")
    ids = tuple(dict.fromkeys(check_id(i, "id") for i in value))
    if not ids:
        raise ValueError("ids is empty: give at least one job id, or None for any job")
    return ids


def _check_time(name: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{name} must be timezone-aware, e.g. datetime.now(timezone.utc) or "
            f"2024-05-01T12:00:00+00:00; got the naive {value.isoformat()}"
        )


def _check_order(after: datetime | None, before: datetime | None, what: str) -> None:
    if after is not None and before is not None and after >= before:
        raise ValueError(
            f"{what}_after ({after.isoformat()}) must be earlier than "
            f"{what}_before ({before.isoformat()}): no job matches both"
        )


__all__ = ["FINISHED", "RETRYABLE", "STATES", "UNFINISHED", "WAITING", "Filters"]
