"""jobqueue: a PostgreSQL-backed, transactional job queue with Celery's API."""

from . import states
from .app import JobQueue
from .canvas import Signature, chain, chord, group, signature
from .eager import EagerGroupResult, EagerResult
from .exceptions import (
    ChordError,
    ConfigurationError,
    DuplicateJobError,
    JobQueueError,
    MalformedJob,
    MaxRetriesExceededError,
    Retry,
    SchemaNotReadyError,
    SoftTimeLimitExceeded,
    TaskError,
    TaskNotRegistered,
    TaskRevokedError,
    Terminated,
    TimeLimitExceeded,
    TimeoutError,
    WorkerLostError,
)
from .result import AsyncResult, GroupResult
from .tasks import Request, Task

__version__ = "0.1.0"

__all__ = [
    "AsyncResult",
    "ChordError",
    "ConfigurationError",
    "DuplicateJobError",
    "EagerGroupResult",
    "EagerResult",
    "GroupResult",
    "JobQueue",
    "JobQueueError",
    "MalformedJob",
    "MaxRetriesExceededError",
    "Request",
    "Retry",
    "SchemaNotReadyError",
    "Signature",
    "SoftTimeLimitExceeded",
    "Task",
    "TaskError",
    "TaskNotRegistered",
    "TaskRevokedError",
    "Terminated",
    "TimeLimitExceeded",
    "TimeoutError",
    "WorkerLostError",
    "__version__",
    "chain",
    "chord",
    "group",
    "signature",
    "states",
]
