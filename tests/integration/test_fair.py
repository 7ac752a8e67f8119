"""Fair scheduling: jobs with a fair key are claimed round-robin across keys
(job_claim_fair), weighted by fair_weights; keys survive retries, bulk
enqueue and canvas steps. Real workers."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from jobqueue import chain, states
from jobqueue.worker.fairness import FairTurn
from tests.conftest import unsettled, wait_for


def _started_order(conn: Any, schema: str) -> list[str]:
    rows = conn.execute(
        f'SELECT args ->> 0 FROM "{schema}".jobs WHERE task = %s AND started_at IS NOT NULL '
        "ORDER BY started_at, id",
        ["tenant_work"],
    ).fetchall()
    return [row[0] for row in rows]


def test_a_backlog_of_one_key_does_not_hold_up_the_others(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    jq.app.enqueue_many(jq.tenant_work, [("big", i) for i in range(300)])
    small = [jq.tenant_work.delay(f"small{i}", i) for i in range(5)]  # enqueued after
    start_worker("--concurrency", "1", "--prefetch-multiplier", "1")
    for result in small:
        assert result.get(timeout=60).startswith("small")
    order = _started_order(conn, schema)
    # Round-robin: the small keys' jobs go within the first rounds, not after
    # the 300 jobs ahead of them in claim order.
    assert max(order.index(f"small{i}") for i in range(5)) < 12, order[:20]
    wait_for(lambda: unsettled(conn, schema) == 0, 60, "the backlog to drain")
    counts = conn.execute(
        f'SELECT count(*), count(DISTINCT id), min(attempts), max(attempts) FROM "{schema}".jobs '
        "WHERE state = 'SUCCESS'"
    ).fetchone()
    assert counts == (305, 305, 1, 1)


def test_without_keys_the_claim_order_is_unchanged(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    jq.app.enqueue_many(jq.add, [(i, 0) for i in range(50)])
    last = jq.add.delay(100, 0)
    start_worker("--concurrency", "1", "--prefetch-multiplier", "1")
    assert last.get(timeout=60) == 100
    (late,) = conn.execute(
        f'SELECT count(*) FROM "{schema}".jobs WHERE task = %s AND started_at > '
        f'(SELECT started_at FROM "{schema}".jobs WHERE id = %s)',
        ["add", last.id],
    ).fetchone()
    assert late == 0  # enqueued last, run last: plain claim order


def test_weights_give_a_key_more_jobs_a_round(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    assert conn.execute(f'SELECT "{schema}".set_fair_weight(%s, 3)', ["heavy"]).fetchone() == (3,)
    jq.app.enqueue_many(jq.tenant_work, [("heavy", i) for i in range(40)])
    jq.app.enqueue_many(jq.tenant_work, [("light", i) for i in range(40)])
    rows = conn.execute(f'SELECT * FROM "{schema}".fair_keys ORDER BY fair_key').fetchall()
    assert [(r[1], r[2], r[5]) for r in rows] == [("heavy", 40, 3), ("light", 40, 1)]
    start_worker("--concurrency", "1", "--prefetch-multiplier", "1")
    wait_for(lambda: unsettled(conn, schema) == 0, 60, "the jobs to run")
    first = _started_order(conn, schema)[:40]
    heavy = first.count("heavy")
    assert 26 <= heavy <= 34, first  # 3 of every 4: 30
    # Weight 1 removes the row.
    conn.execute(f'SELECT "{schema}".set_fair_weight(%s, 1)', ["heavy"])
    assert conn.execute(f'SELECT count(*) FROM "{schema}".fair_weights').fetchone() == (0,)


@pytest.mark.parametrize(
    ("key", "weight", "message"),
    [
        ("", 2, "name a fair key"),
        (None, 2, "name a fair key"),
        ("k", 0, "1 to 1000"),
        ("k", 1001, "1 to 1000"),
        ("k", None, "1 to 1000"),
    ],
)
def test_set_fair_weight_refuses_bad_input(
    conn: Any, schema: str, key: Any, weight: Any, message: str
) -> None:
    with pytest.raises(psycopg.Error, match=message) as caught:
        conn.execute(f'SELECT "{schema}".set_fair_weight(%s, %s::int)', [key, weight])
    assert caught.value.sqlstate == "JQ002"


def test_keys_come_from_the_task_the_call_bulk_and_canvas(jq: Any, schema: str, conn: Any) -> None:
    def key_of(job_id: str) -> Any:
        row = conn.execute(
            f'SELECT fair_key FROM "{schema}".job_queue WHERE job_id = %s', [job_id]
        ).fetchone()
        return row[0] if row else "(not waiting)"

    assert key_of(jq.tenant_work.delay("acme").id) == "acme"
    assert key_of(jq.tenant_work.apply_async(("acme",), fair_key="other").id) == "other"
    assert key_of(jq.add.apply_async((1, 2), fair_key=7).id) == "7"  # ints as text
    assert key_of(jq.add.delay(1, 2).id) is None
    bulk = jq.app.enqueue_many(jq.tenant_work, [("b1",), ("b2",)])
    assert [key_of(r.id) for r in bulk] == ["b1", "b2"]
    # A canvas step is written by spawn() in SQL, from its stored options.
    steps = chain(jq.tenant_work.s("c1"), jq.tenant_work.si("c2")).apply_async()
    first_step = steps.parent.id if steps.parent is not None else steps.id
    assert key_of(first_step) == "c1"


def test_bad_keys_are_refused_at_the_producer(jq: Any, schema: str, conn: Any) -> None:
    with pytest.raises(ValueError, match="1 to 200 characters"):
        jq.tenant_work.delay("")
    with pytest.raises(TypeError, match="must give a string"):
        jq.tenant_work.delay(["a", "list"])
    with pytest.raises(ValueError, match="1 to 200 characters"):
        jq.add.apply_async((1, 2), fair_key="x" * 201)
    assert conn.execute(f'SELECT count(*) FROM "{schema}".all_jobs').fetchone() == (0,)


def test_a_retry_keeps_the_key(jq: Any, schema: str, conn: Any, start_worker: Any) -> None:
    result = jq.tenant_flaky.delay("acme")
    start_worker()
    waiting = wait_for(
        lambda: conn.execute(
            f'SELECT q.fair_key FROM "{schema}".job_queue AS q '
            f'JOIN "{schema}".jobs AS j ON j.id = q.job_id '
            "WHERE q.job_id = %s AND j.state = 'RETRY'",
            [result.id],
        ).fetchone(),
        30,
        "the retry to wait in the queue",
    )
    assert waiting == ("acme",)
    assert result.get(timeout=30) == 1
    assert result.state == states.SUCCESS


def test_the_turn_walks_keys_down_and_wraps() -> None:
    turn = FairTurn()
    turn.claimed([(None, None), (None, None)])
    assert turn.start is None  # plain order
    turn.claimed([("d", None), (None, None), ("c", None)])  # from the top: d, then c
    assert turn.start == "c"
    turn.claimed([("b", None), ("a", None)])
    assert turn.start == "a"
    turn.claimed([("b", None), ("e", None)])  # none below a: from the top, e then b
    assert turn.start == "b"
    turn.claimed([])
    assert turn.start is None


def test_a_weighted_key_keeps_its_turn_for_its_weight() -> None:
    turn = FairTurn()
    served = []
    keys = ["heavy", "light"]  # visited downwards: light, then heavy
    for _ in range(8):  # one job a claim: the greatest key below start, else the top
        start = turn.start or ""
        below = [k for k in keys if k < start]
        key = max(below) if below else max(keys)
        served.append(key)
        turn.claimed([(key, 3 if key == "heavy" else None)])
    assert served == ["light"] + ["heavy"] * 3 + ["light"] + ["heavy"] * 3


def test_weights_and_keys_from_python_and_the_cli(jq: Any, schema: str, dsn: str) -> None:
    from tests.integration.test_operations import jobqueue

    jq.app.enqueue_many(jq.tenant_work, [("acme", i) for i in range(3)])
    jq.tenant_work.apply_async(("beta",), countdown=600)
    assert jq.app.control.set_fair_weight("acme", 4) == 4
    keys = {k.fair_key: k for k in jq.app.control.fair_keys()}
    assert (keys["acme"].waiting, keys["acme"].due, keys["acme"].weight) == (3, 3, 4)
    assert (keys["beta"].waiting, keys["beta"].due, keys["beta"].oldest_due_wait) == (1, 0, None)
    with pytest.raises(ValueError, match="1 to 1000"):
        jq.app.control.set_fair_weight("acme", 0)
    with pytest.raises(ValueError, match="1 to 200 characters"):
        jq.app.control.set_fair_weight("", 2)

    done = jobqueue(dsn, schema, "queue", "weight", "beta", "2", "--json")
    assert done.returncode == 0, done
    assert json.loads(done.stdout) == {"fair_key": "beta", "weight": 2}
    done = jobqueue(dsn, schema, "queue", "fair", "--json")
    assert done.returncode == 0, done
    listed = {row["fair_key"]: (row["waiting"], row["weight"]) for row in json.loads(done.stdout)}
    assert listed == {"acme": (3, 4), "beta": (1, 2)}
    refused = jobqueue(dsn, schema, "queue", "weight", "beta", "0")
    assert refused.returncode == 2 and "1<=x<=1000" in refused.stderr


def test_the_fair_claim_reports_started_events_to_a_listener(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    """The fair claim comes in the two forms of the claim: without events
    until a listener comes (it refuses, and the claim is run again with its
    events), then with them."""
    results = jq.app.enqueue_many(
        jq.tenant_work, [{"tenant": f"t{i % 3}", "n": i, "pause": 0.05} for i in range(40)]
    )
    start_worker("--concurrency", "1", "--prefetch-multiplier", "1")
    wait_for(lambda: results[3].state == states.SUCCESS, 30, "the fair claims to go on")
    with jq.app.events.stream(types=["task-started"], timeout=30) as stream:
        started = {next(stream)["uuid"] for _ in range(5)}
    assert started <= {r.id for r in results[4:]}
    assert [r.get(timeout=30) for r in results] == [f"t{i % 3}:{i}" for i in range(40)]
