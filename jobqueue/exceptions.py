"""The error hierarchy: everything jobqueue raises derives from JobQueueError."""

from __future__ import annotations

import builtins
from typing import Any


class JobQueueError(Exception):
    """Root of every error raised by jobqueue itself."""


class ConfigurationError(JobQueueError):
    """A setting is missing or invalid; the message says what to change."""


class UnknownSettingError(ConfigurationError, AttributeError, TypeError):
    """A setting name that is neither jobqueue's nor a Celery name it knows; the
    message names the closest known setting. Also an ``AttributeError`` (as for
    any unknown attribute of ``app.conf``) and a ``TypeError`` (as for any
    unknown keyword of ``JobQueue()``)."""


class SchemaNotReadyError(ConfigurationError):
    """The database has no (or an outdated) jobqueue schema."""


class SchemaChangedError(SchemaNotReadyError):
    """The schema was migrated, while this worker ran, to a revision it does not know."""


class TimeoutError(JobQueueError, builtins.TimeoutError):
    """``AsyncResult.get()`` gave up waiting. Also a builtin ``TimeoutError``."""


class DuplicateJobError(JobQueueError):
    """A job with the given ``task_id`` already exists."""


class TaskNotRegistered(JobQueueError):
    """A job names a task that the worker does not know."""


class ChordError(JobQueueError):
    """A chord's body could not run because a header job failed."""


class MalformedJob(JobQueueError, ValueError):
    """A claimed job whose stored payload no attempt could run: JSON that does not
    decode (or nests too deeply to), ``args`` not an array, ``kwargs`` or
    ``options`` not an object, a time limit that is not a positive finite number.
    Such rows come from SQL or other producers that skip ``dump_arguments``'
    checks; the job fails at once, without retries."""


class TaskRevokedError(JobQueueError):
    """The job was revoked or expired before it ran."""


class RemoteTraceback(Exception):
    """Carries the traceback text of a failure that happened in a worker.

    Set as ``__cause__`` of re-raised task errors so the remote traceback is
    printed along with the local one.
    """

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


class TaskError(JobQueueError):
    """Stands in for a task exception whose class cannot be rebuilt locally."""

    exc_type: str = "Exception"
    exc_module: str | None = None


class Retry(JobQueueError):
    """Raised by ``self.retry()``: this attempt ends and another is scheduled."""

    def __init__(
        self,
        exc: BaseException | None = None,
        countdown: float | None = None,
        eta: Any = None,
        message: str | None = None,
    ) -> None:
        self.exc = exc
        self.countdown = countdown
        self.eta = eta
        super().__init__(message or f"retry in {countdown}s" + (f": {exc!r}" if exc else ""))


class Snooze(JobQueueError):
    """``raise self.snooze(seconds)`` (or ``return Snooze(seconds)``): this run
    ends and the job runs again in ``seconds``, without using one of its
    retries; the run is kept in its history as SNOOZED."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(f"snoozed for {seconds}s")


class Reject(JobQueueError):
    """Raised by a task to refuse its job, as Celery's ``Reject``:
    ``raise Reject(reason, requeue=False)``.

    ``requeue=True`` puts the job back in its queue at once, as a job whose
    worker was lost (the attempt counts, so a job that is always rejected
    stops at ``max_retries``: then it fails with this error); ``requeue=False``
    fails it now with this error, without autoretry. Celery's REJECTED
    state is FAILURE here: a job always ends in a state that its waiters see
    as finished, and its error callbacks and chord run as for any failure;
    ``app.control.retry`` runs it again."""

    def __init__(self, reason: Any = None, requeue: bool = False) -> None:
        self.reason = reason
        self.requeue = requeue
        super().__init__(reason, requeue)

    def __str__(self) -> str:
        return f"rejected{' (requeue)' if self.requeue else ''}: {self.reason}"


class MaxRetriesExceededError(JobQueueError):
    """``self.retry()`` was called with no retries left and no exception to re-raise."""


class SoftTimeLimitExceeded(JobQueueError):
    """Raised inside a task when its ``soft_time_limit`` passes; it may clean up."""


class TimeLimitExceeded(JobQueueError):
    """The task ran past its hard ``time_limit`` and was stopped."""


class WorkerLostError(JobQueueError):
    """The process running the job died (killed, crashed, or lost its lease)."""


class AtomicError(JobQueueError, RuntimeError):
    """An atomic task's transaction used the wrong way: committed by the task
    itself, or asked for outside a run of the task."""


class Terminated(JobQueueError):
    """Raised inside a running task revoked with ``terminate=True``."""


class Replaced(JobQueueError):
    """Raised by ``self.replace(sig)``: this attempt ends, and ``sig`` runs in
    the job's place (Celery's ``Ignore`` after a replace). Not an error: the
    job records ``SUCCESS`` with a pointer to the replacement."""

    def __init__(self, sig: Any) -> None:
        self.sig = sig
        super().__init__(f"replaced by {sig!r}")


class ChordMembershipError(JobQueueError, RuntimeError):
    """``self.add_to_chord()`` from a task that is not a member of a chord's
    header (a plain job, a plain group's member), or whose chord is over."""


class BatchClosedError(JobQueueError, ValueError):
    """A job added to a batch that was closed (``batch.close()``): nothing
    was written; roll back the transaction the add joined, if any."""
