"""Python and SQL compute the same keys, byte for byte (jobqueue.keys and
migration 0022's canonical_json(), task_key(), unique_lock_seed()): what
makes a job enqueued from SQL and the same call's ``delay()`` one job."""

from __future__ import annotations

import enum
import json
import random
from typing import Any

import psycopg
import pytest

from jobqueue import JobQueue, arg
from jobqueue.keys import Arg, canonical_arguments, key_spec, task_settings
from jobqueue.limits import BY_FUNCTION, static_route
from jobqueue.serialization import dump_arguments
from jobqueue.sql import lock_classes


class Color(enum.IntEnum):
    RED = 3


class Name(str, enum.Enum):
    ADA = "ada"


def _sql_canonical(conn: psycopg.Connection[Any], schema: str, args: Any, kwargs: Any) -> str:
    args_json, kwargs_json = dump_arguments("t", args, kwargs)
    row = conn.execute(
        f'SELECT "{schema}".canonical_json(jsonb_build_array(%s::jsonb, %s::jsonb))',
        (args_json, kwargs_json),
    ).fetchone()
    assert row is not None
    return str(row[0])


def _value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 3 or roll < 0.45:
        return rng.choice(
            [
                lambda: rng.randint(-(10**20), 10**20),
                lambda: rng.choice([0.0, -0.0, 1.5, 1e-7, 1.5e300, -2.5e-12, 1e16, 0.1, 5e-324]),
                lambda: rng.uniform(-1e6, 1e6),
                lambda: "".join(
                    rng.choice('ab"\\\n\t\x01\x1f\x7fé€😀 /,:{}[]e')
                    for _ in range(rng.randint(0, 8))
                ),
                lambda: rng.choice([True, False, None]),
            ]
        )()
    if roll < 0.7:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["a", "b", "aa", "B", "é", "€", "a b", "", "10", "9", "zzz"]
    return {rng.choice(keys): _value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def test_python_and_sql_write_the_same_canonical_arguments(
    conn: psycopg.Connection[Any], schema: str
) -> None:
    rng = random.Random(24)
    for _ in range(2_000):
        args = [_value(rng) for _ in range(rng.randint(0, 3))]
        kwargs = {rng.choice(["x", "y", "zz", "é"]): _value(rng) for _ in range(rng.randint(0, 3))}
        assert canonical_arguments(args, kwargs) == _sql_canonical(conn, schema, args, kwargs)
    # What Python's json turns into JSON its own way: tuples, non-string dict
    # keys (as strings, sorted as strings: "10" before "9"), subclasses.
    deep: Any = 1
    for _ in range(150):
        deep = [deep]
    for args, kwargs, expected in (
        ((1, 2), {}, "[[1,2],{}]"),
        (((1, (2,)),), {"b": 1, "a": 2}, '[[[1,[2]]],{"a":2,"b":1}]'),
        (({9: "x", 10: "y", True: 1, None: 2, 1.5: 3},), {}, None),
        ((Color.RED, Name.ADA, -0.0, 1e-7, 1e16, 2.5e-12), {}, None),
        (("\x01", 'é\n"\\'), {"é": "€"}, None),
        ((deep,), {}, None),
        (([], {}), {}, "[[[],{}],{}]"),
    ):
        ours = canonical_arguments(args, kwargs)
        assert ours == _sql_canonical(conn, schema, args, kwargs)
        if expected is not None:
            assert ours == expected
    assert canonical_arguments((-0.0, 1e-7, 1e16), {}) == "[[0.0,0.0000001,10000000000000000],{}]"


def test_unique_and_argument_keys_are_the_same_in_sql(
    conn: psycopg.Connection[Any], schema: str, dsn: str
) -> None:
    app = JobQueue(dsn, schema=schema, auto_migrate=False)

    @app.task(name="by_args", unique=True)
    def by_args(*args: Any, **kwargs: Any) -> None: ...

    @app.task(name="by_arg", unique_key=arg("doc"), concurrency_limit=1, concurrency_key=arg("n"))
    def by_arg(doc: Any, n: Any = 0, *, tag: str = "") -> None: ...

    def sql_key(task: str, setting: str, spec: Any, args: Any, kwargs: Any) -> str | None:
        args_json, kwargs_json = dump_arguments(task, args, kwargs)
        row = conn.execute(
            f'SELECT "{schema}".task_key(%s, %s, %s::jsonb, %s::jsonb, %s::jsonb)',
            (task, setting, json.dumps(spec), args_json, kwargs_json),
        ).fetchone()
        assert row is not None
        return None if row[0] is None else str(row[0])

    flow = app.tasks["by_args"].flow
    call = ((1, {"b": [1e-7], "a": None}), {"z": "é", "a": 1})
    assert flow.unique_for("by_args", *call) == sql_key(
        "by_args", "unique_key", key_spec(flow.unique_key, unique=True), *call
    )
    flow = app.tasks["by_arg"].flow
    assert key_spec(flow.unique_key, unique=True) == {"kind": "arg", "name": "doc", "position": 0}
    assert key_spec(flow.concurrency_key) == {
        "kind": "arg",
        "name": "n",
        "position": 1,
        "default": 0,  # the parameter's, used when a call does not give it
    }
    for args, kwargs in ((("d1",), {}), ((), {"doc": "d1"}), ((12,), {"n": -40}), (("é", 7), {})):
        for setting, key, declared in (
            ("unique_key", flow.unique_for("by_arg", args, kwargs), flow.unique_key),
            (
                "concurrency_key",
                flow.keys("by_arg", args, kwargs)["concurrency_key"],
                flow.concurrency_key,
            ),
        ):
            spec = key_spec(declared)
            assert key == sql_key("by_arg", setting, spec, args, kwargs), (setting, args, kwargs)
    assert flow.keys("by_arg", ("d1",), {}) == {"concurrency_key": "by_arg:0"}
    # What neither computes: a missing argument, or one neither a string nor an integer.
    spec = key_spec(flow.unique_key, unique=True)
    for args, kwargs in (((), {"n": 1}), ((1.5,), {}), ((True,), {}), ((None,), {}), (([1],), {})):
        with pytest.raises(TypeError, match="key argument 'doc'"):
            flow.unique_for("by_arg", args, kwargs)
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="its argument doc"):
            sql_key("by_arg", "unique_key", spec, args, kwargs)
    # The lock both take for a key: the same seed.
    row = conn.execute(f'SELECT "{schema}".unique_lock_seed()').fetchone()
    assert row == (lock_classes(schema)["unique"],)
    app.close()


def test_an_argument_key_is_bound_to_the_functions_parameters(dsn: str, schema: str) -> None:
    app = JobQueue(dsn, schema=schema, auto_migrate=False)

    @app.task(name="bound", bind=True, concurrency_limit=1, concurrency_key=arg("account"))
    def bound(self: Any, account: str, *, region: str = "") -> None: ...

    @app.task(name="kw_only", rate_limit="1/s", rate_limit_key=arg("region"))
    def kw_only(account: str, *, region: str) -> None: ...

    @app.task(name="anything", unique_key=arg("tenant"))
    def anything(**kwargs: Any) -> None: ...

    assert app.tasks["bound"].flow.concurrency_key == Arg("account", 0)  # self skipped
    assert app.tasks["kw_only"].flow.rate_limit_key == Arg("region")
    assert app.tasks["anything"].flow.unique_key == Arg("tenant")
    assert app.tasks["bound"].flow.keys("bound", ("acme",), {}) == {"concurrency_key": "bound:acme"}
    with pytest.raises(TypeError, match=r"arg\('acount'\) names no parameter .* account"):

        @app.task(name="typo", concurrency_limit=1, concurrency_key=arg("acount"))
        def typo(account: str) -> None: ...

    with pytest.raises(TypeError, match="positional-only"):

        @app.task(name="positional", unique_key=arg("a"))
        def positional(a: str, /) -> None: ...

    with pytest.raises(TypeError, match="name of one of the task's parameters"):
        arg("")
    app.close()


def test_routes_and_settings_as_a_worker_writes_them(dsn: str, schema: str) -> None:
    def by_function(name: str, args: Any, kwargs: Any) -> str | None:
        return None

    routes = [{"exact": "q1", "glob.*": {"queue": "q2"}, "empty": {}}, by_function, {"late": "q3"}]
    assert static_route(routes, "exact") == "q1"
    assert static_route(routes, "glob.x") == "q2"
    assert static_route(routes, "empty") is BY_FUNCTION  # a mapping without "queue" passes
    assert static_route(routes, "late") is BY_FUNCTION  # the function may route it first
    assert static_route({"exact": "q1"}, "other") is None

    app = JobQueue(dsn, schema=schema, auto_migrate=False, task_routes=routes[:1])
    app.conf.default_queue = "main"
    app.conf.default_priority = 3

    @app.task(name="exact", unique_key=lambda x: x, unique_window=60, on_duplicate="debounce")
    def exact(x: Any) -> None: ...

    @app.task(name="plain", queue="own", rate_limit="2/s", max_retries=9, time_limit=30)
    def plain() -> None: ...

    @app.task(name="bad", queue="fine")
    def bad() -> None: ...

    app.conf.task_routes = [*routes[:1], {"bad": "a,b"}]  # not a queue a worker can consume
    rows = {row["task"]: row for row in task_settings(app)}
    assert "bad" not in rows  # left out with a warning: SQL treats it as unknown
    assert rows["exact"] == {
        "task": "exact",
        "queue": "q1",
        "priority": 3,
        "options": {"max_retries": 3},
        "rate_limit_key": None,
        "concurrency_key": None,
        "unique_key": {"kind": "python"},
        "unique_states": ["PENDING", "STARTED", "RETRY"],
        "unique_window": 60.0,
        "on_duplicate": "debounce",
    }
    assert rows["plain"]["queue"] == "own"
    assert rows["plain"]["options"] == {"max_retries": 9, "time_limit": 30.0}
    assert rows["plain"]["rate_limit_key"] == {"kind": "task"}
    assert rows["jobqueue.map"]["queue"] == "main"  # no route, no queue of its own
    app.close()
