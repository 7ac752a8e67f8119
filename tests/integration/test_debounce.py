"""A unique task's duplicate replaces or debounces the waiting job; a waiting
job changed in place (AsyncResult.update, update_job() in SQL). Real workers."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from jobqueue import states
from tests.conftest import wait_for


def _jobs(conn: Any, schema: str, task: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        f'SELECT id::text, args, state FROM "{schema}".all_jobs WHERE task = %s ORDER BY id',
        [task],
    ).fetchall()


def test_replace_gives_the_waiting_job_the_newest_arguments(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    first = jq.latest.apply_async((1,), countdown=1.0)
    again = [jq.latest.delay(v) for v in (2, 3, 4)]  # no countdown: the holder keeps its own
    assert {r.id for r in again} == {first.id}
    start_worker()
    assert first.get(timeout=30) == 4
    assert _jobs(conn, schema, "latest") == [(first.id, [4], states.SUCCESS)]


def test_debounce_runs_once_after_the_burst(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    start_worker()
    calls = [jq.settled.apply_async((v,), countdown=0.6) for v in range(5)]
    (last_call,) = conn.execute("SELECT now()").fetchone()
    assert len({r.id for r in calls}) == 1
    assert calls[0].get(timeout=30) == 4
    started = conn.execute(
        f'SELECT started_at FROM "{schema}".jobs WHERE id = %s', [calls[0].id]
    ).fetchone()[0]
    assert (started - last_call).total_seconds() >= 0.5  # due 0.6 s after the last call
    assert len(_jobs(conn, schema, "settled")) == 1


def test_a_running_holder_hands_the_key_to_the_duplicate(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    start_worker("--concurrency", "2")
    running = jq.latest.delay("first", 1.0)
    wait_for(lambda: running.state == states.STARTED, 20, "the holder to start")
    newer = jq.latest.delay("second")
    assert newer.id != running.id  # the running one cannot change: the newest gets its run
    assert running.get(timeout=30) == "first" and newer.get(timeout=30) == "second"


def test_update_changes_a_waiting_job(jq: Any, schema: str, conn: Any, start_worker: Any) -> None:
    start_worker()
    waiting = jq.add.apply_async((1, 2), countdown=60)  # one row in job_queue
    assert waiting.update(args=(20, 22), countdown=0, priority=5) is True
    assert waiting.get(timeout=30) == 42
    assert waiting.update(args=(1, 1)) is False  # finished: nothing changes
    recorded = jq.add.apply_async((1, 2), countdown=60, task_id=None, priority=1)
    assert recorded.update(kwargs={}, args=[3, 4]) is True
    assert conn.execute(
        f'SELECT "{schema}".update_job(%s, args => %s::jsonb, run_at => now())',
        [recorded.id, "[30, 12]"],
    ).fetchone() == (True,)
    assert recorded.get(timeout=30) == 42


def test_update_refuses_bad_input(jq: Any, conn: Any, schema: str) -> None:
    waiting = jq.add.apply_async((1, 2), countdown=60)
    with pytest.raises(ValueError, match="priority must be an integer"):
        waiting.update(priority=10**6)
    with pytest.raises(ValueError, match="countdown or eta, not both"):
        waiting.update(countdown=1, eta=datetime.now(timezone.utc))
    with pytest.raises(Exception, match="args must be a JSON array"):
        conn.execute(f"SELECT \"{schema}\".update_job(%s, args => '{{}}')", [waiting.id])
    row = conn.execute(
        f'SELECT args FROM "{schema}".job_queue WHERE job_id = %s', [waiting.id]
    ).fetchone()
    assert row == ([1, 2],)


def test_a_waiting_dependent_keeps_waiting_when_updated(jq: Any, start_worker: Any) -> None:
    gate = jq.add.apply_async((1, 1), countdown=1.0)
    dependent = jq.add.apply_async((1, 1), depends_on=[gate])
    assert dependent.update(args=(2, 3), countdown=0) is True
    start_worker()
    assert dependent.get(timeout=30) == 5
    assert dependent.date_done >= gate.date_done


def test_duplicate_modes_are_checked(jq: Any) -> None:
    with pytest.raises(ValueError, match="needs unique=True"):

        @jq.app.task(name="not_unique_but_replacing", on_duplicate="replace")
        def nope() -> None: ...

    with pytest.raises(ValueError, match="on_duplicate must be one of"):

        @jq.app.task(name="odd_mode", unique=True, on_duplicate="merge")
        def odd() -> None: ...

    with pytest.raises(ValueError, match="one at a time"):
        jq.app.enqueue_many(jq.latest, [(1,), (2,)])
