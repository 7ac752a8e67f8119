"""Celery parity, results side: ChordError as the header's own type,
AsyncResult.parent, Signature.freeze(), ResultSet. Real worker, real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from jobqueue import ChordError, JobQueue, ResultSet, TaskRevokedError, chord, group, states
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
