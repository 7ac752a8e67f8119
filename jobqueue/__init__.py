"""jobqueue: a PostgreSQL-backed, transactional job queue with Celery's API."""

from . import states
from .app import JobQueue
from .batches import Batch, BatchProgress
from .canvas import Signature, chain, chord, group, signature
from .current import current_app
from .eager import EagerGroupResult, EagerResult
from .exceptions import (
    AtomicError,
    BatchClosedError,
    ChordError,
    ChordMembershipError,
    ConfigurationError,
    DuplicateJobError,
    JobQueueError,
    MalformedJob,
    MaxRetriesExceededError,
    Reject,
    Replaced,
    Retry,
    SchemaNotReadyError,
    Snooze,
    SoftTimeLimitExceeded,
    TaskError,
    TaskNotRegistered,
    TaskRevokedError,
    Terminated,
    TimeLimitExceeded,
    TimeoutError,
    UnknownSettingError,
    WorkerLostError,
)
from .keys import arg
from .request import Request
from .result import AsyncResult
from .result_set import GroupResult, ResultSet
from .shared import shared_task
from .tasks import Task

__version__ = "0.1.0"

__all__ = [
    "AsyncResult",
    "AtomicError",
    "Batch",
    "BatchClosedError",
    "BatchProgress",
    "ChordError",
    "ChordMembershipError",
    "ConfigurationError",
    "DuplicateJobError",
    "EagerGroupResult",
    "EagerResult",
    "GroupResult",
    "JobQueue",
    "JobQueueError",
    "MalformedJob",
    "MaxRetriesExceededError",
    "Reject",
    "Replaced",
    "Request",
    "ResultSet",
    "Retry",
    "SchemaNotReadyError",
    "Signature",
    "Snooze",
    "SoftTimeLimitExceeded",
    "Task",
    "TaskError",
    "TaskNotRegistered",
    "TaskRevokedError",
    "Terminated",
    "TimeLimitExceeded",
    "TimeoutError",
    "UnknownSettingError",
    "WorkerLostError",
    "__version__",
    "arg",
    "chain",
    "chord",
    "current_app",
    "group",
    "shared_task",
    "signature",
    "states",
]
