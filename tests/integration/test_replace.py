"""self.replace(sig) and self.add_to_chord(sig) with real workers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest

from jobqueue import ChordError, GroupResult, JobQueue, chord, group, states
from tests.apps_replace import ReplacementError, build

APP = "tests.apps_replace:app"


@pytest.fixture
def rq(dsn: str, schema: str) -> Iterator[SimpleNamespace]:
    app = JobQueue(dsn, schema=schema, auto_migrate=False)
    yield build(app)
    app.close()


@pytest.fixture
def db(conn: psycopg.Connection[Any], schema: str) -> psycopg.Connection[Any]:
    """The assertions' connection, on this test's schema."""
    conn.execute(f'SET search_path TO "{schema}"')
    return conn


@pytest.fixture(params=["threads", "processes"])
def worker(request: Any, start_worker: Any) -> Any:
    return start_worker("--pool", request.param, "--concurrency", "4", app=APP)


def test_replace_with_each_kind_of_signature(rq: Any, worker: Any) -> None:
    become = rq.become
    assert become.delay(1, "task").get(timeout=30) == 101
    assert become.delay(1, "chain").get(timeout=30) == 12
    assert become.delay(1, "group").get(timeout=30) == [2, 3]
    assert become.delay(3, "chord").get(timeout=30) == 8
    assert become.delay(1, "become").get(timeout=30) == 13  # replaced twice


def test_replaced_job_points_to_its_replacement(rq: Any, worker: Any, db: Any) -> None:
    result = rq.become.delay(1, "chain")
    assert result.get(timeout=30) == 12
    assert result.state == states.SUCCESS
    replacement = result.result  # the replacement's result, not a value
    assert replacement.get(timeout=5) == 12
    rows = db.execute(
        "SELECT task, state FROM jobs WHERE parent_id = %s ORDER BY created_at", [result.id]
    ).fetchall()
    assert rows == [("add", "SUCCESS")]  # the chain's first step is its child


def test_chain_continues_after_the_replacement(rq: Any, worker: Any) -> None:
    add, become = rq.add, rq.become
    # a | b | c where b becomes (x | y): c receives y's result
    result = (add.s(1, 1) | become.s("chain") | add.s(1000))()
    assert result.get(timeout=30) == 1013
    # after a group replacement, the next step receives the group's list
    result = (add.s(1, 1) | become.s("group") | rq.tsum.s())()
    assert result.get(timeout=30) == 7
    # with a link on the replaced task itself
    parent = become.apply_async((5, "task"), link=add.s(1))
    assert parent.get(timeout=30) == 105
    # the link now follows the replacement: a child of the replacement's job
    replacement = parent.result
    [child] = replacement.children
    assert child.get(timeout=30) == 106
    assert [c.id for c in parent.children] == [replacement.id]


def test_replace_inside_a_plain_group(rq: Any, worker: Any) -> None:
    result = group(rq.become.s(1, "chain"), rq.add.s(1, 1), rq.become.s(1, "group"))()
    assert result.get(timeout=30) == [12, 2, [2, 3]]


def test_replace_inside_a_chord_header(rq: Any, worker: Any) -> None:
    add, become, tsum, identity = rq.add, rq.become, rq.tsum, rq.identity
    result = chord([add.s(1, 1), become.s(1, "chain"), add.s(3, 3)], identity.s())()
    assert result.get(timeout=30) == [2, 12, 6]  # in the member's place
    result = chord([become.s(1, "group"), add.s(1, 1)], identity.s())()
    assert result.get(timeout=30) == [[2, 3], 2]
    result = chord([become.s(2, "chord"), become.s(1, "task")], tsum.s())()
    assert result.get(timeout=30) == 6 + 101
    header = result.parent
    assert isinstance(header, GroupResult)
    assert header.get(timeout=30) == [6, 101]  # the header's results follow too


def test_a_failing_replacement_fails_the_chain_and_the_chord(rq: Any, worker: Any, db: Any) -> None:
    add, become = rq.add, rq.become
    errback = rq.record_error.s("errback")
    result = (become.s(1, "fail") | add.s(1)).on_error(errback)()
    with pytest.raises(ReplacementError, match=r"failed with \[1\]"):
        result.get(timeout=30)
    # the replaced step's error callback ran once, for the replacement's job
    first = result.parent
    replacement = first.result
    rows = db.execute(
        "SELECT id::text FROM jobs WHERE task = 'record_error' AND parent_id = %s",
        [replacement.id],
    ).fetchall()
    assert len(rows) == 1
    assert rq.app.AsyncResult(rows[0][0]).get(timeout=30) == f"errback: {replacement.id}"
    errbacks = db.execute("SELECT count(*) FROM jobs WHERE task = 'record_error'").fetchone()
    assert errbacks == (1,)  # once for the whole chain
    with pytest.raises(ReplacementError):
        first.get(timeout=30)  # following the pointer raises the replacement's error

    failed = chord([add.s(1, 1), become.s(1, "fail")], rq.tsum.s())()
    with pytest.raises(ChordError, match=r"Dependency .* raised ReplacementError"):
        failed.get(timeout=30)
    ((state,),) = db.execute(
        "SELECT state FROM chords WHERE id = %s", [failed.parent.id]
    ).fetchall()
    assert state == "FAILED"


def test_add_to_chord_body_receives_every_result(rq: Any, worker: Any, db: Any) -> None:
    add, grow, identity = rq.add, rq.grow, rq.identity
    result = chord([add.s(1, 1), grow.s(5, 2), add.s(3, 3)], identity.s())()
    assert result.get(timeout=30) == [2, 5, 6, 1005, 2005]
    chord_id = result.parent.id
    (state, remaining, members) = db.execute(
        "SELECT c.state, c.remaining, cardinality(g.members) FROM chords c "
        "JOIN groups g ON g.id = c.id WHERE c.id = %s",
        [chord_id],
    ).fetchone()
    assert (state, remaining, members) == ("DONE", 0, 5)
    assert GroupResult.restore(chord_id, app=rq.app).get(timeout=5) == [2, 5, 6, 1005, 2005]


def test_add_to_chord_misuse_raises_clear_errors(rq: Any, worker: Any) -> None:
    late = rq.grow_late
    alone = late.delay("x").get(timeout=30)
    assert alone.startswith("ChordMembershipError: ")
    assert "not a member of a chord's header" in alone
    in_group = group(late.s("x"), rq.add.s(1, 1))().get(timeout=30)
    assert in_group[0].startswith("ChordMembershipError: ")
    assert "plain group" in in_group[0]
    # a chord that already failed
    failing = chord([rq.fail.s(1), late.s("x").set(countdown=1)], rq.identity.s())()
    with pytest.raises(ChordError):
        failing.get(timeout=30)
    header = failing.parent
    said = header.results[1].get(timeout=30)
    assert said.startswith("ChordMembershipError: ") and "FAILED" in said


def test_add_to_group_lists_the_new_members(rq: Any, worker: Any, db: Any) -> None:
    grouped = group(rq.add.s(1, 1), rq.spread.s(5, 2))()
    assert grouped.get(timeout=30) == [2, 5]  # the group as it was enqueued
    restored = GroupResult.restore(grouped.id, app=rq.app)
    assert restored is not None and restored.get(timeout=30) == [2, 5, 1005, 2005]
    (members,) = db.execute(
        "SELECT cardinality(members) FROM groups WHERE id = %s", [grouped.id]
    ).fetchone()
    assert members == 4
    alone = rq.spread_misused.delay().get(timeout=30)
    assert alone.startswith("ChordMembershipError: ") and "not a member of a group" in alone
    in_chord = chord([rq.spread_misused.s()], rq.identity.s())().get(timeout=30)
    assert in_chord[0].startswith("ChordMembershipError: ") and "add_to_chord()" in in_chord[0]


def test_replace_misuse(rq: Any) -> None:
    with pytest.raises(RuntimeError, match="outside a worker"):
        rq.become(1, "task")
    with pytest.raises(RuntimeError, match="outside a worker"):
        rq.grow(1, 1)


def test_aget_follows_the_replacement(rq: Any, worker: Any) -> None:
    async def main() -> Any:
        result = await rq.become.adelay(1, "chain")
        return await result.aget(timeout=30)

    assert asyncio.run(main()) == 12
