"""The claim and completion statements themselves, driven directly."""

from __future__ import annotations

import itertools
import json
import re
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from jobqueue import migrate, states
from jobqueue.ids import new_id
from jobqueue.sql import queries
from jobqueue.worker.outcome import Outcome, outcome_params
from tests.conftest import wait_for

REVISION = int(migrate.head_revision())  # what a worker of this code passes to job_claim


def _claim(conn: Any, schema: str, worker: str, limit: int = 10) -> list[tuple[Any, ...]]:
    rows = conn.execute(
        queries(schema)["job_claim"],
        {
            "queues": ["default"],
            "limit": limit,
            "worker_id": worker,
            "revision": REVISION,
            "skip_tasks": [],
        },
    ).fetchall()
    return [r for r in rows if r[1] is not None]


def _complete(conn: Any, schema: str, worker: str, job_id: str, attempt: int, value: Any) -> int:
    outcome = Outcome(job_id, attempt, states.SUCCESS, result=json.dumps(value))
    row = conn.execute(
        queries(schema)["job_complete_many"], outcome_params([outcome], worker)
    ).fetchone()
    return int(row[0])


def test_a_stale_completion_changes_nothing(jq: Any, schema: str, conn: Any) -> None:
    result = jq.add.delay(1, 2)
    first, second = new_id(), new_id()
    [(job_id, *_rest)] = _claim(conn, schema, first)
    # The first worker is presumed gone: its job goes back and a second worker takes it.
    conn.execute(queries(schema)["job_release_many"], {"ids": [job_id], "worker_id": first})
    [(again, *_)] = _claim(conn, schema, second)
    assert again == job_id
    assert _complete(conn, schema, first, str(job_id), 1, "late") == 0
    assert result.state == states.STARTED
    assert _complete(conn, schema, second, str(job_id), 1, 3) == 1
    assert _complete(conn, schema, second, str(job_id), 1, "duplicate") == 0
    assert result.get(timeout=1) == 3


def test_an_earlier_attempts_outcome_leaves_the_next_attempts_lease(
    jq: Any, schema: str, conn: Any
) -> None:
    """The same worker runs attempt 1, which retries, then attempt 2: a
    duplicate of attempt 1's outcome arriving now must neither delete attempt
    2's lease nor record anything (the lease is found with its attempt)."""
    result = jq.add.delay(1, 2)
    worker = new_id()
    [(job_id, *_)] = _claim(conn, schema, worker)
    retry = Outcome(str(job_id), 1, states.RETRY, error=json.dumps({"type": "X"}), delay=0.0)
    assert (
        conn.execute(
            queries(schema)["job_complete_many"], outcome_params([retry], worker)
        ).fetchone()[0]
        == 1
    )
    [(again, *rest)] = _claim(conn, schema, worker)
    assert (again, rest[5]) == (job_id, 2)
    assert _complete(conn, schema, worker, str(job_id), 1, "late") == 0
    held = conn.execute(
        f'SELECT attempt FROM "{schema}".job_lease WHERE job_id = %s', [job_id]
    ).fetchall()
    assert held == [(2,)]
    assert result.state == states.STARTED
    assert _complete(conn, schema, worker, str(job_id), 2, 3) == 1
    assert result.get(timeout=1) == 3


def test_a_batch_of_outcomes_is_recorded_value_for_value(jq: Any, schema: str, conn: Any) -> None:
    """The completion's parameters travel as text (outcome_params): a result
    that is JSON null stays distinct from no result, and awkward text (commas,
    quotes, non-ASCII) and retry delays arrive intact, each on its own job."""
    jq.app.enqueue_many(jq.add, [(i, i) for i in range(4)])
    worker = new_id()
    rows = sorted(_claim(conn, schema, worker), key=lambda r: r[0])
    assert len(rows) == 4
    awkward = json.dumps({"message": 'a, "b"; \\ c ≠ d', "items": [1, 2]})
    outcomes = [
        Outcome(rows[0][0], rows[0][6], states.SUCCESS, result="null"),
        Outcome(rows[1][0], rows[1][6], states.SUCCESS, result=None),
        Outcome(rows[2][0], rows[2][6], states.FAILURE, error=awkward),
        Outcome(rows[3][0], rows[3][6], states.RETRY, error=awkward, delay=120.5),
    ]
    finished = conn.execute(
        queries(schema)["job_complete_many"], outcome_params(outcomes, worker)
    ).fetchone()
    assert finished[0] == 4
    recorded = conn.execute(
        f"SELECT id::text, state, result IS NULL, result, error, "
        f"round(extract(epoch FROM run_at - now())) "
        f'FROM "{schema}".jobs WHERE id = ANY(%s::uuid[]) ORDER BY id',
        [[r[0] for r in rows]],
    ).fetchall()
    assert [r[0] for r in recorded] == [r[0] for r in rows]
    assert recorded[0][1:4] == (states.SUCCESS, False, None)  # JSON null, stored as such
    assert recorded[1][1:4] == (states.SUCCESS, True, None)  # no result at all
    assert recorded[2][1] == states.FAILURE and recorded[2][4] == json.loads(awkward)
    assert recorded[3][1] == states.RETRY and recorded[3][4] == json.loads(awkward)
    assert 119 <= recorded[3][5] <= 121


def test_claim_takes_at_most_the_limit_and_skips_locked_rows(
    jq: Any, schema: str, dsn: str, conn: Any
) -> None:
    jq.app.enqueue_many(jq.add, [(i, i) for i in range(10)])
    with psycopg.connect(dsn) as holder:  # another worker's claim, still uncommitted
        held = _claim(holder, schema, new_id(), limit=4)
        assert len(held) == 4
        mine = _claim(conn, schema, new_id(), limit=4)
        assert len(mine) == 4 and not {r[0] for r in mine} & {r[0] for r in held}
        holder.rollback()
    rest = _claim(conn, schema, new_id(), limit=100)
    assert len(rest) == 6  # the 4 held rows came back when that claim rolled back
    leases = conn.execute(f'SELECT count(*) FROM "{schema}".job_lease').fetchone()
    assert leases == (10,)


def _claim_plan(conn: Any, claim: str, worker: str) -> str:
    """EXPLAIN of the claim of 32 jobs of queue default, parameters inlined."""
    inlined = (
        claim.replace("%(queues)s", "'{default}'")
        .replace("%(limit)s", "32")
        .replace("%(worker_id)s", f"'{worker}'::uuid")
        .replace("%(revision)s", str(REVISION))
        .replace("%(skip_tasks)s", "'{}'")
    )
    return "\n".join(r[0] for r in conn.execute("EXPLAIN " + inlined))


def test_claim_and_completion_plans_use_indexes_not_scans(jq: Any, schema: str, conn: Any) -> None:
    """A guard on the plan's shape, not on timings: with a real backlog of waiting
    jobs the claim must reach rows through indexes. (A set-returning function
    estimated at 1,000 rows once turned it into sequential scans, 16x slower.)"""
    jq.app.enqueue_many(jq.add, [(i, i) for i in range(30_000)])
    conn.execute(f'ANALYZE "{schema}".job_queue')
    conn.execute(f'ANALYZE "{schema}".jobs')
    worker = new_id()
    claim = queries(schema)["job_claim"]
    plan = _claim_plan(conn, claim, worker)
    # jobs is partitioned (0012): the partitions of the coming days and the
    # default one are empty, as is task_limits here (no task limit synced),
    # and a sequential scan of an empty table is the planner's (right) choice
    # there. Every other relation: through indexes.
    empty = {
        name
        for (name,) in conn.execute(
            "SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n "
            "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r' "
            "AND pg_relation_size(c.oid) = 0",
            (schema,),
        ).fetchall()
    }
    scanned = set(re.findall(r"Seq Scan on (\w+)", plan))
    assert scanned <= empty, plan

    # With many limited tasks, the claim's read of the tasks an operator gave
    # a rate (0014) goes through its partial index, not over every row.
    conn.execute(
        f"""INSERT INTO "{schema}".task_limits (task, rate_per_second, declared_rate)
            SELECT 'task' || i, 10, 10 FROM generate_series(1, 5000) AS i"""
    )
    conn.execute(f"SELECT \"{schema}\".set_rate_limit('add', '5/s')")
    conn.execute(f'ANALYZE "{schema}".task_limits')
    plan = _claim_plan(conn, claim, worker)
    assert "task_limits_operator_rate_idx" in plan, plan
    assert "Seq Scan on task_limits" not in plan, plan


def test_hot_path_plans_stay_linear_when_statistics_are_stale(
    jq: Any, schema: str, conn: Any, dsn: str
) -> None:
    """job_queue and job_lease swing between empty and a backlog, so whatever
    ANALYZE (or autovacuum) saw is soon wrong. Here both were analyzed empty
    after 3,000 jobs had passed through, then a backlog of 20,000 arrived: the
    worker's sessions must still claim through the claim index and complete
    through keys. (A plan costed for "1 row" once scanned the whole backlog per
    claim and joined every lease with every outcome: 8x slower with history.)"""
    sql = queries(schema)
    worker = new_id()
    jq.app.enqueue_many(jq.add, [(i, i) for i in range(3_000)])
    for job_id, attempt in [(r[0], r[6]) for r in _claim(conn, schema, worker, 3_000)]:
        _complete(conn, schema, worker, job_id, attempt, 0)
    conn.execute(f'ANALYZE "{schema}".job_queue, "{schema}".job_lease')
    stats = conn.execute(
        f"SELECT relname, relpages, reltuples FROM pg_class WHERE oid IN "
        f"('\"{schema}\".job_queue'::regclass, '\"{schema}\".job_lease'::regclass)"
    ).fetchall()
    assert all(pages > 0 and tuples == 0 for _, pages, tuples in stats), stats
    jq.app.enqueue_many(jq.add, [(i, i) for i in range(20_000)])

    with psycopg.connect(dsn, autocommit=True) as hot:
        hot.execute(sql["session_hot_path"])
        params = {
            "queues": ["default"],
            "limit": 500,
            "worker_id": worker,
            "revision": REVISION,
            "skip_tasks": [],
        }
        with hot.transaction(force_rollback=True):
            claim_plan = "\n".join(r[0] for r in hot.execute("EXPLAIN " + sql["job_claim"], params))
        assert "job_queue_claim_idx" in claim_plan, claim_plan
        assert "Seq Scan" not in claim_plan and "Bitmap" not in claim_plan, claim_plan
        claimed = hot.execute(sql["job_claim"], params).fetchall()
        assert len(claimed) == 500
        outcome = outcome_params(
            [Outcome(r[0], r[6], states.SUCCESS, result="0") for r in claimed], worker
        )
        complete_plan = "\n".join(
            r[0] for r in hot.execute("EXPLAIN " + sql["job_complete_many"], outcome)
        )
        assert "Seq Scan" not in complete_plan and "Bitmap" not in complete_plan, complete_plan
        assert hot.execute(sql["job_complete_many"], outcome).fetchone()[0] == 500
        next_plan = "\n".join(
            r[0] for r in hot.execute("EXPLAIN " + sql["job_next_run_at"], params)
        )
        assert "Seq Scan" not in next_plan and "Sort" not in next_plan, next_plan


def test_the_worker_sessions_plan_the_claim_once(jq: Any, schema: str, dsn: str) -> None:
    """The claim is prepared (psycopg prepares a statement on its sixth run) and
    must then run on one generic plan: left to choose, PostgreSQL re-planned it
    on every claim, which cost more than the claim itself on an idle worker."""
    sql = queries(schema)
    jq.app.enqueue_many(jq.add, [(i, i) for i in range(40)])
    with psycopg.connect(dsn, autocommit=True) as hot:
        hot.execute(sql["session_hot_path"])
        params = {
            "queues": ["default"],
            "limit": 2,
            "worker_id": new_id(),
            "revision": REVISION,
            "skip_tasks": [],
        }
        claimed = sum(len(hot.execute(sql["job_claim"], params).fetchall()) for _ in range(12))
        assert claimed == 24
        plans = hot.execute(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement LIKE %s",
            ["%FOR UPDATE SKIP LOCKED%"],
        ).fetchall()
    assert plans and all(generic > 0 and custom == 0 for generic, custom in plans), plans


def test_the_sql_retry_limit_default_is_pythons(jq: Any, schema: str, conn: Any) -> None:
    """max_retries() falls back, for rows written without options (SQL
    enqueue()), to the same number a task defaults to; every job Python
    writes stores its own."""
    from jobqueue.retry import DEFAULT_MAX_RETRIES

    rows = conn.execute(
        f"""SELECT "{schema}".max_retries('{{}}'), "{schema}".max_retries('{{"max_retries": 7}}'),
                   "{schema}".max_retries('{{"max_retries": null}}')"""
    ).fetchone()
    assert rows == (DEFAULT_MAX_RETRIES, 7, None)
    stored = jq.app.send_task("not.registered.here", (1,))
    options = conn.execute(
        f'SELECT options FROM "{schema}".all_jobs WHERE id = %s', [stored.id]
    ).fetchone()
    assert options == ({"max_retries": DEFAULT_MAX_RETRIES},)


def test_completion_and_release_look_each_job_up_once(jq: Any, schema: str, conn: Any) -> None:
    """A batch of B outcomes (or released jobs) reads the jobs' primary key B
    times. With the batch's id array also an index condition of that lookup,
    each of the B lookups scanned the index once per id: B * B."""
    jq.app.enqueue_many(jq.add, [(i, i) for i in range(400)])
    worker = new_id()
    rows = _claim(conn, schema, worker, limit=400)
    done, back = rows[:200], rows[200:]

    def scans() -> int:
        conn.execute("SELECT pg_stat_force_next_flush()")
        row = conn.execute(
            "SELECT COALESCE(sum(s.idx_scan), 0) FROM pg_partition_tree(%s::regclass) AS p "
            "JOIN pg_stat_user_indexes AS s ON s.indexrelid = p.relid",
            [f'"{schema}".jobs_pkey'],
        ).fetchone()
        return int(row[0]) if row else 0

    before = scans()
    outcomes = [Outcome(str(r[0]), r[6], states.SUCCESS, result="null") for r in done]
    (finished, *_) = conn.execute(
        queries(schema)["job_complete_many"], outcome_params(outcomes, worker)
    ).fetchone()
    conn.execute(
        queries(schema)["job_release_many"], {"ids": [str(r[0]) for r in back], "worker_id": worker}
    )
    used = scans() - before
    assert finished == 200
    assert conn.execute(f'SELECT count(*) FROM "{schema}".job_queue').fetchone() == (200,)
    assert used < 5 * 400, used  # one lookup each (and a few more), not 200 * 200 each


def test_each_concurrency_slot_freed_wakes_one_deferred_job(
    jq: Any, schema: str, conn: Any
) -> None:
    """A task limited to 2 at once, 6 jobs: the claim admits 2 and defers 4
    (admit(): due in a second). Both finishing in one completion frees two
    slots, so two deferred jobs are due at once, not one (which left a
    limited drain waiting a second per completion batch)."""

    @jq.app.task(name="capped", concurrency_limit=2)
    def capped() -> None:
        return None

    conn.execute(
        queries(schema)["task_limits_sync"],
        {"tasks": ["capped"], "rates": [None], "bursts": [1.0], "limits": [2]},
    )
    jq.app.enqueue_many(capped, [() for _ in range(6)])
    worker = new_id()
    claimed = _claim(conn, schema, worker)
    assert len(claimed) == 2
    due = f'SELECT count(*) FROM "{schema}".job_queue WHERE run_at <= now()'
    assert conn.execute(due).fetchone()[0] == 0
    outcomes = [Outcome(str(r[0]), r[6], states.SUCCESS, result="null") for r in claimed]
    finished = conn.execute(
        queries(schema)["job_complete_many"], outcome_params(outcomes, worker)
    ).fetchone()
    assert finished[0] == 2
    assert conn.execute(due).fetchone()[0] == 2
    assert len(_claim(conn, schema, worker)) == 2


def test_a_claim_admits_the_rate_tokens_due_within_its_horizon(
    jq: Any, schema: str, conn: Any
) -> None:
    """A task limited to 1000/s (burst 1), 200 jobs, claims of 100: a claim
    admitted only the token there now, one job per claim (a worker looks
    again after 5 ms at the soonest: 161 jobs a second at 5000/s). It now
    admits the jobs whose tokens come within 50 ms, each with its token's
    time as started_at (one every 1/rate) and start_in, the seconds until
    then; the bucket owes those tokens, so the next claim's tokens come after
    them: the started_at never hold more than rate x T + burst in T seconds."""

    @jq.app.task(name="metered", rate_limit="1000/s")
    def metered() -> None:
        return None

    conn.execute(
        queries(schema)["task_limits_sync"],
        {"tasks": ["metered"], "rates": [1000.0], "bursts": [1.0], "limits": [None]},
    )
    jq.app.enqueue_many(metered, [() for _ in range(200)])
    worker = new_id()
    bucket = f"SELECT tokens, updated_at FROM \"{schema}\".limit_state WHERE key = 'r:metered'"
    started = f'SELECT started_at FROM "{schema}".jobs WHERE id = ANY(%s::uuid[]) ORDER BY 1'

    first = _claim(conn, schema, worker, limit=100)
    tokens, at = conn.execute(bucket).fetchone()
    assert len(first) == 51, len(first)  # the token there, and 50 more within 50 ms
    assert tokens == pytest.approx(1 - 51)  # owed: no later claim gets them again
    times = [row[0] for row in conn.execute(started, ([row[0] for row in first],)).fetchall()]
    assert times[0] == at  # the token there: when the bucket was read
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert gaps == pytest.approx([0.001] * 50, abs=2e-6)
    # start_in: seconds from the end of the claim to each token (the first
    # ones may have passed while the statement ran: those start at once).
    delays = [row[-2] for row in first]
    assert delays[0] is None or delays[0] <= 0
    assert all(d <= i / 1000 for i, d in enumerate(delays[1:], 1)), delays
    assert [b - a for a, b in itertools.pairwise(delays[1:])] == pytest.approx(
        [0.001] * 49, abs=1e-4
    )
    # The next candidate waits for its token less the horizon: due 1 ms after
    # the claim (the 100 jobs no claim looked at yet are due already).
    (soonest,) = conn.execute(
        f'SELECT min(run_at) FROM "{schema}".job_queue WHERE run_at >= %s', (at,)
    ).fetchone()
    assert (soonest - at).total_seconds() == pytest.approx(0.001, abs=2e-6)

    # Whenever the next claim runs, its first token comes after the last one given.
    due = "SELECT clock_timestamp() > %s::timestamptz + interval '1 ms'"
    wait_for(lambda: conn.execute(due, (soonest,)).fetchone()[0], 10, "the next token")
    second = _claim(conn, schema, worker, limit=100)
    assert 0 < len(second) < 100
    later = [row[0] for row in conn.execute(started, ([row[0] for row in second],)).fetchall()]
    assert min(later) >= times[-1] + timedelta(microseconds=999)
    # A worker of 0022 still running (its claim calls admit(), no horizon)
    # reads the debt as an empty bucket: it takes none of these tokens again.
    old_admit = (
        f'SELECT count(*) FROM "{schema}".admit(ARRAY(SELECT job_id FROM "{schema}".job_queue))'
    )
    assert conn.execute(old_admit).fetchone() == (0,)
