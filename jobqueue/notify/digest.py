"""What a notification says, and when: failures gathered into messages.

``Digest`` is the rate limiter, with no clock or thread of its own: the
first failure after a quiet window is due at once; those that follow wait
for the window to end and go out together, as one message counting them per
task and exception with a few examples. ``Message`` renders the same
content as text (an e-mail's body, a webhook's ``text``) and as the
webhook's JSON body (docs/operations.md, Failure notifications).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..worker.outcome import Outcome

MESSAGE_CHARS = 1_000  # of an exception's message, per example
TRACEBACK_CHARS = 4_000  # of a traceback, per example (a failure notified alone)
JOB_IDS_PER_GROUP = 3


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


@dataclass(frozen=True)
class Failure:
    """One recorded outcome worth notifying (FAILURE, or RETRY when asked)."""

    job_id: str
    task: str
    queue: str
    attempt: int
    state: str
    exception: str  # the exception type's name
    module: str  # ... and its module
    message: str
    traceback: str | None
    at: datetime

    @classmethod
    def from_outcome(cls, outcome: Outcome, at: datetime | None = None) -> Failure:
        """From an outcome the worker recorded; its error text is JSON we wrote
        (``serialization.dump_error``), read defensively all the same."""
        fields: dict[str, Any] = {}
        try:
            decoded = json.loads(outcome.error) if outcome.error else None
            if isinstance(decoded, dict):
                fields = decoded
        except ValueError:
            pass

        def text(key: str, default: str) -> str:
            value = fields.get(key)
            return value if isinstance(value, str) else default

        traceback = fields.get("traceback")
        return cls(
            job_id=outcome.job_id,
            task=outcome.task or "?",
            queue=outcome.queue or "?",
            attempt=outcome.attempt,
            state=outcome.state,
            exception=text("type", "UnknownError"),
            module=text("module", ""),
            message=_clip(text("message", ""), MESSAGE_CHARS),
            traceback=_clip(traceback, TRACEBACK_CHARS) if isinstance(traceback, str) else None,
            at=at or datetime.now(timezone.utc),
        )

    def as_json(self, traceback: bool) -> dict[str, Any]:
        value: dict[str, Any] = {
            "job_id": self.job_id,
            "task": self.task,
            "queue": self.queue,
            "attempt": self.attempt,
            "state": self.state,
            "exception": self.exception,
            "exception_module": self.module,
            "message": self.message,
            "at": self.at.isoformat(),
        }
        if traceback:
            value["traceback"] = self.traceback
        return value


@dataclass
class Group:
    """Failures of one task with one exception type (and state)."""

    task: str
    exception: str
    state: str
    count: int = 0
    job_ids: list[str] = field(default_factory=list)  # the first few


@dataclass(frozen=True)
class Message:
    """One notification: one failure ("failure") or several ("digest")."""

    hostname: str
    count: int
    since: datetime
    until: datetime
    groups: tuple[Group, ...]  # most frequent first
    examples: tuple[Failure, ...]  # the first few, in order
    window: float

    @property
    def kind(self) -> str:
        return "failure" if self.count == 1 else "digest"

    @property
    def first(self) -> Failure:
        return self.examples[0]

    def subject(self, template: str) -> str:
        """``template`` filled from ``fields()`` (the most frequent group's);
        a digest's subject adds how many more failures it counts."""
        subject = template.format(**self.fields())
        if self.count > 1:
            more = self.count - 1
            subject += f" (and {more} more failure{'s' if more > 1 else ''})"
        return " ".join(subject.split())  # a header holds no newline

    def fields(self) -> dict[str, Any]:
        top = self.groups[0]
        example = next(f for f in self.examples if f.task == top.task) if self.examples else None
        return {
            "task": top.task,
            "exception_type": top.exception,
            "state": top.state,
            "count": self.count,
            "hostname": self.hostname,
            "queue": example.queue if example else "?",
            "job_id": example.job_id if example else "?",
        }

    def text(self) -> str:
        if self.kind == "failure":
            f = self.first
            what = "failed" if f.state == "FAILURE" else f"will retry ({f.state})"
            lines = [
                f"Task {f.task}[{f.job_id}] {what} on {self.hostname}: {f.exception}: {f.message}",
                f"queue {f.queue}, attempt {f.attempt}, at {f.at.isoformat(timespec='seconds')}",
            ]
            if f.traceback:
                lines += ["", f.traceback.rstrip()]
            return "\n".join(lines)
        lines = [
            f"{self.count} job failures on {self.hostname} from "
            f"{self.since.isoformat(timespec='seconds')} to "
            f"{self.until.isoformat(timespec='seconds')} (at most one message every "
            f"{self.window:g}s):",
        ]
        for g in self.groups:
            state = "" if g.state == "FAILURE" else f" ({g.state})"
            lines.append(
                f"  {g.count} x {g.task}: {g.exception}{state}, e.g. {', '.join(g.job_ids)}"
            )
        lines += ["", "First failures:"]
        for f in self.examples:
            lines.append(f"  {f.task}[{f.job_id}] attempt {f.attempt}: {f.exception}: {f.message}")
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        """The webhook's body (docs/operations.md documents each key)."""
        return {
            "text": self.text(),
            "kind": self.kind,
            "hostname": self.hostname,
            "count": self.count,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "window": self.window,
            "groups": [
                {
                    "task": g.task,
                    "exception": g.exception,
                    "state": g.state,
                    "count": g.count,
                    "job_ids": list(g.job_ids),
                }
                for g in self.groups
            ],
            "examples": [f.as_json(traceback=self.kind == "failure") for f in self.examples],
        }


class Digest:
    """Failures waiting to be notified, and when they are due. Not thread-safe:
    its notifier's thread alone uses it. Times are ``time.monotonic()``."""

    def __init__(self, window: float, examples: int) -> None:
        self.window = window
        self.examples = examples
        self._last_sent: float | None = None
        self._reset()

    def _reset(self) -> None:
        self.count = 0
        self._groups: dict[tuple[str, str, str], Group] = {}
        self._examples: list[Failure] = []
        self._since: datetime | None = None
        self._until: datetime | None = None

    def add(self, failure: Failure) -> None:
        self.count += 1
        key = (failure.task, failure.exception, failure.state)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = Group(failure.task, failure.exception, failure.state)
        group.count += 1
        if len(group.job_ids) < JOB_IDS_PER_GROUP:
            group.job_ids.append(failure.job_id)
        if len(self._examples) < self.examples:
            self._examples.append(failure)
        self._since = self._since or failure.at
        self._until = failure.at

    def due_in(self, now: float) -> float | None:
        """Seconds until the pending failures are due (0: now); None: none pending."""
        if not self.count:
            return None
        if self._last_sent is None:
            return 0.0
        return max(0.0, self._last_sent + self.window - now)

    def take(self, now: float, hostname: str) -> Message | None:
        """The pending failures as one message (whether due or not: a flush),
        starting a new window; None if none are pending."""
        if not self.count:
            return None
        assert self._since is not None and self._until is not None
        groups = sorted(self._groups.values(), key=lambda g: -g.count)
        message = Message(
            hostname=hostname,
            count=self.count,
            since=self._since,
            until=self._until,
            groups=tuple(groups),
            examples=tuple(self._examples),
            window=self.window,
        )
        self._last_sent = now
        self._reset()
        return message
