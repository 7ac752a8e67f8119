"""Every tunable in one place, with its default and what it does.

``app.conf`` is a ``Settings``; change fields before starting workers. Values
are validated by ``Settings.validate()`` when the app is created and again
when it first connects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .exceptions import ConfigurationError
from .sql import validate_schema

DSN_ENV = "JOBQUEUE_DSN"
DATA_DIR_ENV = "JOBQUEUE_DATA_DIR"


@dataclass
class Settings:
    #: PostgreSQL connection string; None means $JOBQUEUE_DSN, else embedded.
    dsn: str | None = None
    #: PostgreSQL schema holding every jobqueue object.
    schema: str = "jobqueue"
    #: Where the embedded PostgreSQL keeps its data when no DSN is configured.
    data_dir: Path = field(default_factory=lambda: Path(os.environ.get(DATA_DIR_ENV, ".jobqueue")))
    #: Apply migrations on first connection. None: only for the embedded server.
    auto_migrate: bool | None = None
    #: Queue for tasks that name none.
    default_queue: str = "default"
    #: Producer-side connection pool size (delay(), get(), enqueue_many()).
    pool_max_size: int = 10
    #: Worker: seconds between polls when no NOTIFY arrives (lost-notification cover).
    poll_interval: float = 5.0
    #: Worker: seconds between heartbeats; a worker silent for `lease_ttl` is presumed dead.
    heartbeat_interval: float = 5.0
    lease_ttl: float = 30.0
    #: Worker: a job of a task this worker does not know is handed back (for a
    #: worker that knows it: a rolling deploy) until this many seconds after it
    #: was enqueued, then fails with TaskNotRegistered.
    unknown_task_grace: float = 300.0
    #: Worker: most outcomes written by one completion statement.
    complete_batch_size: int = 500
    #: Producer side: keep retrying a statement that failed transiently (connection
    #: lost, serialization failure, deadlock) for this many seconds.
    db_retry_seconds: float = 10.0
    #: AsyncResult.get(): seconds between state re-checks if no NOTIFY arrives.
    result_recheck_interval: float = 1.0
    #: Where tasks go when a call names no queue: a mapping of task names or
    #: globs to queue names, a callable ``(task, args, kwargs) -> queue``, or a list.
    task_routes: Any = None
    #: Periodic tasks: ``{name: {"task", "schedule", "args", "kwargs", "options"}}``.
    beat_schedule: dict[str, Any] = field(default_factory=dict)
    #: Finished jobs are deleted this many seconds after they finish (None: keep).
    result_expires: float | None = 86400.0
    #: ... and failed ones after this many (None: keep).
    failed_result_expires: float | None = 7 * 86400.0
    #: Rows deleted per retention statement (small, so locks stay short).
    retention_batch_size: int = 1000

    def resolved_dsn(self) -> str | None:
        return self.dsn or os.environ.get(DSN_ENV) or None

    def validate(self) -> None:
        validate_schema(self.schema)
        for name in ("poll_interval", "heartbeat_interval", "lease_ttl", "result_recheck_interval"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value <= 0:
                raise ConfigurationError(
                    f"app.conf.{name} must be a positive number, got {value!r}"
                )
        grace = self.unknown_task_grace
        if isinstance(grace, bool) or not isinstance(grace, (int, float)) or grace < 0:
            raise ConfigurationError(
                f"app.conf.unknown_task_grace must be a number of seconds >= 0, got {grace!r}"
            )
        if self.lease_ttl <= self.heartbeat_interval:
            raise ConfigurationError(
                "app.conf.lease_ttl must be longer than app.conf.heartbeat_interval "
                f"({self.lease_ttl} <= {self.heartbeat_interval})"
            )
        for name in ("result_expires", "failed_result_expires"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or value <= 0):
                raise ConfigurationError(
                    f"app.conf.{name} must be a positive number of seconds or None, got {value!r}"
                )
        for name in ("pool_max_size", "complete_batch_size", "retention_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigurationError(
                    f"app.conf.{name} must be a positive integer, got {value!r}"
                )
