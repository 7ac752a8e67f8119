"""Revision 0014's functions from plain SQL: run-time limits (parse_rate,
set_rate_limit, set_concurrency_limit, reset_task_limit and a starting
worker's sync beside them) and remote control's requests and replies."""

from __future__ import annotations

import math
from typing import Any

import psycopg
import pytest

from jobqueue.ids import new_id
from jobqueue.sql import queries


def _one(conn: Any, query: str, *params: Any) -> Any:
    row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def _limits(conn: Any, schema: str, task: str) -> tuple[Any, ...] | None:
    row = conn.execute(
        f"""SELECT rate_per_second, burst, concurrency_limit, declared_rate, declared_concurrency,
                   rate_set_by IS NOT NULL, concurrency_set_by IS NOT NULL
            FROM "{schema}".task_limits WHERE task = %s""",
        (task,),
    ).fetchone()
    return None if row is None else tuple(row)


def _sync(conn: Any, schema: str, task: str, rate: float | None, limit: int | None) -> None:
    """What a starting worker of this release runs for its tasks."""
    params = {"tasks": [task], "rates": [rate], "bursts": [1.0], "limits": [limit]}
    conn.execute(queries(schema)["task_limits_sync"], params)


@pytest.mark.parametrize(
    ("rate", "per_second"),
    [
        ("10/s", 10.0),
        ("120/m", 2.0),
        ("3600/h", 1.0),
        ("2.5", 2.5),
        (" 5 / s ", 5.0),
        ("0", None),
        ("", None),
        (None, None),
        ("0/m", None),
    ],
)
def test_parse_rate_reads_celery_rates(
    conn: Any, schema: str, rate: str | None, per_second: float | None
) -> None:
    got = _one(conn, f'SELECT "{schema}".parse_rate(%s)', rate)
    assert got == per_second or (got is not None and math.isclose(got, per_second or 0))


@pytest.mark.parametrize("rate", ["ten/s", "10/d", "-1/s", "1e3", "10/s/s", "NaN"])
def test_parse_rate_refuses_what_it_cannot_read(conn: Any, schema: str, rate: str) -> None:
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(f'SELECT "{schema}".parse_rate(%s)', (rate,))
    assert caught.value.sqlstate == "JQ002"
    assert "bad rate" in str(caught.value)


def test_an_operator_limit_stands_across_worker_starts_until_reset(conn: Any, schema: str) -> None:
    s = f'"{schema}"'
    _sync(conn, schema, "report", 2.0, 3)  # declared in code: 2/s, 3 at once
    assert _limits(conn, schema, "report") == (2.0, 1.0, 3, 2.0, 3, False, False)

    assert _one(conn, f"SELECT {s}.set_rate_limit('report', '30/m', 5)") == 0.5
    assert _one(conn, f"SELECT {s}.set_concurrency_limit('report', 1)") == 1
    _sync(conn, schema, "report", 8.0, 6)  # a worker of a new deploy starts
    assert _limits(conn, schema, "report") == (0.5, 5.0, 1, 8.0, 6, True, True)

    # The code stops declaring limits: the operator's stand, the declared go.
    _sync(conn, schema, "report", None, None)
    assert _limits(conn, schema, "report") == (0.5, 5.0, 1, None, None, True, True)
    _sync(conn, schema, "report", 8.0, 6)

    assert _one(conn, f"SELECT {s}.reset_task_limit('report')") is True
    assert _limits(conn, schema, "report") == (8.0, 1.0, 6, 8.0, 6, False, False)
    assert _one(conn, f"SELECT {s}.reset_task_limit('nobody')") is False

    # Lifting the rate only: NULL in force, still the operator's choice.
    assert _one(conn, f"SELECT {s}.set_rate_limit('report', '0')") is None
    _sync(conn, schema, "report", 8.0, 6)
    assert _limits(conn, schema, "report") == (None, 1.0, 6, 8.0, 6, True, False)


def test_a_rate_for_a_task_that_declares_none_and_its_reset(conn: Any, schema: str) -> None:
    s = f'"{schema}"'
    assert _one(conn, f"SELECT {s}.set_rate_limit('add', '4/s')") == 4.0
    _sync(conn, schema, "add", None, None)  # its workers declare nothing: kept
    assert _limits(conn, schema, "add") == (4.0, 1.0, None, None, None, True, False)
    assert _one(conn, f"SELECT {s}.reset_task_limit('add')") is True
    assert _limits(conn, schema, "add") is None  # nothing left to keep


def test_limits_refuse_bad_input(conn: Any, schema: str) -> None:
    s = f'"{schema}"'
    for call, state in [
        (f"SELECT {s}.set_rate_limit('', '1/s')", "JQ002"),
        (f"SELECT {s}.set_rate_limit(NULL, '1/s')", "JQ002"),
        (f"SELECT {s}.set_rate_limit('t', '1/s', 0.5)", "JQ002"),
        (f"SELECT {s}.set_rate_limit('t', 'fast')", "JQ002"),
        (f"SELECT {s}.set_concurrency_limit('t', 0)", "JQ002"),
        # Its jobs carry no concurrency key to count by.
        (f"SELECT {s}.set_concurrency_limit('t', 2)", "JQ003"),
    ]:
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(call)
        assert caught.value.sqlstate == state, call
    assert conn.execute(f"SELECT count(*) FROM {s}.task_limits").fetchone() == (0,)


def _register(conn: Any, schema: str, hostname: str) -> str:
    worker = new_id()
    conn.execute(
        queries(schema)["worker_register"],
        {
            "id": worker,
            "hostname": hostname,
            "pid": 1,
            "queues": ["default"],
            "concurrency": 1,
            "version": "test",
            "lease_ttl": 30,
            "tasks": ["add"],
            "pool": "threads",
        },
    )
    return worker


def test_requests_reach_their_workers_once_and_expire(conn: Any, schema: str) -> None:
    s = f'"{schema}"'
    a, b = _register(conn, schema, "a"), _register(conn, schema, "b")
    everyone = _one(conn, f"SELECT {s}.control_send('ping')")
    only_b = _one(conn, f"SELECT {s}.control_send('stats', '{{}}', ARRAY['b'])")

    def pending(worker: str) -> list[int]:
        rows = conn.execute(f"SELECT id FROM {s}.control_pending(%s)", (worker,)).fetchall()
        return [r[0] for r in rows]

    assert pending(a) == [everyone]
    assert pending(b) == [everyone, only_b]
    assert _one(conn, f'SELECT {s}.control_reply(%s, %s, \'{{"ok": "pong"}}\')', everyone, a)
    assert not _one(conn, f"SELECT {s}.control_reply(%s, %s, '1')", everyone, a)  # once
    assert pending(a) == []
    replies = conn.execute(f"SELECT hostname, reply FROM {s}.control_answers(%s)", (everyone,))
    assert replies.fetchall() == [("a", {"ok": "pong"})]
    expected = conn.execute(f"SELECT hostname FROM {s}.control_expected(ARRAY['b', 'x'])")
    assert expected.fetchall() == [("b",)]

    # A worker that starts later does not act on what was sent before it.
    c = _register(conn, schema, "c")
    conn.execute(
        f"UPDATE {s}.workers SET started_at = now() + interval '1 second' WHERE id = %s", (c,)
    )
    assert pending(c) == []
    # Expired requests are not pending, and the next send deletes them (and
    # their replies) a minute after their deadline.
    conn.execute(f"UPDATE {s}.control_requests SET expires_at = now() - interval '2 minutes'")
    assert pending(b) == []
    _one(conn, f"SELECT {s}.control_send('ping')")
    assert conn.execute(f"SELECT count(*) FROM {s}.control_requests").fetchone() == (1,)
    assert conn.execute(f"SELECT count(*) FROM {s}.control_replies").fetchone() == (0,)


@pytest.mark.parametrize(
    ("command", "arguments", "destination", "timeout"),
    [
        ("reboot", {}, None, 10),
        (None, {}, None, 10),
        ("ping", [], None, 10),
        ("pool_grow", {}, None, 10),
        ("pool_grow", {"n": 0}, None, 10),
        ("pool_grow", {"n": 1.5}, None, 10),
        ("pool_grow", {"n": "2"}, None, 10),
        ("pool_shrink", {"n": 100000}, None, 10),
        ("add_consumer", {"queue": ""}, None, 10),
        ("cancel_consumer", {}, None, 10),
        ("ping", {}, ["a", None], 10),
        ("ping", {}, None, -1),
        ("ping", {}, None, 4000),
    ],
)
def test_control_send_refuses_bad_requests(
    conn: Any, schema: str, command: Any, arguments: Any, destination: Any, timeout: float
) -> None:
    from psycopg.types.json import Jsonb

    with pytest.raises(psycopg.Error) as caught:
        conn.execute(
            f'SELECT "{schema}".control_send(%s, %s, %s::text[], %s)',
            (command, Jsonb(arguments), destination, timeout),
        )
    assert caught.value.sqlstate == "JQ002"
    assert conn.execute(f'SELECT count(*) FROM "{schema}".control_requests').fetchone() == (0,)
