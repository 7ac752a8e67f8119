"""Guarantees however a job is inserted (issue 24, item 7): a job written by
``jobqueue.enqueue()`` in SQL, by a beat or as a canvas step gets the queue,
the limit keys and the unique key ``delay()`` gives it, from what the workers
wrote to ``task_settings``; what only Python can compute is an error naming
it, never skipped. Real workers, beats and PostgreSQL throughout."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest

from jobqueue import JobQueue, chain, group
from tests.apps_keys import ROUTES, build
from tests.conftest import wait_for

APP = "tests.apps_keys:app"


@pytest.fixture
def jk(dsn: str, schema: str, conn: psycopg.Connection[Any]) -> Iterator[SimpleNamespace]:
    """The tasks of tests.apps_keys on an app of this test's schema, and the
    table their runs are counted in (runs (key))."""
    conn.execute(f'CREATE TABLE "{schema}".runs (key text)')
    app = JobQueue(dsn, schema=schema, auto_migrate=False, task_routes=ROUTES)
    tasks = build(app)
    tasks.table = f"{schema}.runs"
    yield tasks
    app.close()


def _enqueue(
    conn: psycopg.Connection[Any],
    schema: str,
    task: str,
    args: Any = (),
    kwargs: dict[str, Any] | None = None,
    **named: Any,
) -> str:
    """``SELECT jobqueue.enqueue(task, args, kwargs, <named> => ...)``: the job's id."""
    extra = "".join(f", {name} => %({name})s" for name in named)
    row = conn.execute(
        f'SELECT "{schema}".enqueue(%(task)s, %(args)s::jsonb, %(kwargs)s::jsonb{extra})::text',
        {"task": task, "args": json.dumps(list(args)), "kwargs": json.dumps(kwargs or {}), **named},
    ).fetchone()
    assert row is not None
    return str(row[0])


def _synced(conn: psycopg.Connection[Any], schema: str, where: str = "true") -> None:
    """Wait until a starting worker has written its tasks' settings."""

    def written() -> bool:
        row = conn.execute(
            f'SELECT count(*) FROM "{schema}".task_settings '
            f"WHERE task = 'keys.routed' AND {where}"
        ).fetchone()
        return bool(row and row[0])

    wait_for(written, 30, "the worker's task_settings")


def _jobs(conn: psycopg.Connection[Any], schema: str, ids: list[str]) -> dict[str, Any]:
    rows = conn.execute(
        f'SELECT id::text, queue, priority, options FROM "{schema}".all_jobs '
        "WHERE id = ANY(%s::uuid[])",
        (ids,),
    ).fetchall()
    return {r[0]: r[1:] for r in rows}


def _runs(conn: psycopg.Connection[Any], schema: str) -> list[str]:
    return [r[0] for r in conn.execute(f'SELECT key FROM "{schema}".runs ORDER BY 1')]


def _later() -> datetime:
    return datetime.now(timezone.utc) + timedelta(hours=1)


def test_sql_enqueue_of_a_unique_task_dedupes_against_delay_and_against_itself(
    jk: Any, schema: str, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    start_worker("--concurrency", "2", app=APP)
    _synced(conn, schema)
    table = jk.table
    # delay() first, then the same call from SQL: its keyword arguments and
    # the nested object's keys in another order, as jsonb stores them anyway.
    first = jk.unique.apply_async(
        (table, {"b": 1, "a": [1.5, "é", 1e-7]}), {"z": 1, "a": 2}, countdown=3600
    )
    same = [table, {"a": [1.5, "é", 1e-7], "b": 1}]
    assert _enqueue(conn, schema, "keys.unique", same, {"a": 2, "z": 1}) == first.id
    assert _enqueue(conn, schema, "keys.unique", same, {"a": 2, "z": 1}) == first.id
    # SQL first, then delay() and SQL again.
    from_sql = _enqueue(conn, schema, "keys.unique", [table, 2], run_at=_later())
    assert jk.unique.apply_async((table, 2), countdown=3600).id == from_sql
    assert jk.unique.delay(table, 2).id == from_sql
    assert _enqueue(conn, schema, "keys.unique", [table, 2]) == from_sql
    # Other arguments, another key: a job of its own that runs at once.
    other = _enqueue(conn, schema, "keys.unique", [table, 3])
    assert other not in (first.id, from_sql)
    assert jk.app.AsyncResult(other).get(timeout=30) == {"item": 3, "options": {}}
    keys = [r[0] for r in conn.execute(f'SELECT key FROM "{schema}".unique_keys ORDER BY 1')]
    assert keys == [
        f'keys.unique:[["{table}",2],{{}}]',
        f'keys.unique:[["{table}",3],{{}}]',
        f'keys.unique:[["{table}",{{"a":[1.5,"é",0.0000001],"b":1}}],{{"a":2,"z":1}}]',
    ]
    # The holders run once each, whichever way their duplicates came.
    assert first.update(countdown=0) and jk.app.AsyncResult(from_sql).update(countdown=0)
    assert first.get(timeout=30)["options"] == {"z": 1, "a": 2}
    assert jk.app.AsyncResult(from_sql).get(timeout=30) == {"item": 2, "options": {}}
    runs = _runs(conn, schema)
    assert sorted(runs) == sorted(
        ["unique:2", "unique:3", "unique:{'a': [1.5, 'é', 1e-07], 'b': 1}"]
    )
    assert conn.execute(
        f"SELECT count(*) FROM \"{schema}\".jobs WHERE task = 'keys.unique'"
    ).fetchone() == (3,)


def test_a_constant_or_argument_key_and_replace_hold_in_sql_as_in_python(
    jk: Any, schema: str, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    start_worker("-Q", "nothing", app=APP)  # writes the settings, runs none of these jobs
    _synced(conn, schema)
    table = jk.table
    held = jk.one_at_a_time.apply_async((table, 1), countdown=3600)  # unique_key="only"
    assert _enqueue(conn, schema, "keys.one_at_a_time", [table, 2]) == held.id
    # unique_key=arg("doc"), on_duplicate="replace": the key is the argument,
    # given by position or by name; a duplicate gives the waiting holder its
    # arguments, whichever side it comes from.
    doc = jk.unique_by_arg.apply_async((table, "d1", "draft"), countdown=3600)
    assert _enqueue(conn, schema, "keys.unique_by_arg", [table], {"doc": "d1", "text": "sql"}) == (
        doc.id
    )
    assert conn.execute(
        f'SELECT kwargs, args FROM "{schema}".jobs WHERE id = %s', (doc.id,)
    ).fetchone() == ({"doc": "d1", "text": "sql"}, [table])
    assert jk.unique_by_arg.apply_async((table, "d1", "final"), countdown=3600).id == doc.id
    seven = _enqueue(conn, schema, "keys.unique_by_arg", [table, 7, "n"])  # key "7"
    assert seven != doc.id
    assert jk.unique_by_arg.delay(table, 7, "m").id == seven  # its digits: the same key
    keys = {r[0] for r in conn.execute(f'SELECT key FROM "{schema}".unique_keys')}
    assert keys == {"keys.one_at_a_time:only", "keys.unique_by_arg:d1", "keys.unique_by_arg:7"}
    # The job stores the task's options, as delay()'s do; its priority too.
    rows = _jobs(conn, schema, [held.id])
    assert rows[held.id][1] == 4 and rows[held.id][2]["max_retries"] == 7


def test_limit_keys_from_sql_are_those_of_delay_and_workers_honour_them(
    jk: Any, schema: str, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    for _ in range(2):
        start_worker("--concurrency", "4", app=APP)
    _synced(conn, schema)
    # concurrency_key=arg("account"): by position or by name, from SQL or delay().
    ids = [_enqueue(conn, schema, "keys.per_account", [a, 0.3]) for a in "AABB"]
    ids += [
        _enqueue(conn, schema, "keys.per_account", [], {"account": a, "seconds": 0.3}) for a in "AB"
    ]
    ids += [jk.per_account.delay("A", 0.3).id, jk.per_account.delay(account="B", seconds=0.3).id]
    keys = {
        i: options.get("concurrency_key") for i, (_, _, options) in _jobs(conn, schema, ids).items()
    }
    assert sorted(keys.values()) == ["keys.per_account:A"] * 4 + ["keys.per_account:B"] * 4
    queued = conn.execute(
        f'SELECT count(*) FROM "{schema}".job_queue WHERE concurrency_key LIKE %s',
        ("keys.per_account:%",),
    ).fetchone()
    assert queued is not None and queued[0] > 0  # the claim's key is there too
    # A task-wide limit (concurrency_limit=2, no key function) from SQL.
    wide = [_enqueue(conn, schema, "keys.two_at_a_time", [0.3]) for _ in range(8)]
    for job in [*ids, *wide]:
        jk.app.AsyncResult(job).get(timeout=60)
    runs = conn.execute(
        f"SELECT task, started_at, finished_at, COALESCE(args ->> 0, kwargs ->> %s) "
        f'FROM "{schema}".jobs WHERE task IN (%s, %s) ORDER BY started_at',
        ("account", "keys.per_account", "keys.two_at_a_time"),
    ).fetchall()
    for account in "AB":
        mine = [(s, f) for task, s, f, a in runs if task == "keys.per_account" and a == account]
        assert len(mine) == 4
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(mine)), account
    across = sum(
        1
        for a, b in itertools.combinations([r for r in runs if r[0] == "keys.per_account"], 2)
        if a[3] != b[3] and a[1] < b[2] and b[1] < a[2]
    )
    assert across > 0  # different accounts ran side by side
    limited = [(s, f) for task, s, f, _ in runs if task == "keys.two_at_a_time"]
    most = max(sum(1 for s, f in limited if s <= t < f) for t, _ in limited)
    print(f"\nfrom SQL: concurrency_limit=2 on 2 workers x 4 slots: at most {most} at once")
    assert most == 2


def test_a_key_or_a_route_only_python_computes_is_an_error_from_sql(
    jk: Any, schema: str, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    start_worker("-Q", "nothing", app=APP)
    _synced(conn, schema)
    with pytest.raises(psycopg.Error) as refused:
        _enqueue(conn, schema, "keys.lambda_key", ["x"])
    error = refused.value
    assert error.sqlstate == "JQ006"
    assert error.diag.message_primary == (
        "jobqueue.enqueue: task keys.lambda_key's concurrency_key is a Python function, "
        "which SQL cannot run"
    )
    assert "concurrency_key => '<key>'" in (error.diag.message_hint or "")
    # Passing what the function returns: the key delay() gives.
    given = _enqueue(conn, schema, "keys.lambda_key", ["x"], concurrency_key="x")
    expected = jk.lambda_key.delay("x")
    options = _jobs(conn, schema, [given, expected.id])
    assert options[given][2]["concurrency_key"] == options[expected.id][2]["concurrency_key"]
    assert options[given][2]["concurrency_key"] == "keys.lambda_key:x"
    # An argument key whose argument is missing, or not a string or integer.
    for args, kwargs, what in (
        ([jk.table], {}, "which this call does not give"),
        ([jk.table, [1], "t"], {}, "must be a string or an integer, got array"),
    ):
        with pytest.raises(psycopg.errors.InvalidParameterValue, match=what):
            _enqueue(conn, schema, "keys.unique_by_arg", args, kwargs)
    # A key for a task that has none, and keys for a task no worker registered.
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="has no key function"):
        _enqueue(conn, schema, "keys.two_at_a_time", [1], concurrency_key="k")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="not in task_settings"):
        _enqueue(conn, schema, "nobody.knows", unique_key="k")
    # Routes that end with a function: a task they do not route by name needs
    # its queue from the caller; one routed by name before the function does not.
    start_worker("-Q", "nothing", app="tests.apps_keys:by_function")
    wait_for(
        lambda: (
            conn.execute(
                f'SELECT queue IS NULL FROM "{schema}".task_settings WHERE task = %s',
                ("keys.own_queue",),
            ).fetchone()
            == (True,)
        ),
        30,
        "the settings of the worker whose routes end with a function",
    )
    with pytest.raises(psycopg.Error) as routed:
        _enqueue(conn, schema, "keys.own_queue")
    assert routed.value.sqlstate == "JQ006"
    assert "task keys.own_queue is routed by a function in app.conf.task_routes" in str(
        routed.value
    )
    assert "queue =>" in (routed.value.diag.message_hint or "")
    named = _enqueue(conn, schema, "keys.own_queue", queue="chosen")
    by_name = _enqueue(conn, schema, "keys.routed")
    rows = _jobs(conn, schema, [named, by_name])
    assert (rows[named][0], rows[by_name][0]) == ("chosen", "exact-q")
    written = conn.execute(
        f'SELECT count(*) FROM "{schema}".jobs WHERE task = ANY(%s)',
        (["keys.unique_by_arg", "nobody.knows"],),
    ).fetchone()
    assert written == (0,)  # every refused call wrote nothing


def test_sql_enqueue_routes_and_prioritises_as_delay_does(
    jk: Any, schema: str, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    start_worker("-Q", "exact-q,glob-q,own-q", app=APP)
    _synced(conn, schema)
    ids = {
        "exact": _enqueue(conn, schema, "keys.routed"),
        "glob": _enqueue(conn, schema, "keys.glob_one"),  # the route wins over its own queue
        "own": _enqueue(conn, schema, "keys.own_queue"),
        "named": _enqueue(conn, schema, "keys.own_queue", queue="elsewhere", priority=-1),
        "unknown": _enqueue(conn, schema, "nobody.knows"),  # as before: 'default', 0
    }
    python = {
        "exact": jk.routed.delay().id,
        "glob": jk.glob_one.delay().id,
        "own": jk.own_queue.delay().id,
    }
    rows = _jobs(conn, schema, [*ids.values(), *python.values()])
    got = {name: rows[job][:2] for name, job in ids.items()}
    assert got == {
        "exact": ("exact-q", 0),
        "glob": ("glob-q", 0),
        "own": ("own-q", 7),
        "named": ("elsewhere", -1),
        "unknown": ("default", 0),
    }
    assert {name: rows[job][:2] for name, job in python.items()} == {
        name: got[name] for name in python
    }
    # The worker of those queues runs them.
    for name, expected in (("exact", "routed"), ("glob", "glob"), ("own", "own")):
        assert jk.app.AsyncResult(ids[name]).get(timeout=30) == expected


def test_beat_ticks_of_a_unique_task_find_its_key_held_with_or_without_the_task(
    jk: Any, schema: str, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    start_worker("-Q", "nothing", app=APP)
    _synced(conn, schema)
    beat = start_worker(command="beat", app=APP)  # knows keys.one_at_a_time: every 0.2 s

    def ticks(name: str) -> list[str]:
        return [
            str(r[0])
            for r in conn.execute(
                f'SELECT job_id FROM "{schema}".schedule_ticks WHERE schedule = %s', (name,)
            )
        ]

    wait_for(lambda: len(ticks("one-at-a-time")) >= 5, 30, "five ticks")
    assert beat.terminate() == 0
    held = set(ticks("one-at-a-time"))
    assert len(held) == 1  # every tick after the first found the key held: one job
    (holder,) = held
    row = conn.execute(
        f"SELECT count(*), min(options ->> 'max_retries') FROM \"{schema}\".jobs "
        "WHERE task = 'keys.one_at_a_time'"
    ).fetchone()
    assert row == (1, "7")
    # Schedules added in SQL, fired by a beat whose app does not know these
    # tasks: enqueue() makes the jobs from the workers' task_settings.
    conn.execute(
        f'INSERT INTO "{schema}".schedules (name, task, args, options, interval_secs) VALUES '
        "('sql-one', 'keys.one_at_a_time', %s, '{\"countdown\": 3600}', 0.2), "
        "('sql-routed', 'keys.routed', '[]', '{}', 0.2), "
        "('sql-limited', 'keys.per_account', '[\"acme\", 0]', '{}', 0.2)",
        (json.dumps([jk.table, 1]),),
    )
    start_worker(command="beat", app="tests.apps:app")
    wait_for(
        lambda: all(len(ticks(n)) >= 3 for n in ("sql-one", "sql-routed", "sql-limited")),
        30,
        "three ticks of each schedule",
    )
    assert set(ticks("sql-one")) == {holder}
    made = conn.execute(
        f"SELECT DISTINCT task, queue, options ->> 'concurrency_key' FROM \"{schema}\".all_jobs "
        "WHERE task IN ('keys.routed', 'keys.per_account') ORDER BY 1"
    ).fetchall()
    assert made == [
        ("keys.per_account", "default", "keys.per_account:acme"),
        ("keys.routed", "exact-q", None),
    ]
    (queued,) = conn.execute(
        f'SELECT count(*) FROM "{schema}".job_queue WHERE concurrency_key = %s',
        ("keys.per_account:acme",),
    ).fetchone()
    assert queued >= 3  # the claim's copy of the key, which admit() counts
    # run_schedule() (the dashboard's "run now") too; what it cannot compute
    # in SQL is said, to the caller of app.control (the CLI, the dashboard).
    run_now = conn.execute(f"SELECT \"{schema}\".run_schedule('sql-one')::text").fetchone()
    assert run_now == (holder,)
    conn.execute(
        f'INSERT INTO "{schema}".schedules (name, task, args, interval_secs, enabled) '
        "VALUES ('sql-lambda', 'keys.lambda_key', '[\"a\"]', 3600, false)"
    )
    with pytest.raises(ValueError, match=r"lambda_key's concurrency_key is a Python function"):
        jk.app.control.run_schedule("sql-lambda")


def test_canvas_steps_take_keys_from_their_final_arguments_and_follow_a_unique_holder(
    jk: Any, schema: str, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    start_worker("--concurrency", "4", app=APP)
    _synced(conn, schema)
    table = jk.table
    # The step's concurrency key is its argument "account", which its parent's
    # result gives: SQL computes it when the step is written.
    keyed = chain(jk.account_of.s("acme"), jk.per_account.s(0.05)).apply_async()
    assert keyed.get(timeout=30) == "acme"
    (options,) = conn.execute(
        f'SELECT options FROM "{schema}".jobs WHERE id = %s', (keyed.id,)
    ).fetchone()
    assert options["concurrency_key"] == "keys.per_account:acme"
    # A unique step whose key a waiting job holds follows that job: it waits,
    # and ends with its result without running; what follows it gets that.
    holder = jk.unique.apply_async((table, "x"), countdown=3600)
    flow = chain(jk.unique.s(table, "x"), jk.wrap.s()).apply_async()
    step = flow.parent.id
    two = group(jk.unique.s(table, "y"), jk.unique.s(table, "y")).apply_async()
    follows = dict(
        conn.execute(
            f"SELECT id::text, options ->> 'follows' FROM \"{schema}\".jobs "
            "WHERE task = 'keys.unique' AND id <> %s",
            (holder.id,),
        ).fetchall()
    )
    assert follows[step] == holder.id
    assert sorted(follows[r.id] or "" for r in two.results) == sorted(["", two.results[0].id])
    assert holder.update(countdown=0)
    assert flow.get(timeout=30) == {"after": {"item": "x", "options": {}}}
    assert jk.app.AsyncResult(step).get(timeout=5) == holder.get(timeout=5)
    assert two.get(timeout=30) == [{"item": "y", "options": {}}] * 2
    assert sorted(_runs(conn, schema)) == ["unique:x", "unique:y"]  # each ran once


def test_sql_enqueue_waits_for_a_python_enqueuer_of_the_same_key_and_returns_its_job(
    jk: Any, dsn: str, schema: str, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    """Both take the key's one advisory lock (the same seed), so two enqueuers
    of one key take turns whichever side they come from: no duplicate."""
    start_worker("-Q", "nothing", app=APP)
    _synced(conn, schema)
    got: list[str] = []
    with psycopg.connect(dsn) as python_side:
        first = jk.unique.apply_async((jk.table, "race"), connection=python_side)  # not committed
        with psycopg.connect(dsn, autocommit=True) as sql_side:
            pid = sql_side.info.backend_pid
            waiter = threading.Thread(
                target=lambda: got.append(
                    _enqueue(sql_side, schema, "keys.unique", [jk.table, "race"])
                )
            )
            waiter.start()

            def waiting_for_the_lock() -> bool:
                row = conn.execute(
                    "SELECT wait_event_type = 'Lock' AND wait_event = 'advisory' "
                    "FROM pg_stat_activity WHERE pid = %s",
                    (pid,),
                ).fetchone()
                return bool(row and row[0])

            wait_for(waiting_for_the_lock, 30, "the SQL enqueue to wait for the key's lock")
            python_side.commit()
            waiter.join(30)
    assert got == [first.id]
    assert conn.execute(
        f"SELECT count(*) FROM \"{schema}\".all_jobs WHERE task = 'keys.unique'"
    ).fetchone() == (1,)
