"""Tasks the tests enqueue and the worker subprocesses run.

The worker loads ``tests.apps:app`` and gets its DSN and schema from the CLI
(``--dsn``/``--schema``); a test builds its own app on the same schema with
``build(JobQueue(dsn, schema=...))`` so both sides agree on task names.
"""

from __future__ import annotations

import asyncio
import os
import time
from types import SimpleNamespace
from typing import Any

from psycopg import sql

from jobqueue import JobQueue, Snooze, SoftTimeLimitExceeded


class CustomError(Exception):
    """An exception type importable on both sides."""


def build(app: JobQueue) -> SimpleNamespace:
    @app.task(name="add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="boom")
    def boom(message: str) -> None:
        raise CustomError(message)

    @app.task(name="sleep")
    def sleep(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    @app.task(name="echo")
    def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"args": list(args), "kwargs": kwargs}

    @app.task(name="whoami", bind=True)
    def whoami(self: Any) -> dict[str, Any]:
        r = self.request
        return {
            "id": r.id,
            "retries": r.retries,
            "hostname": r.hostname,
            "root_id": r.root_id,
            "queue": r.queue,
        }

    @app.task(name="unserializable")
    def unserializable() -> object:
        return object()

    @app.task(name="quiet", ignore_result=True)
    def quiet() -> int:
        return 42

    # -- reliability ---------------------------------------------------------

    @app.task(
        name="flaky",
        bind=True,
        autoretry_for=(OSError,),
        max_retries=5,
        retry_backoff=0.5,
        retry_jitter=False,
    )
    def flaky(self: Any, failures: int) -> str:
        if self.request.retries < failures:
            raise OSError(f"transient failure {self.request.retries + 1}")
        return f"ok after {self.request.retries} retries"

    @app.task(
        name="retries_later",
        autoretry_for=(OSError,),
        max_retries=5,
        default_retry_delay=60,
        retry_jitter=False,
    )
    def retries_later() -> None:
        # Its retry is a minute away: a test can act between the attempts.
        raise OSError("transient failure")

    @app.task(
        name="hopeless",
        autoretry_for=(ValueError,),
        max_retries=2,
        retry_backoff=0.2,
        retry_jitter=False,
    )
    def hopeless() -> None:
        raise ValueError("never works")

    @app.task(name="explicit_retry", bind=True, max_retries=1)
    def explicit_retry(self: Any) -> None:
        raise self.retry(countdown=0.1)

    @app.task(name="retries_after", bind=True, max_retries=5)
    def retries_after(self: Any, seconds: float) -> None:
        time.sleep(seconds)
        raise self.retry(countdown=60)

    @app.task(name="retry_never", bind=True, max_retries=3)
    def retry_never(self: Any) -> None:
        raise self.retry(countdown=float("inf"))  # a bug in the task: no such moment

    @app.task(name="nul_error")
    def nul_error() -> None:
        raise CustomError("bad byte: \x00")

    @app.task(name="nul_result")
    def nul_result() -> str:
        return "a\x00b"  # valid JSON ("a\u0000b"), which jsonb refuses to store

    @app.task(name="pid")
    def pid() -> int:
        return os.getpid()

    @app.task(name="runaway", time_limit=1)
    def runaway() -> None:
        while True:
            time.sleep(0.05)

    @app.task(name="tidy", soft_time_limit=0.5)
    def tidy() -> str:
        try:
            for _ in range(500):  # short sleeps: the thread pool's limits land between them
                time.sleep(0.02)
        except SoftTimeLimitExceeded:
            return "cleaned up"
        return "slept"

    @app.task(name="ticking")
    def ticking(seconds: float) -> float:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:  # checkpoints the thread pool can interrupt
            time.sleep(0.02)
        return seconds

    @app.task(name="crash", max_retries=1)
    def crash() -> None:
        os._exit(3)

    @app.task(name="async_add")
    async def async_add(x: int, y: int) -> int:
        await asyncio.sleep(0.01)
        return x + y

    @app.task(name="async_slow", soft_time_limit=0.5)
    async def async_slow() -> None:
        await asyncio.sleep(10)

    @app.task(name="headers", bind=True)
    def headers(self: Any, *args: Any) -> Any:
        return self.request.headers

    @app.task(name="async_headers", bind=True)
    async def async_headers(self: Any) -> Any:
        return self.request.headers

    @app.task(name="exits", max_retries=0)
    def exits() -> None:
        raise SystemExit(3)

    # -- canvas ----------------------------------------------------------------

    @app.task(name="tsum")
    def tsum(numbers: list[int]) -> int:
        return sum(numbers)

    @app.task(name="mul")
    def mul(x: int, y: int) -> int:
        return x * y

    @app.task(name="identity")
    def identity(value: Any) -> Any:
        return value

    @app.task(name="fail_if", max_retries=0)
    def fail_if(value: int, bad: int) -> int:
        if value == bad:
            raise ValueError(f"{value} is bad")
        return value

    @app.task(name="record_error")
    def record_error(failed_job_id: str, tag: str) -> str:
        return f"{tag}: {failed_job_id}"

    @app.task(name="latest", unique_key="one", on_duplicate="replace")
    def latest(value: Any, pause: float = 0.0) -> Any:
        """The newest arguments of a burst win (on_duplicate='replace')."""
        time.sleep(pause)
        return value

    @app.task(name="settled", unique_key="one", on_duplicate="debounce")
    def settled(value: Any) -> Any:
        """Runs once a burst of calls has settled (on_duplicate='debounce')."""
        return value

    @app.task(name="tenant_work", fair_key=lambda tenant, *_, **__: tenant)
    def tenant_work(tenant: str, n: int = 0, pause: float = 0.0) -> str:
        """Work of one tenant: claimed round-robin across tenants (fair_key)."""
        time.sleep(pause)
        return f"{tenant}:{n}"

    @app.task(
        name="tenant_flaky", bind=True, fair_key=lambda tenant: tenant, default_retry_delay=0.5
    )
    def tenant_flaky(self: Any, tenant: str) -> int:
        """Fails its first attempt: the retry keeps the job's fair key."""
        if self.request.retries == 0:
            raise self.retry()
        return int(self.request.retries)

    @app.task(name="snoozer", bind=True, max_retries=0)
    def snoozer(self: Any, times: int, seconds: float) -> dict[str, int]:
        """Snoozes its first ``times`` runs; it may never retry (max_retries=0)."""
        if self.request.attempt <= times:
            raise self.snooze(seconds)
        return {"attempt": self.request.attempt, "retries": self.request.retries}

    @app.task(name="snooze_returned", bind=True)
    def snooze_returned(self: Any) -> Any:
        """``return Snooze(...)`` on its first run."""
        return Snooze(0.05) if self.request.attempt == 1 else "woke"

    @app.task(name="snooze_forever", bind=True)
    def snooze_forever(self: Any) -> None:
        raise self.snooze(float("inf"))

    @app.task(
        name="backoff_fn",
        bind=True,
        autoretry_for=(ValueError,),
        max_retries=2,
        retry_backoff=lambda attempt, exc: 0.3 * attempt if isinstance(exc, ValueError) else 0,
    )
    def backoff_fn(self: Any) -> int:
        if self.request.attempt < 3:
            raise ValueError(f"attempt {self.request.attempt}")
        return self.request.attempt

    @app.task(
        name="backoff_broken",
        autoretry_for=(ValueError,),
        retry_backoff=lambda attempt, exc: -1,
    )
    def backoff_broken() -> None:
        raise ValueError("needs a retry")

    @app.task(name="atomic_note", bind=True, atomic=True)
    def atomic_note(self: Any, table: str) -> str:
        """One row in ``table`` (schema.table) through the job's own transaction."""
        schema_name, _, table_name = table.partition(".")
        statement = sql.SQL("INSERT INTO {} (job) VALUES (%s)").format(
            sql.Identifier(schema_name, table_name)
        )
        self.connection.execute(statement, [self.request.id])
        return str(self.request.id)

    @app.task(name="progress", bind=True)
    def progress(self: Any, steps: int) -> int:
        for step in range(steps):
            self.update_state(state="PROGRESS", meta={"done": step, "total": steps})
            time.sleep(0.2)
        return steps

    # -- flow control -----------------------------------------------------------

    @app.task(name="rate_limited", rate_limit="10/s")
    def rate_limited(n: int) -> int:
        return n

    @app.task(name="rate_fast", rate_limit="400/s")
    def rate_fast() -> float:
        return time.time()  # when it started, to check the limit against

    @app.task(name="two_at_a_time", concurrency_limit=2)
    def two_at_a_time(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    @app.task(
        name="per_account", concurrency_limit=1, concurrency_key=lambda account, seconds: account
    )
    def per_account(account: str, seconds: float) -> str:
        time.sleep(seconds)
        return account

    @app.task(name="once_at_a_time", unique=True)
    def once_at_a_time(key: str) -> str:
        return key

    # -- side effects, counted in a table of the test's schema ----------------------

    @app.task(name="note_run")
    def note_run(table: str, key: str) -> str:
        schema_name, _, table_name = table.partition(".")
        statement = sql.SQL("INSERT INTO {} (key) VALUES (%s)").format(
            sql.Identifier(schema_name, table_name)
        )
        with app.db.pool().connection() as conn:
            conn.execute(statement, [key])
        return key

    @app.task(name="fan_out")
    def fan_out(count: int) -> list[str]:
        """Enqueues ``count`` add jobs from inside a task (in a worker: through
        its small task pool)."""
        return [app.tasks["add"].delay(i, i).id for i in range(count)]

    @app.task(name="effect", bind=True)
    def effect(self: Any, table: str, gate: str = "") -> str:
        """A side effect: one row per run (job, host, pid) in ``table``. While
        the file ``gate`` exists, a run waits before its side effect with a
        marker file beside the gate (``gate~host~job~pid``): a test can fence
        or cut off a worker while every run it holds is known and has done
        nothing yet."""
        request = self.request
        if gate and os.path.exists(gate):
            marker = f"{gate}~{request.hostname}~{request.id}~{os.getpid()}"
            open(marker, "w").close()
            while os.path.exists(gate):
                time.sleep(0.005)
            os.remove(marker)
        schema_name, _, table_name = table.partition(".")
        statement = sql.SQL("INSERT INTO {} (job, host, pid) VALUES (%s, %s, %s)").format(
            sql.Identifier(schema_name, table_name)
        )
        with app.db.pool().connection() as conn:
            conn.execute(statement, [request.id, request.hostname, os.getpid()])
        return str(request.id)

    return SimpleNamespace(app=app, **app.tasks)


app = JobQueue()
tasks = build(app)
# Only `jobqueue beat` (and `worker --beat`) read this.
app.conf.beat_schedule = {"every-second": {"task": "add", "schedule": 1.0, "args": [1, 1]}}
