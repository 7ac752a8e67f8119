"""The operations functions (revision 0013) driven from plain SQL, against real
worker processes: pause and resume, purge under load, bulk retry, cancel,
delete, move, find_jobs pages, chord header retry, bad input."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from jobqueue import chord, states
from jobqueue.ids import new_id
from jobqueue.sql import load, queries
from tests.conftest import wait_for


def _one(conn: Any, query: str, *params: Any) -> Any:
    row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def _loop(conn: Any, call: str, *params: Any) -> tuple[int, int]:
    """Call a bulk function until it returns 0: (total, calls)."""
    total = calls = 0
    while True:
        n = _one(conn, f"SELECT {call}", *params)
        calls += 1
        if n == 0:
            return total, calls
        total += n


def _states(conn: Any, schema: str, ids: list[str]) -> dict[str, int]:
    rows = conn.execute(
        f'SELECT state, count(*) FROM "{schema}".all_jobs WHERE id = ANY(%s::uuid[]) GROUP BY 1',
        (ids,),
    ).fetchall()
    return dict(rows)


def test_a_paused_queue_is_not_claimed_and_resume_drains_it_at_once(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    s = f'"{schema}"'
    assert _one(conn, f"SELECT {s}.pause_queue('alpha', 'deploy')") is True
    assert _one(conn, f"SELECT {s}.pause_queue('alpha')") is False  # already
    # Polls every 60 s: only resume's NOTIFY can wake it in time.
    start_worker("--queues", "alpha,beta", "--concurrency", "4", "--poll-interval", "60")
    alpha = [jq.add.apply_async((i, i), queue="alpha").id for i in range(50)]
    beta = [jq.add.apply_async((i, i), queue="beta").id for i in range(50)]
    wait_for(lambda: _states(conn, schema, beta) == {states.SUCCESS: 50}, 30, "beta to drain")
    assert _states(conn, schema, alpha) == {states.PENDING: 50}  # jobs kept arriving, unclaimed
    stats = dict(conn.execute(f"SELECT queue, paused FROM {s}.queue_stats").fetchall())
    assert stats == {"alpha": True, "beta": False}
    paused_at = conn.execute(f"SELECT reason FROM {s}.queue_pauses").fetchall()
    assert paused_at == [("deploy",)]

    started = time.monotonic()
    assert _one(conn, f"SELECT {s}.resume_queue('alpha')") is True
    wait_for(lambda: _states(conn, schema, alpha) == {states.SUCCESS: 50}, 10, "alpha to drain")
    assert time.monotonic() - started < 10  # woken, not polled (60 s)
    assert _one(conn, f"SELECT {s}.resume_queue('alpha')") is False
    # A paused queue with no job still shows.
    conn.execute(f"SELECT {s}.pause_queue('empty')")
    row = conn.execute(f"SELECT pending, paused FROM {s}.queue_stats WHERE queue = 'empty'")
    assert row.fetchone() == (0, True)


def test_a_worker_of_0012_still_claims_from_a_paused_queue(jq: Any, schema: str, conn: Any) -> None:
    """What 0013's docstring warns of: the pause is in the new claim only."""
    frozen = Path(__file__).parents[1] / "migrations" / "releases" / "0012.sql"
    old = load(frozen.read_text(), schema)
    conn.execute(f"SELECT \"{schema}\".pause_queue('default')")
    job = jq.add.delay(1, 2)
    params = {"queues": ["default"], "limit": 10, "worker_id": new_id(), "skip_tasks": []}
    assert conn.execute(queries(schema)["job_claim"], {**params, "revision": 13}).fetchall() == []
    [row] = conn.execute(old["job_claim"], {**params, "revision": 12}).fetchall()
    assert row[0] == job.id


def test_purge_under_load_revokes_every_waiting_job_and_leaves_the_worker_alone(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    s = f'"{schema}"'
    start_worker("--queues", "default,other", "--concurrency", "4")
    # Waiting both ways: in one row (single enqueues) and with a record (bulk).
    single = [jq.add.delay(i, 1).id for i in range(500)]
    bulk = [r.id for r in jq.app.enqueue_many(jq.add, [(i, 2) for i in range(4_500)])]
    later = jq.add.apply_async((1, 1), countdown=3600).id  # scheduled: purged too
    other = [jq.add.apply_async((i, 3), queue="other").id for i in range(200)]
    ids = [*single, *bulk, later]
    purged, calls = _loop(conn, f"{s}.purge_queue('default', 1000)")
    assert calls >= 2
    # The purge skips rows a claim holds (they are being started, not waiting):
    # such a claim may commit after the purge's last call, so "no lease left"
    # is not yet "nothing running" (CI saw 477 jobs STARTED after it). Wait for
    # every job to end instead; none may be left waiting.
    wait_for(
        lambda: set(_states(conn, schema, ids)) <= {states.SUCCESS, states.REVOKED},
        30,
        "every job to end",
    )
    counts = _states(conn, schema, ids)
    assert states.PENDING not in counts and states.STARTED not in counts
    assert counts[states.REVOKED] == purged  # the count returned is what ended REVOKED
    assert counts.get(states.SUCCESS, 0) + purged == len(ids)
    message = _one(
        conn,
        f"SELECT error ->> 'message' FROM {s}.jobs WHERE id = %s::uuid AND state = 'REVOKED'",
        later,
    )
    assert message == "purged from queue default"
    wait_for(lambda: _states(conn, schema, other) == {states.SUCCESS: 200}, 30, "other queue")
    assert jq.add.delay(20, 22).get(timeout=30) == 42  # the worker goes on
    assert _one(conn, f"SELECT {s}.purge_queue()") == 0


def test_a_thousand_failures_retried_in_bulk_each_run_once_more(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    s = f'"{schema}"'
    start_worker("--concurrency", "8")
    ids = [r.id for r in jq.app.enqueue_many(jq.boom, [("first",)] * 1_000)]
    ok = jq.add.delay(1, 1)
    wait_for(lambda: _states(conn, schema, ids) == {states.FAILURE: 1_000}, 60, "the failures")
    assert ok.get(timeout=10) == 2
    # Bounded by the moment it started: the retried jobs fail again meanwhile.
    since = _one(conn, "SELECT now()")
    retried, calls = _loop(
        conn,
        f"{s}.retry_jobs(task => 'boom', exception => 'CustomError', "
        "finished_before => %s, max_jobs => 300)",
        since,
    )
    assert (retried, calls) == (1_000, 5)
    assert _one(conn, f"SELECT {s}.retry_jobs(state => 'FAILURE', task => 'add')") == 0
    wait_for(
        lambda: (
            _one(
                conn,
                f"SELECT count(*) FROM {s}.jobs WHERE id = ANY(%s::uuid[]) "
                "AND state = 'FAILURE' AND attempts = 2",
                ids,
            )
            == 1_000
        ),
        60,
        "each to fail once more",
    )
    history = conn.execute(
        f"SELECT attempt, state, error_type, count(*) FROM {s}.job_history "
        "WHERE job_id = ANY(%s::uuid[]) GROUP BY 1, 2, 3 ORDER BY 1",
        (ids,),
    ).fetchall()
    assert history == [(1, "FAILURE", "CustomError", 1_000), (2, "FAILURE", "CustomError", 1_000)]


def test_retry_with_reset_retries_gives_fresh_retries(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    s = f'"{schema}"'
    start_worker("--concurrency", "2")
    job = jq.hopeless.delay()  # max_retries=2: three attempts, then FAILURE
    wait_for(lambda: job.state == states.FAILURE, 30, "hopeless to fail")
    assert _one(conn, f"SELECT attempts FROM {s}.jobs WHERE id = %s::uuid", job.id) == 3
    call = f"SELECT {s}.retry_jobs(ids => %s::uuid[], reset_retries => true)"
    assert _one(conn, call, [job.id]) == 1
    wait_for(lambda: _states(conn, schema, [job.id]) == {states.FAILURE: 1}, 30, "3 more attempts")
    assert _one(conn, f"SELECT attempts FROM {s}.jobs WHERE id = %s::uuid", job.id) == 6
    assert _one(conn, f"SELECT count(*) FROM {s}.job_history WHERE job_id = %s::uuid", job.id) == 6


def test_cancel_revokes_waiting_jobs_and_terminates_a_running_one(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    s = f'"{schema}"'
    start_worker("--concurrency", "1")
    running = jq.sleep.delay(60)
    wait_for(lambda: running.state == states.STARTED, 30, "the job to start")
    waiting = [jq.add.apply_async((i, i), countdown=600).id for i in range(30)]
    assert _one(conn, f"SELECT {s}.cancel_jobs(state => 'PENDING', task => 'add')") == 30
    assert _states(conn, schema, waiting) == {states.REVOKED: 30}
    call = f"SELECT {s}.cancel_jobs(ids => %s::uuid[], terminate => true)"
    assert _one(conn, call, [running.id]) == 1
    assert _one(conn, call, [running.id]) == 0  # marked: a loop until 0 ends
    wait_for(lambda: running.state == states.REVOKED, 30, "the worker to terminate it")
    assert jq.add.delay(2, 3).get(timeout=30) == 5


def test_delete_removes_finished_jobs_and_their_attempts_only(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    s = f'"{schema}"'
    start_worker("--concurrency", "4")
    done = [jq.add.delay(i, i) for i in range(20)]
    failed = [jq.boom.delay("x") for _ in range(5)]
    for r in done:
        r.get(timeout=30)
    wait_for(lambda: all(f.state == states.FAILURE for f in failed), 30, "failures")
    waiting = jq.add.apply_async((1, 1), countdown=600)
    with pytest.raises(psycopg.Error) as refused:
        conn.execute(f"SELECT {s}.delete_jobs(state => 'PENDING')")
    assert refused.value.sqlstate == "JQ003"
    assert _one(conn, f"SELECT {s}.delete_jobs(state => 'FAILURE')") == 5
    assert _one(conn, f"SELECT count(*) FROM {s}.job_attempts") == 0
    assert _loop(conn, f"{s}.delete_jobs(max_jobs => 7)") == (20, 4)
    assert _one(conn, f"SELECT count(*) FROM {s}.all_jobs") == 1
    assert waiting.state == states.PENDING
    stats = conn.execute(f"SELECT success, failure FROM {s}.queue_stats").fetchall()
    assert stats == [(0, 0)]  # the counters follow


def test_move_reroutes_reprioritises_and_reschedules_waiting_jobs(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    s = f'"{schema}"'
    parked = [jq.add.apply_async((i, 1), queue="parked", countdown=600).id for i in range(10)]
    batch = jq.app.enqueue_many(jq.add, [(i, 2) for i in range(10)], queue="parked")
    recorded = [r.id for r in batch]
    start_worker("--queues", "default", "--poll-interval", "60")
    moved = _one(
        conn,
        f"SELECT {s}.move_jobs(queue => 'parked', to_queue => 'default', to_priority => 5, "
        "to_eta => now())",
    )
    assert moved == 20
    ids = parked + recorded
    wait_for(lambda: _states(conn, schema, ids) == {states.SUCCESS: 20}, 30, "moved jobs to run")
    rows = conn.execute(
        f"SELECT DISTINCT queue, priority FROM {s}.jobs WHERE id = ANY(%s::uuid[])", (ids,)
    ).fetchall()
    assert rows == [("default", 5)]
    with pytest.raises(psycopg.Error) as bad:
        conn.execute(f"SELECT {s}.move_jobs(queue => 'default')")
    assert bad.value.sqlstate == "JQ002"


def test_find_jobs_pages_by_id(jq: Any, schema: str, conn: Any) -> None:
    s = f'"{schema}"'
    single = [jq.add.delay(i, i).id for i in range(13)]  # in job_queue only
    bulk = [r.id for r in jq.app.enqueue_many(jq.add, [(i, i) for i in range(12)])]
    seen: list[str] = []
    after = None
    while True:
        page = conn.execute(
            f"SELECT id::text, state FROM {s}.find_jobs(task => 'add', max_jobs => 10, "
            "after => %s::uuid)",
            (after,),
        ).fetchall()
        if not page:
            break
        assert len(page) <= 10 and {state for _, state in page} == {states.PENDING}
        seen += [job_id for job_id, _ in page]
        after = page[-1][0]
    assert seen == sorted(single + bulk)
    assert _one(conn, f"SELECT count(*) FROM {s}.find_jobs(state => 'SUCCESS')") == 0
    assert _one(conn, f"SELECT count(*) FROM {s}.find_jobs(ids => %s::uuid[])", single[:3]) == 3


def test_a_retried_chord_member_that_succeeds_runs_the_body_once(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    """The chord failed with its member, and its body was failed unrun: the
    retry reopens the chord, and the member's success runs the body once."""
    s = f'"{schema}"'
    table = f"{schema}.ran"
    start_worker("--concurrency", "4")
    result = chord([jq.add.s(1, 1), jq.note_run.s(table, "a"), jq.note_run.s(table, "b")])(
        jq.echo.s()
    )
    members = [
        row[0]
        for row in conn.execute(
            f"SELECT id::text FROM {s}.jobs WHERE task = 'note_run' ORDER BY group_index"
        ).fetchall()
    ]
    wait_for(lambda: _states(conn, schema, members) == {states.FAILURE: 2}, 30, "members fail")
    wait_for(lambda: result.state == states.FAILURE, 30, "the body to be failed")
    body = result.id
    assert _one(conn, f"SELECT error ->> 'type' FROM {s}.jobs WHERE id = %s::uuid", body) == (
        "ChordError"
    )
    # Retrying the body itself is not how: it never ran (retry the member).
    assert _one(conn, f"SELECT {s}.retry_jobs(ids => %s::uuid[])", [body]) == 0

    conn.execute(f'CREATE TABLE "{schema}".ran (key text)')
    assert _one(conn, f"SELECT {s}.retry_jobs(ids => %s::uuid[])", members[:1]) == 1
    wait_for(lambda: _states(conn, schema, members[:1]) == {states.SUCCESS: 1}, 30, "member a")
    # Member b is still failed: the reopened chord waits for it.
    assert _one(conn, f"SELECT state || remaining FROM {s}.chords") == "PENDING1"
    assert _one(conn, f"SELECT count(*) FROM {s}.all_jobs WHERE id = %s::uuid", body) == 0
    assert _one(conn, f"SELECT {s}.retry_jobs(ids => %s::uuid[])", members[1:]) == 1
    wait_for(lambda: _states(conn, schema, [body]) == {states.SUCCESS: 1}, 30, "the body to run")
    assert _one(conn, f"SELECT result FROM {s}.jobs WHERE id = %s::uuid", body) == {
        "args": [[2, "a", "b"]],
        "kwargs": {},
    }
    assert _one(conn, f"SELECT attempts FROM {s}.jobs WHERE id = %s::uuid", body) == 1
    assert _one(conn, f"SELECT state FROM {s}.chords") == "DONE"
    assert _one(conn, f"SELECT count(*) FROM {s}.job_history WHERE job_id = %s::uuid", body) == 1


def test_bad_input_raises_its_own_sqlstate(schema: str, conn: Any) -> None:
    s = f'"{schema}"'
    for call, code in (
        ("find_jobs(state => 'DONE')", "JQ002"),
        ("retry_jobs(state => 'SUCCESS')", "JQ003"),
        ("cancel_jobs(state => 'FAILURE')", "JQ003"),
        ("purge_queue('default', -1)", "JQ002"),
        ("pause_queue('')", "JQ002"),
        ("resume_queue(NULL)", "JQ002"),
        ("move_jobs(to_queue => '')", "JQ002"),
        ("delete_jobs(queue => '')", "JQ002"),
    ):
        with pytest.raises(psycopg.Error) as raised:
            conn.execute(f"SELECT {s}.{call}")
        assert raised.value.sqlstate == code, call
