"""Retry policy: when a failed attempt gets another try, and how long it waits.

Pure functions over a task's options, so they are unit-tested without a
database. Semantics follow Celery: ``max_retries`` counts retries (None means
unlimited); backoff is ``factor * 2**retries`` capped at ``retry_backoff_max``,
with "full jitter" (a uniform draw in ``[0, delay]``) when ``retry_jitter``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

DEFAULT_MAX_RETRIES = 3
DEFAULT_RETRY_DELAY = 180.0
DEFAULT_BACKOFF_MAX = 600.0


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int | None = DEFAULT_MAX_RETRIES
    default_retry_delay: float = DEFAULT_RETRY_DELAY
    autoretry_for: tuple[type[BaseException], ...] = ()
    dont_autoretry_for: tuple[type[BaseException], ...] = ()
    retry_backoff: bool | float = False
    retry_backoff_max: float = DEFAULT_BACKOFF_MAX
    retry_jitter: bool = True
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def exhausted(
        self, retries: int, max_retries: int | None = None, *, override: bool = False
    ) -> bool:
        """True when ``retries`` already done leave no retry (``override`` lets a
        ``self.retry(max_retries=...)`` value, including None, win)."""
        limit = max_retries if override else self.max_retries
        return limit is not None and retries >= limit

    def autoretries(self, exc: BaseException) -> bool:
        return (
            bool(self.autoretry_for)
            and isinstance(exc, self.autoretry_for)
            and not isinstance(exc, self.dont_autoretry_for)
        )

    def countdown(self, retries: int) -> float:
        """Seconds before the next attempt, after ``retries`` earlier retries."""
        if not self.retry_backoff:
            return float(self.default_retry_delay)
        factor = 1.0 if self.retry_backoff is True else float(self.retry_backoff)
        delay = min(factor * (2**retries), float(self.retry_backoff_max))
        if self.retry_jitter:
            delay = self.rng.uniform(0, delay)
        return float(max(delay, 0.0))


def exception_types(value: object, option: str) -> tuple[type[BaseException], ...]:
    """Validate an ``autoretry_for``-style option: a tuple of exception classes."""
    if value is None:
        return ()
    items: Sequence[object] = value if isinstance(value, (tuple, list)) else (value,)
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise TypeError(f"{option} must be exception classes, got {item!r}")
    return tuple(items)  # type: ignore[arg-type]
