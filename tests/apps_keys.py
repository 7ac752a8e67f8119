"""Tasks of the keys-in-SQL tests (tests/integration/test_sql_keys.py): unique,
limited and routed tasks that ``jobqueue.enqueue()`` in SQL, the beat and
canvas steps must treat as ``delay()`` does. Workers load
``tests.apps_keys:app`` (or ``:by_function``, whose routes end with a
function); a test builds its own app on the same schema with ``build``."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from psycopg import sql

from jobqueue import JobQueue, arg

ROUTES: list[Any] = [{"keys.routed": "exact-q", "keys.glob_*": {"queue": "glob-q"}}]


def _note(app: JobQueue, table: str, key: str) -> None:
    """One row per run in ``table`` (schema.table): what ran, counted by a test."""
    schema_name, _, table_name = table.partition(".")
    statement = sql.SQL("INSERT INTO {} (key) VALUES (%s)").format(
        sql.Identifier(schema_name, table_name)
    )
    with app.db.pool().connection() as conn:
        conn.execute(statement, [key])


def build(app: JobQueue) -> SimpleNamespace:
    @app.task(name="keys.unique", unique=True)
    def unique_args(table: str, item: Any, **options: Any) -> Any:
        """Unique by its arguments (the default key); one row per run."""
        _note(app, table, f"unique:{item}")
        return {"item": item, "options": options}

    @app.task(name="keys.unique_by_arg", unique_key=arg("doc"), on_duplicate="replace")
    def unique_by_arg(table: str, doc: str, text: str) -> str:
        _note(app, table, f"doc:{doc}:{text}")
        return text

    @app.task(name="keys.one_at_a_time", unique_key="only", max_retries=7, priority=4)
    def one_at_a_time(table: str, n: int) -> int:
        _note(app, table, f"one:{n}")
        return n

    @app.task(name="keys.per_account", concurrency_limit=1, concurrency_key=arg("account"))
    def per_account(account: str, seconds: float) -> str:
        time.sleep(seconds)
        return account

    @app.task(name="keys.lambda_key", concurrency_limit=1, concurrency_key=lambda a, **_: a)
    def lambda_key(a: str) -> str:
        return a

    @app.task(name="keys.two_at_a_time", concurrency_limit=2)
    def two_at_a_time(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    @app.task(name="keys.account_of")
    def account_of(account: str) -> str:
        """A chain's first step: its result is the next step's account."""
        return account

    @app.task(name="keys.routed")
    def routed() -> str:
        return "routed"

    @app.task(name="keys.glob_one", queue="own-q")
    def glob_one() -> str:
        return "glob"

    @app.task(name="keys.own_queue", queue="own-q", priority=7)
    def own_queue() -> str:
        return "own"

    @app.task(name="keys.wrap")
    def wrap(value: Any) -> dict[str, Any]:
        """What follows a step in a chain: it receives the step's result."""
        return {"after": value}

    ours = {n.removeprefix("keys."): t for n, t in app.tasks.items() if n.startswith("keys.")}
    return SimpleNamespace(app=app, **ours)


app = JobQueue(task_routes=ROUTES)
tasks = build(app)
app.conf.beat_schedule = {
    # Due every 0.2 s, each job waiting an hour: every tick after the first
    # finds the key held (a unique task's tick records the holder).
    "one-at-a-time": {
        "task": "keys.one_at_a_time",
        "schedule": 0.2,
        "args": ["unused.table", 0],
        "options": {"countdown": 3600},
    },
}

# Routes that end with a function: only Python knows where its other tasks go.
by_function = JobQueue(
    task_routes=[*ROUTES, lambda name, args, kwargs: "fn-q" if name == "keys.routed" else None]
)
build(by_function)
