"""Canvas: chains, groups, chords, map/starmap/chunks, callbacks, progress.

Expectations follow Celery's own integration tests where they exist.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from jobqueue import ChordError, GroupResult, chain, chord, group, signature, states
from tests.conftest import wait_for


@pytest.fixture
def worker(start_worker: Any) -> Any:
    return start_worker("--concurrency", "8")


def test_chains(jq: Any, worker: Any) -> None:
    add = jq.add
    assert (add.s(4, 4) | add.s(8) | add.s(16))().get(timeout=30) == 32
    assert chain(add.s(2, 2), add.s(4), add.s(8))().get(timeout=30) == 16
    assert chain(add.s(1, 1), add.si(10, 10), add.s(1)).apply_async().get(timeout=30) == 21


def test_chain_ending_in_a_group_returns_a_group_result(jq: Any, worker: Any) -> None:
    add = jq.add
    result = (add.s(5, 6) | group(add.s(1) | add.s(2), add.s(3)))()
    assert isinstance(result, GroupResult)
    assert result.get(timeout=30) == [14, 14]


def test_chord_sums_and_keeps_header_order(jq: Any, worker: Any) -> None:
    add, tsum = jq.add, jq.tsum
    assert chord(add.s(i, i) for i in range(10))(tsum.s()).get(timeout=30) == 90
    ordered = chord([jq.sleep.s(0.3), jq.identity.s("fast")], jq.identity.s())()
    assert ordered.get(timeout=30) == [0.3, "fast"]


def test_group_of_a_thousand_returns_results_in_order(jq: Any, worker: Any) -> None:
    result = group(jq.identity.s(i) for i in range(1000))()
    assert result.get(timeout=120) == list(range(1000))
    assert result.completed_count() == 1000 and result.ready() and result.successful()
    restored = GroupResult.restore(result.id, app=jq.app)
    assert restored is not None and restored.get(timeout=5) == list(range(1000))


def test_empty_chord_header_calls_the_body_with_an_empty_list(jq: Any, worker: Any) -> None:
    assert chord([], jq.tsum.s())().get(timeout=30) == 0
    assert chord([])(jq.identity.s()).get(timeout=30) == []


def test_nesting(jq: Any, worker: Any) -> None:
    add, tsum = jq.add, jq.tsum
    # chains inside a group, a chord inside a chord, chord bodies that are chains or groups
    assert group(add.s(1, 1) | add.s(1), add.s(2, 2) | add.s(2))().get(timeout=30) == [3, 6]
    inner = chord([add.s(1, 1), add.s(2, 2)], tsum.s())
    assert chord([inner, add.s(10, 10)], tsum.s())().get(timeout=30) == 26
    assert chord([add.s(1, 2), add.s(3, 4)], tsum.s() | add.s(100))().get(timeout=30) == 110
    body_group = chord([add.s(1, 1)], group(jq.identity.s(), jq.identity.s()))()
    assert body_group.get(timeout=30) == [[2], [2]]
    assert (group(add.s(1, 1), add.s(2, 2)) | tsum.s() | add.s(1))().get(timeout=30) == 7


def test_failing_chain_stops_and_marks_later_links_failed(jq: Any, worker: Any) -> None:
    c = chain(jq.add.s(1, 1), jq.fail_if.s(2), jq.add.s(100), jq.add.s(1000))
    result = c()
    with pytest.raises(ValueError, match="2 is bad"):
        result.get(timeout=30)
    assert result.state == states.FAILURE


def test_failing_chord_header_fails_the_body_once_with_chord_error(
    jq: Any, schema: str, conn: Any, worker: Any
) -> None:
    body = jq.tsum.s().on_error(jq.record_error.s("errback"))
    result = chord([jq.fail_if.s(1, 1), jq.add.s(2, 2), jq.fail_if.s(3, 3)], body)()
    with pytest.raises(ChordError, match=r"Dependency .* raised ValueError"):
        result.get(timeout=30)
    assert result.state == states.FAILURE
    errbacks = conn.execute(
        f"SELECT state, result FROM \"{schema}\".jobs WHERE task = 'record_error'"
    ).fetchall()
    assert len(errbacks) == 1  # two header jobs failed; the body's errback ran once
    wait_for(
        lambda: (
            conn.execute(
                f"SELECT state FROM \"{schema}\".jobs WHERE task = 'record_error'"
            ).fetchone()
            == (states.SUCCESS,)
        ),
        30,
        "the error callback to run",
    )
    runs = conn.execute(
        f"SELECT count(*) FROM \"{schema}\".jobs WHERE task = 'tsum' AND started_at IS NOT NULL"
    ).fetchone()
    assert runs == (0,)  # the body never ran


def test_link_and_link_error_on_apply_async(jq: Any, worker: Any) -> None:
    parent = jq.add.apply_async((2, 3), link=jq.mul.s(10))
    assert parent.get(timeout=30) == 5
    wait_for(lambda: parent.children, 30, "the callback to be created")
    [child] = parent.children
    assert child.get(timeout=30) == 50
    failing = jq.fail_if.apply_async((7, 7), link_error=jq.record_error.s("oops"))
    with pytest.raises(ValueError):
        failing.get(timeout=30)
    wait_for(lambda: failing.children, 30, "the error callback to be created")
    assert failing.children[0].get(timeout=30) == f"oops: {failing.id}"


def test_rolled_back_canvas_leaves_no_rows(jq: Any, dsn: str, schema: str, conn: Any) -> None:
    c = chord([jq.add.s(i, i) for i in range(5)], jq.tsum.s()) | jq.add.s(1)
    with psycopg.connect(dsn) as tx:
        c.apply_async(connection=tx)
        group(jq.add.s(1, 1), jq.add.s(2, 2)).apply_async(connection=tx)
        tx.rollback()
    counts = conn.execute(
        f'SELECT (SELECT count(*) FROM "{schema}".all_jobs),'
        f' (SELECT count(*) FROM "{schema}".chords),'
        f' (SELECT count(*) FROM "{schema}".groups), '
        f'(SELECT count(*) FROM "{schema}".chord_members)'
    ).fetchone()
    assert counts == (0, 0, 0, 0)


def test_map_starmap_and_chunks(jq: Any, worker: Any) -> None:
    assert jq.tsum.map([[1, 2], [3, 4]]).delay().get(timeout=30) == [3, 7]
    assert jq.add.starmap(zip(range(10), range(10), strict=True)).delay().get(timeout=30) == [
        0,
        2,
        4,
        6,
        8,
        10,
        12,
        14,
        16,
        18,
    ]
    chunked = jq.add.chunks(zip(range(10), range(10), strict=True), 3).group()
    assert chunked().get(timeout=30) == [[0, 2, 4], [6, 8, 10], [12, 14, 16], [18]]


def test_signatures_partial_application_and_options(jq: Any) -> None:
    sig = jq.add.s(2)
    assert sig.clone((1,)).args == (1, 2)  # new args are prepended, as in Celery
    assert jq.add.si(1, 2).clone((5,)).args == (1, 2)  # immutable
    assert sig.set(queue="q", priority=3).options == {"queue": "q", "priority": 3}
    assert signature("add", (1, 2)).task_name == "add"
    assert jq.add.s(1, 2)() == 3  # calling a task signature runs it here, as in Celery
    with pytest.raises(TypeError, match="not JSON serializable"):
        chain(jq.add.s(1, 1), jq.add.s(object())).apply_async()


def test_workflow_is_traceable_in_sql(jq: Any, schema: str, conn: Any, worker: Any) -> None:
    result = (jq.add.s(1, 1) | group(jq.add.s(1), jq.add.s(2)) | jq.tsum.s())()
    assert result.get(timeout=30) == 7
    rows = conn.execute(
        f'SELECT task, state, group_id IS NOT NULL, root_id FROM "{schema}".workflow_jobs '
        f'WHERE root_id = (SELECT root_id FROM "{schema}".jobs WHERE id = %s) '
        "ORDER BY created_at, group_index",
        (result.id,),
    ).fetchall()
    assert [(t, s, g) for t, s, g, _ in rows] == [
        ("add", "SUCCESS", False),
        ("add", "SUCCESS", True),
        ("add", "SUCCESS", True),
        ("tsum", "SUCCESS", False),
    ]


def test_progress_is_visible_while_running(jq: Any, worker: Any) -> None:
    result = jq.progress.delay(10)
    wait_for(lambda: result.state == "PROGRESS", 30, "a PROGRESS state")
    assert result.info["total"] == 10 and 0 <= result.info["done"] < 10
    assert result.get(timeout=30) == 10
    assert result.state == states.SUCCESS and result.info == 10


def test_group_revoke(jq: Any) -> None:
    result = group(jq.add.s(i, i) for i in range(3)).apply_async(countdown=60)
    result.revoke()
    with pytest.raises(Exception, match="revoked"):
        result.get(timeout=5)
    assert not result.successful() and result.ready()


def test_big_chord_runs_its_body_exactly_once_even_when_a_worker_is_killed(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    import signal

    lease = (
        "--concurrency",
        "4",
        "--lease-ttl",
        "2",
        "--heartbeat-interval",
        "0.5",
        "--loglevel",
        "warning",
    )
    workers = [start_worker(*lease) for _ in range(4)]
    size = 2000
    result = chord([jq.sleep.s(0.005) for _ in range(size)], jq.tsum.s()).apply_async()
    done = f"SELECT count(*) FROM \"{schema}\".jobs WHERE task = 'sleep' AND state = 'SUCCESS'"
    wait_for(lambda: conn.execute(done).fetchone()[0] >= size // 4, 120, "a quarter done")
    workers[0].proc.send_signal(signal.SIGKILL)  # with jobs in hand
    assert result.get(timeout=180) == pytest.approx(size * 0.005)
    bodies = conn.execute(
        f"SELECT count(*), sum(attempts) FROM \"{schema}\".jobs WHERE task = 'tsum'"
    ).fetchone()
    chord_row = conn.execute(f'SELECT state, remaining FROM "{schema}".chords').fetchone()
    reruns = conn.execute(
        f"SELECT count(*) FROM \"{schema}\".jobs WHERE task = 'sleep' AND attempts > 1"
    ).fetchone()
    print(
        f"\nchord of {size} on 4 workers, one killed: body jobs {bodies[0]}, "
        f"body runs {bodies[1]}, header jobs re-run after the kill {reruns[0]}"
    )
    assert bodies == (1, 1) and chord_row == ("DONE", 0)


def test_groups_in_member_positions_report_one_result(jq: Any, worker: Any) -> None:
    add, identity = jq.add, jq.identity
    kept = group(add.s(1, 1), add.s(2, 2), priority=1)  # options: not flattened
    assert chord([kept, add.s(3, 3)], identity.s())().get(timeout=30) == [[2, 4], 6]
    ending = add.s(1, 1) | group(add.s(1), add.s(2))
    assert chord([ending], identity.s())().get(timeout=30) == [[3, 4]]


def test_chain_errback_receives_the_failed_steps_id(
    jq: Any, schema: str, conn: Any, worker: Any
) -> None:
    c = chain(jq.add.s(1, 1), jq.fail_if.s(2), jq.add.s(1)).on_error(jq.record_error.s("chain"))
    result = c()
    with pytest.raises(ValueError):
        result.get(timeout=30)
    failed = conn.execute(f"SELECT id FROM \"{schema}\".jobs WHERE task = 'fail_if'").fetchone()
    wait_for(
        lambda: conn.execute(
            f"SELECT result FROM \"{schema}\".jobs WHERE task = 'record_error' "
            "AND state = 'SUCCESS'"
        ).fetchone(),
        30,
        "the chain's error callback",
    )
    row = conn.execute(f"SELECT result FROM \"{schema}\".jobs WHERE task = 'record_error'")
    assert row.fetchall() == [(f"chain: {failed[0]}",)]


def test_canvas_options_apply_to_every_step(jq: Any, schema: str, conn: Any) -> None:
    group(jq.add.s(1, 1), jq.add.s(2, 2)).apply_async(countdown=60, queue="later")
    rows = conn.execute(
        f"SELECT queue, run_at > now() + interval '50 seconds' FROM \"{schema}\".jobs"
    ).fetchall()
    assert rows == [("later", True), ("later", True)]
    with pytest.raises(ValueError, match="countdown or eta"):
        from datetime import datetime

        jq.add.s(1, 1).apply_async(countdown=1, eta=datetime.now())
    with pytest.raises(ValueError, match="priority"):
        chain(jq.add.s(1, 1), jq.add.s(1).set(priority="high")).apply_async()


def test_a_group_errback_inside_a_chord_header_fires_once(
    jq: Any, schema: str, conn: Any, worker: Any
) -> None:
    inner = group(jq.fail_if.s(1, 1), jq.add.s(1, 1)).on_error(jq.record_error.s("group"))
    result = chord([inner, jq.add.s(2, 2)], jq.identity.s())()
    with pytest.raises(ChordError):
        result.get(timeout=30)
    wait_for(
        lambda: (
            conn.execute(
                f"SELECT count(*) FROM \"{schema}\".jobs WHERE task = 'record_error' "
                "AND state = 'SUCCESS'"
            ).fetchone()[0]
            >= 1
        ),
        30,
        "the error callback",
    )
    count = conn.execute(f"SELECT count(*) FROM \"{schema}\".jobs WHERE task = 'record_error'")
    assert count.fetchone() == (1,)
