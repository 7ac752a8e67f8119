"""Periodic schedules: cron expressions (croniter) and fixed intervals, per time zone.

Pure time arithmetic, unit-tested without a database. The beat (``beat.py``)
decides *when* with these functions; SQL decides *who*: a tick is enqueued
only by whoever inserts its (schedule, fire time) row first.

Catch-up after downtime (when more than one fire time is overdue):
``once`` (default) runs the most recent missed tick once; ``skip`` runs none of
the missed ones (only a tick at most ``GRACE`` seconds late still runs);
``all`` runs each missed tick, the most recent ``catch_up_limit`` of them.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from .options import check_queue

GRACE = timedelta(seconds=10)
CATCH_UP = ("once", "skip", "all")


@dataclass(frozen=True)
class crontab:
    """``crontab(minute="*/5", hour="9-17", day_of_week="mon-fri")``: Celery's fields."""

    minute: str | int = "*"
    hour: str | int = "*"
    day_of_week: str | int = "*"
    day_of_month: str | int = "*"
    month_of_year: str | int = "*"

    @property
    def expression(self) -> str:
        return " ".join(
            str(part)
            for part in (
                self.minute,
                self.hour,
                self.day_of_month,
                self.month_of_year,
                self.day_of_week,
            )
        )


@dataclass
class Schedule:
    """One periodic task: what to enqueue and when."""

    name: str
    task: str
    cron: str | None = None
    interval: float | None = None
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    timezone: str = "UTC"
    catch_up: str = "once"
    catch_up_limit: int = 100

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.interval is None):
            raise ValueError(f"schedule {self.name!r}: give a cron expression or an interval")
        if self.cron is not None and not croniter.is_valid(self.cron):
            raise ValueError(f"schedule {self.name!r}: invalid cron expression {self.cron!r}")
        if self.interval is not None and self.interval <= 0:
            raise ValueError(f"schedule {self.name!r}: the interval must be positive")
        if self.catch_up not in CATCH_UP:
            raise ValueError(f"schedule {self.name!r}: catch_up must be one of {CATCH_UP}")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"schedule {self.name!r}: unknown time zone {self.timezone!r}"
            ) from None

    @classmethod
    def from_entry(
        cls, name: str, entry: dict[str, Any], default_timezone: str = "UTC"
    ) -> Schedule:
        """An ``app.conf.beat_schedule`` entry (Celery's shape); ``default_timezone``:
        the zone its cron expression is read in unless it names one
        (``app.conf.timezone``)."""
        unknown = set(entry) - {
            "task",
            "schedule",
            "args",
            "kwargs",
            "options",
            "timezone",
            "catch_up",
            "catch_up_limit",
        }
        if unknown:
            raise ValueError(f"beat_schedule[{name!r}] has unknown keys {sorted(unknown)}")
        task = entry.get("task")
        task_name = getattr(task, "name", task)
        if not isinstance(task_name, str):
            raise ValueError(f"beat_schedule[{name!r}] needs a task name")
        cron, interval = parse_schedule(entry.get("schedule"))
        options = dict(entry.get("options", {}))
        if options.get("queue") is not None:
            try:
                check_queue(options["queue"], f"beat_schedule[{name!r}]'s queue")
            except TypeError as exc:  # the beat's callers expect a ValueError
                raise ValueError(str(exc)) from None
        return cls(
            name=name,
            task=task_name,
            cron=cron,
            interval=interval,
            args=list(entry.get("args", ())),
            kwargs=dict(entry.get("kwargs", {})),
            options=options,
            timezone=entry.get("timezone") or default_timezone,
            catch_up=entry.get("catch_up", "once"),
            catch_up_limit=int(entry.get("catch_up_limit", 100)),
        )

    @property
    def code_hash(self) -> str:
        definition = [
            self.task,
            self.cron,
            self.interval,
            self.args,
            self.kwargs,
            self.options,
            self.timezone,
            self.catch_up,
            self.catch_up_limit,
        ]
        return hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:16]


def parse_schedule(value: Any) -> tuple[str | None, float | None]:
    """(cron, interval seconds) from a crontab, a cron string, a timedelta or seconds."""
    if isinstance(value, crontab):
        return value.expression, None
    if isinstance(value, str):
        return value, None
    if isinstance(value, timedelta):
        return None, value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return None, float(value)
    raise ValueError(
        f"a schedule is a crontab, a cron string, a timedelta or seconds; got {value!r}"
    )


class Timing:
    """Fire times of one schedule (cron in its time zone, or epoch-aligned intervals)."""

    def __init__(self, cron: str | None, interval: float | None, tz: str = "UTC") -> None:
        self.cron, self.interval, self.zone = cron, interval, ZoneInfo(tz)

    def next_after(self, moment: datetime) -> datetime:
        if self.interval is not None:
            step = self.interval
            return _from_epoch((math.floor(moment.timestamp() / step) + 1) * step)
        assert self.cron is not None
        nxt: datetime = croniter(self.cron, moment.astimezone(self.zone)).get_next(datetime)
        return nxt.astimezone(timezone.utc)

    def latest_at_or_before(self, moment: datetime) -> datetime:
        if self.interval is not None:
            step = self.interval
            return _from_epoch(math.floor(moment.timestamp() / step) * step)
        assert self.cron is not None
        just_after = moment.astimezone(self.zone) + timedelta(microseconds=1)
        prev: datetime = croniter(self.cron, just_after).get_prev(datetime)
        return prev.astimezone(timezone.utc)

    def previous(self, moment: datetime, count: int) -> list[datetime]:
        """The ``count`` fire times strictly before ``moment``, oldest first."""
        out: list[datetime] = []
        cursor = moment
        for _ in range(count):
            cursor = self.latest_at_or_before(cursor - timedelta(microseconds=1))
            out.append(cursor)
        return out[::-1]


def fires_due(
    timing: Timing, next_run_at: datetime, now: datetime, catch_up: str, limit: int
) -> list[datetime]:
    """The fire times to enqueue now, given the schedule's planned ``next_run_at``."""
    if next_run_at > now:
        return []
    latest = timing.latest_at_or_before(now)
    if latest < next_run_at:
        return []
    if latest == next_run_at:  # the normal case: one tick, on time or a little late
        return [latest]
    if catch_up == "once":
        return [latest]
    if catch_up == "skip":
        return [latest] if now - latest <= GRACE else []
    missed = [f for f in timing.previous(latest, max(limit - 1, 0)) if f >= next_run_at]
    return [*missed, latest][-limit:] if limit > 0 else []


def _from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)
