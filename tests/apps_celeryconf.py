"""An app configured as a Celery user would paste it, for the worker subprocesses
of tests/integration/test_config_celery_db.py (``-A tests.apps_celeryconf:app``).

The worker gets its DSN and schema from the CLI; the test builds a producer the
same way (``configure(JobQueue(dsn, schema=...))``) so both sides agree.
"""

from __future__ import annotations

import time
from typing import Any

from jobqueue import JobQueue, SoftTimeLimitExceeded

#: What a Celery project's celeryconfig.py holds, plus the defaults the test checks.
CELERY_CONFIG: dict[str, Any] = {
    "broker_url": "redis://:s3cret@redis.example:6379/0",
    "result_backend": "redis://:s3cret@redis.example:6379/1",
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
    "task_track_started": True,
    "task_time_limit": 30,
    "task_soft_time_limit": 1,
    "worker_prefetch_multiplier": 1,
    "task_acks_late": True,
    "task_default_priority": 7,
    "worker_concurrency": 3,
}


def configure(app: JobQueue) -> JobQueue:
    app.config_from_object(CELERY_CONFIG)

    @app.task(name="celeryconf.limits", bind=True, acks_late=True, track_started=True)
    def limits(self: Any) -> list[float | None]:
        """The time limits the worker runs this job under."""
        return [self.request.soft_time_limit, self.request.time_limit]

    @app.task(name="celeryconf.overrun")
    def overrun() -> str:
        try:
            for _ in range(500):  # short sleeps: the thread pool's limits land between them
                time.sleep(0.02)
        except SoftTimeLimitExceeded:
            return "soft limit"
        return "no limit"

    return app


app = configure(JobQueue())
