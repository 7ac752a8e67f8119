"""jobqueue: a PostgreSQL-backed, transactional job queue with Celery's API."""

from . import states
from .app import JobQueue
from .exceptions import (
    ConfigurationError,
    JobQueueError,
    SchemaNotReadyError,
    TaskError,
    TaskNotRegistered,
    TaskRevokedError,
    TimeoutError,
)
from .result import AsyncResult
from .tasks import Request, Task

__version__ = "0.1.0"

__all__ = [
    "AsyncResult",
    "ConfigurationError",
    "JobQueue",
    "JobQueueError",
    "Request",
    "SchemaNotReadyError",
    "Task",
    "TaskError",
    "TaskNotRegistered",
    "TaskRevokedError",
    "TimeoutError",
    "__version__",
    "states",
]
