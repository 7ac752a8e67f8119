"""jobqueue: a PostgreSQL-backed, transactional job queue with Celery's API."""

from . import states
from .app import JobQueue
from .exceptions import (
    ConfigurationError,
    DuplicateJobError,
    JobQueueError,
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
from .result import AsyncResult
from .tasks import Request, Task

__version__ = "0.1.0"

__all__ = [
    "AsyncResult",
    "ConfigurationError",
    "DuplicateJobError",
    "JobQueue",
    "JobQueueError",
    "MaxRetriesExceededError",
    "Request",
    "Retry",
    "SchemaNotReadyError",
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
    "states",
]
