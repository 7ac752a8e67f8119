"""Celery parity, results side: ChordError as the header's own type,
AsyncResult.parent, Signature.freeze(), ResultSet. Real worker, real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from jobqueue import (
    AsyncResult,
    ChordError,
    GroupResult,
    JobQueue,
    ResultSet,
    TaskRevokedError,
    chain,
    chord,
    group,
    states,
)
from jobqueue.serialization import dump_result, loads, revive
from tests.apps import CustomError
from tests.apps_parity import PairError, build

APP = "tests.apps_parity:app"


@pytest.fixture
def pq(dsn: str, schema: str) -> Iterator[SimpleNamespace]:
    app = JobQueue(dsn, schema=schema, auto_migrate=False)
    yield build(app)
    app.close()


@pytest.fixture
def worker(start_worker: Any) -> Any:
    return start_worker("--concurrency", "4", app=APP)


def test_a_chord_error_is_also_the_header_exception_type(pq: Any, worker: Any) -> None:
    result = chord([pq.raise_value.s("bad header"), pq.add.s(1, 1)], pq.tsum.s())()
    with pytest.raises(ValueError, match=r"Dependency .* raised ValueError: bad header") as caught:
        result.get(timeout=30)
    exc = caught.value
    assert isinstance(exc, ChordError)
    assert isinstance(exc.__cause__, ValueError) and str(exc.__cause__) == "bad header"
    # The user's own exception types too, and one type per original type.
    custom = chord([pq.raise_custom.s("mine")], pq.tsum.s())()
    with pytest.raises(CustomError) as again:
        custom.get(timeout=30)
    assert isinstance(again.value, ChordError)
    second = chord([pq.raise_custom.s("again")], pq.tsum.s())()
    assert type(second.get(timeout=30, propagate=False)) is type(again.value)


def test_a_chord_error_that_cannot_be_the_header_type_has_it_as_its_cause(
    pq: Any, worker: Any
) -> None:
    result = chord([pq.raise_pair.s(7)], pq.tsum.s())()
    with pytest.raises(ChordError) as caught:
        result.get(timeout=30)
    assert not isinstance(caught.value, PairError)
    cause = caught.value.__cause__
    assert isinstance(cause, PairError) and cause.code == 7


def test_a_nested_chord_error_reaches_the_first_failure(pq: Any, worker: Any) -> None:
    inner = chord([pq.raise_value.s("deep")], pq.tsum.s())
    result = chord([inner, pq.add.s(1, 2)], pq.tsum.s())()
    with pytest.raises(ValueError, match="raised ChordError") as caught:
        result.get(timeout=30)
    assert isinstance(caught.value, ChordError)
    inner_error = caught.value.__cause__  # the inner chord's body: ChordError and ValueError
    assert isinstance(inner_error, ChordError) and isinstance(inner_error, ValueError)
    assert str(inner_error.__cause__) == "deep"


def test_a_revoked_header_job_gives_a_task_revoked_chord_error(
    pq: Any, schema: str, conn: Any
) -> None:
    # No worker: the header job waits, is revoked, and the chord fails in SQL.
    result = chord([pq.add.s(1, 1)], pq.tsum.s())()
    row = conn.execute(f"SELECT id::text FROM \"{schema}\".jobs WHERE task = 'p.add'").fetchone()
    pq.app.AsyncResult(row[0]).revoke()
    with pytest.raises(TaskRevokedError) as caught:
        result.get(timeout=30)
    assert isinstance(caught.value, ChordError)


# -- ResultSet -------------------------------------------------------------------


def test_a_result_set_waits_for_its_members(pq: Any, worker: Any) -> None:
    first, second, bad = pq.add.delay(1, 1), pq.add.delay(2, 2), pq.raise_value.delay("no")
    results = ResultSet([first, second])
    assert len(results) == 2 and list(results) == [first, second] and results[1] == second
    assert results.get(timeout=30) == [2, 4] and results.join(timeout=30) == [2, 4]
    assert results.ready() and results.successful() and not results.failed()
    assert results.completed_count() == 2
    seen: list[tuple[str, Any]] = []
    results.join(timeout=30, callback=lambda job_id, value: seen.append((job_id, value)))
    assert seen == [(first.id, 2), (second.id, 4)]

    results.add(bad)
    results.add(bad)  # a member already: once
    assert len(results) == 3
    with pytest.raises(ValueError, match="no"):
        results.get(timeout=30)
    values = results.get(timeout=30, propagate=False)
    assert values[:2] == [2, 4] and isinstance(values[2], ValueError)
    assert results.failed() and not results.successful() and results.completed_count() == 2
    results.discard(bad.id)
    results.discard(bad)  # not a member: nothing
    with pytest.raises(KeyError):
        results.remove(bad)
    assert results.successful()

    # A group's result is a ResultSet; sets nest.
    group_result = group(pq.add.s(3, 3), pq.add.s(4, 4))()
    assert isinstance(group_result, ResultSet)
    nested = ResultSet([first, group_result])
    assert nested.get(timeout=30) == [2, [6, 8]]
    assert nested.completed_count() == 3


def test_a_result_set_revokes_its_members(pq: Any) -> None:
    results = ResultSet([pq.add.delay(1, 1), pq.add.delay(2, 2)])  # no worker: they wait
    assert results.waiting() and not results.ready() and results.completed_count() == 0
    results.revoke()
    assert results.ready() and not results.successful()
    assert [r.state for r in results] == [states.REVOKED, states.REVOKED]
    assert ResultSet([], app=pq.app).get(timeout=1) == []


# -- AsyncResult.parent ------------------------------------------------------------


def test_a_chain_result_walks_back_to_its_first_step(pq: Any, worker: Any) -> None:
    result = chain(pq.add.s(1, 1), pq.add.s(10), pq.add.s(100))()
    first, second = result.parent.parent, result.parent
    assert first.parent is None
    assert result.get(timeout=30) == 112
    assert second.get(timeout=30) == 12 and first.get(timeout=30) == 2
    # Read back from the rows: the job whose completion created each step.
    stored = pq.app.AsyncResult(result.id)
    assert stored.parent == second and stored.parent.parent == first
    assert stored.parent.parent.parent is None


def test_a_chord_body_s_parent_is_its_header(pq: Any, worker: Any) -> None:
    result = (pq.add.s(1, 1) | group(pq.add.s(1), pq.add.s(2)) | pq.tsum.s())()
    header = result.parent
    assert isinstance(header, GroupResult) and len(header) == 2
    assert header.parent is not None and header.parent.parent is None
    assert result.get(timeout=30) == 7
    assert header.get(timeout=30) == [3, 4] and header.parent.get(timeout=30) == 2
    assert pq.app.AsyncResult(result.id).parent in header.results  # the last header job


# -- freeze() and ids ----------------------------------------------------------------


def test_a_frozen_signature_has_its_id_before_it_is_enqueued(pq: Any, worker: Any) -> None:
    sig = pq.add.s(2, 2)
    assert sig.id is None
    frozen = sig.freeze()
    assert sig.id == frozen.id and pq.app.store.get_job(frozen.id) is None  # nothing written
    assert sig.freeze().id == frozen.id  # frozen once
    assert sig.apply_async().id == frozen.id and frozen.get(timeout=30) == 4
    chosen = pq.add.s(3, 3)
    assert chosen.freeze(_id=frozen.id.replace(frozen.id[-4:], "abcd")).id.endswith("abcd")


def test_frozen_workflows_keep_their_ids(pq: Any, worker: Any) -> None:
    steps = chain(pq.add.s(1, 1), pq.add.s(2), pq.add.s(3))
    assert steps.id is None
    frozen = steps.freeze()
    assert steps.id == frozen.id == steps.tasks[-1].id
    assert frozen.parent is not None and frozen.parent.parent.id == steps.tasks[0].id
    applied = steps()
    assert applied.id == frozen.id and applied.parent.parent.id == steps.tasks[0].id
    assert frozen.get(timeout=30) == 7

    members = group(pq.add.s(1, 1), pq.add.s(2, 2))
    group_frozen = members.freeze()
    assert members.id == group_frozen.id and [r.id for r in group_frozen] == [
        t.id for t in members.tasks
    ]
    group_applied = members()
    assert group_applied.id == group_frozen.id
    assert [r.id for r in group_applied] == [r.id for r in group_frozen]
    restored = GroupResult.restore(members.id, app=pq.app)
    assert restored is not None and restored.get(timeout=30) == [2, 4]

    summed = chord([pq.add.s(1, 1), pq.add.s(2, 2)], pq.tsum.s())
    chord_frozen = summed.freeze()
    assert summed.id == chord_frozen.id and isinstance(chord_frozen.parent, GroupResult)
    assert summed().id == chord_frozen.id and chord_frozen.get(timeout=30) == 6


# -- a task returning results and signatures --------------------------------------------


def test_a_returned_async_result_comes_back_as_one(pq: Any, worker: Any) -> None:
    inner = pq.returns_result.delay(20).get(timeout=30)
    assert isinstance(inner, AsyncResult) and inner.app is pq.app
    assert inner.get(timeout=30) == 40
    group_result = pq.returns_group.delay().get(timeout=30)
    assert isinstance(group_result, GroupResult) and group_result.get(timeout=30) == [2, 4]
    assert GroupResult.restore(group_result.id, app=pq.app) is not None
    # A chain step and a chord body are given them revived.
    assert (pq.returns_result.s(5) | pq.describe.s())().get(timeout=30) == ["AsyncResult:10"]
    header = [pq.returns_result.s(1), pq.returns_result.s(2)]
    assert chord(header, pq.describe.s())().get(timeout=30) == [
        "AsyncResult:2",
        "AsyncResult:4",
    ]


def test_a_returned_signature_comes_back_and_is_not_run(
    pq: Any, worker: Any, schema: str, conn: Any
) -> None:
    sig = pq.returns_signature.delay().get(timeout=30)
    assert isinstance(sig, chain)
    assert [repr(t) for t in sig.tasks] == ["p.add.s(2, 2)", "p.add.s(3)"]
    assert sig.options == {"queue": "default"}
    added = conn.execute(f"SELECT count(*) FROM \"{schema}\".jobs WHERE task = 'p.add'").fetchone()
    assert added == (0,)  # returned, not run (as in Celery: only replace() would run it)
    assert sig.delay().get(timeout=30) == 7


def test_user_dicts_are_never_mistaken_for_tagged_values(pq: Any, worker: Any) -> None:
    mixed = pq.returns_mixed.delay(3).get(timeout=30)
    assert mixed["user"] == {"__jobqueue__": "result", "id": "not one of ours"}
    assert mixed["list"] == [1, {"__jobqueue__": "tagged", "value": 2}]
    assert isinstance(mixed["result"], AsyncResult) and mixed["result"].get(timeout=30) == 4
    assert pq.returns_user_tag.delay().get(timeout=30) == {
        "__jobqueue__": "tagged",
        "value": {"__jobqueue__": "result", "id": "x"},
    }


def test_every_kind_of_signature_and_result_round_trips(pq: Any) -> None:
    add, tsum = pq.add, pq.tsum
    canvas = chord(
        [add.s(1, 1), add.si(2, 2).set(priority=3)], tsum.s().on_error(add.si(0, 0))
    ) | group(add.s(1), add.s(2))
    values = {
        "canvas": canvas,
        "results": ResultSet([pq.app.AsyncResult(add.s(1, 1).freeze().id)]),
        "group": group(add.s(1, 1)).freeze(),
    }
    back = revive(loads(dump_result(values)), pq.app)
    assert repr(back["canvas"]) == repr(canvas)
    body = back["canvas"].tasks[0].body
    assert [repr(e) for e in body.options["link_error"]] == ["p.add.si(0, 0)"]
    assert back["canvas"].tasks[0].header.tasks[1].options == {"priority": 3}
    assert isinstance(back["results"], ResultSet)
    assert back["results"][0].id == values["results"][0].id
    assert isinstance(back["group"], GroupResult) and back["group"].id == values["group"].id
    assert loads(dump_result({"plain": [1, 2]})) == {"plain": [1, 2]}  # stored as it is
