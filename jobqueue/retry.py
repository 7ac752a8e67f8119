"""Retry policy: when a failed attempt gets another try, and how long it waits.

Pure functions over a task's options, so they are unit-tested without a
database. Semantics follow Celery: ``max_retries`` counts retries (None means
unlimited); backoff is ``factor * 2**retries`` capped at ``retry_backoff_max``,
with "full jitter" (a uniform draw in ``[0, delay]``) when ``retry_jitter``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
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
    #: True, a factor, or a function ``(attempt, exc) -> seconds`` (attempt:
    #: the run that just failed, 1 for the first, snoozes not counted).
    retry_backoff: bool | float | Callable[[int, BaseException | None], float] = False
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

    def countdown(self, retries: int, exc: BaseException | None = None) -> float:
        """Seconds before the next attempt, after ``retries`` earlier retries
        (``exc``: what the attempt raised, for a backoff function). A backoff
        function that raises or answers something other than a finite number
        of seconds >= 0 raises ``ValueError`` naming it."""
        backoff = self.retry_backoff
        if callable(backoff):
            try:
                answer = backoff(retries + 1, exc)
                seconds = float(answer)
            except Exception as error:
                raise ValueError(
                    f"retry_backoff function {getattr(backoff, '__qualname__', backoff)!r} "
                    f"failed: {type(error).__name__}: {error}"
                ) from error
            if not math.isfinite(seconds) or seconds < 0:
                raise ValueError(
                    f"retry_backoff function {getattr(backoff, '__qualname__', backoff)!r} "
                    f"returned {answer!r}; it must return a finite number of seconds >= 0"
                )
            return seconds
        if not self.retry_backoff:
            return float(self.default_retry_delay)
        factor = 1.0 if backoff is True else float(backoff)
        delay = min(factor * (2**retries), float(self.retry_backoff_max))
        if self.retry_jitter:
            delay = self.rng.uniform(0, delay)
        return float(max(delay, 0.0))


def check_backoff(value: object) -> bool | float | Callable[[int, BaseException | None], float]:
    """Validate ``retry_backoff``: True/False, a factor (a number >= 0), or a
    function called as ``fn(attempt, exc)``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"retry_backoff must be a finite factor >= 0, got {value!r}")
        return float(value)
    if callable(value):
        return value
    raise TypeError(
        "retry_backoff must be True/False, a factor, or a function (attempt, exc) -> seconds, "
        f"got {type(value).__name__} {value!r}"
    )


def exception_types(value: object, option: str) -> tuple[type[BaseException], ...]:
    """Validate an ``autoretry_for``-style option: a tuple of exception classes."""
    if value is None:
        return ()
    items: Sequence[object] = value if isinstance(value, (tuple, list)) else (value,)
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise TypeError(f"{option} must be exception classes, got {item!r}")
    return tuple(items)  # type: ignore[arg-type]
