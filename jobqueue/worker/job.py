"""A claimed job: the claim statement's row, its payload decoded and checked
once, by the slot that runs it (``executor`` runs it; the pools route it).

Nothing read from the database is trusted: a payload that is not the JSON a
producer writes raises ``MalformedJob``, which fails that job alone.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..exceptions import MalformedJob
from ..options import default_limits
from ..serialization import MAX_NESTING, loads

if TYPE_CHECKING:
    from ..tasks import Task


_TIME_LIMITS = ("soft_time_limit", "time_limit")
# A claim delays a job's start by at most its horizon (0.05 s, job_claim);
# a larger figure from the database is not believed past this.
_MAX_START_DELAY = 1.0
_JSON_TYPES = {list: "an array", dict: "an object", str: "a string", bool: "a boolean"}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return _JSON_TYPES.get(type(value), "a number")


def _positive_seconds(value: Any) -> bool:
    if type(value) not in (int, float):  # bool is not a number of seconds
        return False
    try:
        return 0 < float(value) < math.inf
    except OverflowError:  # an integer with hundreds of digits
        return False


def _checked_payload(job: Job) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    """Decode and check a job's payload once, in the slot that runs it."""
    try:
        args, kwargs, options = loads(job.payload)
    except RecursionError:
        raise MalformedJob(
            f"job {job.id} of task {job.task!r} cannot run: its arguments nest arrays and "
            f"objects too deeply to decode (at most {MAX_NESTING} levels are accepted)"
        ) from None
    except (ValueError, TypeError) as exc:
        raise MalformedJob(
            f"job {job.id} of task {job.task!r} cannot run: its stored arguments and "
            f"options are not valid JSON ({exc})"
        ) from None
    problem = None
    if type(args) is not list:
        problem = f"args must be a JSON array, got {_json_type(args)}"
    elif type(kwargs) is not dict:
        problem = f"kwargs must be a JSON object, got {_json_type(kwargs)}"
    elif type(options) is not dict:
        problem = f"options must be a JSON object, got {_json_type(options)}"
    elif options:
        for name in _TIME_LIMITS:
            value = options.get(name)
            if value is not None and not _positive_seconds(value):
                problem = f"{name} must be a positive finite number of seconds, got {value!r}"
                break
        headers = options.get("headers")
        if problem is None and headers is not None and type(headers) is not dict:
            problem = f"options.headers must be a JSON object, got {_json_type(headers)}"
    if problem is not None:
        raise MalformedJob(f"job {job.id} of task {job.task!r} cannot run: {problem}")
    return args, kwargs, options


@dataclass(slots=True)
class Job:
    """A claimed job, as the claim statement returns it.

    Its arguments and options arrive as one JSON text and are decoded on first
    use, by the slot that runs the job: the claim thread only routes jobs, and
    decoding there was most of its time on short jobs."""

    id: str
    task: str
    queue: str
    payload: str  # JSON text: [args, kwargs, options]
    attempt: int
    run_at: datetime | None
    root_id: str | None
    parent_id: str | None
    expired: bool = False
    in_canvas: bool = False  # finishing it creates or counts other jobs (`advance` in SQL)
    # time.monotonic() after which it must not start (its `expires`); None: never
    expires_deadline: float | None = None
    age: float | None = None  # seconds since the job was enqueued, at its claim
    priority: int | None = None
    fair_key: str | None = None  # its key in the claim's round (job_claim_fair)
    fair_weight: int | None = None  # its key's weight, None for 1
    # time.monotonic() before which it must not start: a rate-limited job
    # admitted ahead of its token (admit_at() in SQL); None: at once
    not_before: float | None = None
    eager: bool = False  # run in the caller's process by jobqueue.eager, not claimed
    # An eager job's place in its group (group id, index): what self.replace()
    # reads from the jobs row when a worker runs the job.
    membership: tuple[str, int] | None = None
    _decoded: tuple[list[Any], dict[str, Any], dict[str, Any]] | None = field(
        default=None, repr=False, compare=False
    )

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Job:
        """A row of job_claim: 12 columns, then (as releases added them)
        ``expires_in`` (seconds until the job expires, NULL without an expiry),
        ``age`` (seconds since it was enqueued), ``priority``, ``fair_key``,
        ``fair_weight`` and ``start_in`` (seconds until its rate limit's
        token, NULL or not positive for none: 0023), and the claim's
        ``events`` column last."""
        job_id, task, queue, args, kwargs, options, attempt, run_at, root, parent, *flags = row
        expired, in_canvas, *rest = flags
        expires_in = rest[0] if rest else None
        deadline = None if expires_in is None else time.monotonic() + float(expires_in)
        payload = f"[{args},{kwargs},{options}]"
        job = cls(job_id, task, queue, payload, attempt, run_at, root, parent, expired, in_canvas)
        job.expires_deadline = deadline
        job.age = float(rest[1]) if len(rest) > 1 and rest[1] is not None else None
        if len(rest) > 3:  # `events` is last: a priority is before it
            job.priority = rest[2]
        if len(rest) > 5:  # and a fair key and its weight (0021) after the priority
            job.fair_key, job.fair_weight = rest[3], rest[4]
        if len(rest) > 6 and rest[5] is not None:  # a delayed start (0023)
            delay = float(rest[5])
            if math.isfinite(delay) and delay > 0:  # at most a horizon (0.05 s) by design
                job.not_before = time.monotonic() + min(delay, _MAX_START_DELAY)
        return job

    def has_expired(self) -> bool:
        """Past its ``expires`` now (it may have waited in the pool since the claim)."""
        deadline = self.expires_deadline
        return deadline is not None and time.monotonic() >= deadline

    def _decode(self) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
        """The decoded payload, checked: ``MalformedJob`` if no attempt could run it."""
        decoded = self._decoded
        if decoded is None:
            decoded = self._decoded = _checked_payload(self)
        return decoded

    @property
    def args(self) -> list[Any]:
        return self._decode()[0]

    @property
    def kwargs(self) -> dict[str, Any]:
        return self._decode()[1]

    @property
    def options(self) -> dict[str, Any]:
        return self._decode()[2]

    @property
    def retries(self) -> int:
        # retries_base: the attempts made before retry_jobs(reset_retries => true)
        return self.attempt - 1 - int(self.options.get("retries_base") or 0)

    def limits(self, task: Task[Any, Any] | None) -> tuple[float | None, float | None]:
        """(soft, hard) time limits: the call's, else the task's, else the app's
        defaults (stored with the job by a producer that knew the task; filled
        in here for one that did not: ``send_task`` by name)."""
        options = self._decode()[2]
        soft = options.get("soft_time_limit")
        hard = options.get("time_limit")
        if task is not None:
            soft = soft if soft is not None else task.soft_time_limit
            hard = hard if hard is not None else task.time_limit
            if soft is None or hard is None:
                soft, hard = default_limits(task.app.conf, soft, hard)
        return soft, hard
