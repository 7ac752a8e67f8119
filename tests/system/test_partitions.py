"""Partitioned history (migration 0012): partitions made ahead by the leader,
inserts that never fail for want of one, whole partitions dropped by
retention, and counters that stay exact under concurrent workers."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from jobqueue import states
from jobqueue.ids import uuid7
from jobqueue.maintenance import Retention
from tests.conftest import wait_for

DAY = timedelta(days=1)


def _day(offset: int) -> datetime:
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return today + offset * DAY


def _partition_name(day: datetime) -> str:
    return "p" + day.strftime("%Y%m%d_0000")


def _where(conn: Any, schema: str, job_id: str) -> str | None:
    row = conn.execute(
        f'SELECT tableoid::regclass::text FROM "{schema}".jobs WHERE id = %s', [job_id]
    ).fetchone()
    return None if row is None else str(row[0]).split(".")[-1]


def _exists(conn: Any, schema: str, table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [f'"{schema}".{table}']).fetchone()
    return bool(row and row[0])


def _stats_match_a_real_count(conn: Any, schema: str) -> tuple[dict[Any, Any], dict[Any, Any]]:
    counted = {
        (queue, state): n
        for queue, success, failure, revoked, retry in conn.execute(
            f'SELECT queue, success, failure, revoked, retry FROM "{schema}".queue_stats'
        ).fetchall()
        for state, n in (
            ("SUCCESS", success),
            ("FAILURE", failure),
            ("REVOKED", revoked),
            ("RETRY", retry),
        )
        if n
    }
    real = {
        (queue, state): n
        for queue, state, n in conn.execute(
            f'SELECT queue, state, count(*) FROM "{schema}".jobs '
            "WHERE state IN ('SUCCESS', 'FAILURE', 'REVOKED', 'RETRY') GROUP BY 1, 2"
        ).fetchall()
    }
    return counted, real


def test_an_insert_never_fails_for_want_of_a_partition(jq: Any, schema: str, conn: Any) -> None:
    """Ids no partition covers (a random v4 id, a producer whose clock is days
    ahead or years behind) go to the default partition; creating the partition
    of their day later moves them into it."""
    s = f'"{schema}"'
    now = datetime.now(timezone.utc).timestamp()
    v4 = str(uuid.uuid4())
    skewed = str(uuid7(now + 5 * 86400))  # past the three days made ahead
    ancient = str(uuid7(now - 20 * 365 * 86400))
    for job_id in (v4, skewed):
        conn.execute(f"SELECT {s}.enqueue('add', '[1, 2]', id => %s)", [job_id])
    jq.add.apply_async((1, 2), task_id=ancient)  # the Python path, a caller's id
    fresh = jq.add.apply_async((1, 2), task_id=str(uuid7()))

    assert _where(conn, schema, v4) == "jobs_default"
    assert _where(conn, schema, skewed) == "jobs_default"
    assert _where(conn, schema, ancient) == "jobs_legacy"  # below the migration's bound
    assert _where(conn, schema, fresh.id) in ("jobs_legacy", "jobs_" + _partition_name(_day(0)))

    conn.execute(f"UPDATE {s}.history_plan SET ahead = 6")
    (created,) = conn.execute(f"SELECT {s}.history_partitions_ahead()").fetchone()
    assert created >= 2
    assert _where(conn, schema, skewed) == "jobs_" + _partition_name(_day(5))  # moved
    assert _where(conn, schema, v4) == "jobs_default"
    for job_id in (v4, skewed, ancient, fresh.id):
        assert jq.app.AsyncResult(job_id).state == states.PENDING  # every one still there


def test_the_leader_creates_the_partitions_ahead(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    s = f'"{schema}"'
    for (name,) in conn.execute(
        f"SELECT name FROM {s}.history_partitions WHERE starts_at IS NOT NULL"
    ).fetchall():
        conn.execute(f"DROP TABLE {s}.jobs_{name}, {s}.job_attempts_{name}")
    conn.execute(f"DELETE FROM {s}.history_partitions WHERE starts_at IS NOT NULL")
    start_worker("--heartbeat-interval", "0.2")

    def covered_until() -> Any:
        row = conn.execute(f"SELECT max(ends_at) FROM {s}.history_partitions").fetchone()
        end = row[0] if row else None
        return end is not None and end > datetime.now(timezone.utc) + 3 * DAY

    wait_for(covered_until, 30, "the leader to create three days of partitions")
    # A migrated schema's legacy partition covers up to the day after tomorrow.
    after = _partition_name(_day(2))
    assert _exists(conn, schema, f"jobs_{after}")
    assert _exists(conn, schema, f"job_attempts_{after}")
    job = jq.add.apply_async((2, 3), task_id=str(uuid7(_day(2).timestamp() + 60)))
    assert job.get(timeout=30) == 5
    assert _where(conn, schema, job.id) == f"jobs_{after}"


def _insert_finished(
    conn: Any, schema: str, day: datetime, finished: datetime, n: int
) -> list[str]:
    """n jobs made during `day`, finished at `finished`: a tenth failed (with an
    attempt row), the rest succeeded."""
    ids = [str(uuid7(day.timestamp() + 60 + i)) for i in range(n)]
    failed = ids[: n // 10]
    conn.execute(
        f'INSERT INTO "{schema}".jobs (id, task, state, finished_at, attempts) '
        "SELECT id, 'add', CASE WHEN id = ANY(%s::uuid[]) THEN 'FAILURE' ELSE 'SUCCESS' END, "
        "%s, 1 FROM unnest(%s::uuid[]) AS id",
        [failed, finished, ids],
    )
    conn.execute(
        f'INSERT INTO "{schema}".job_attempts (job_id, attempt, state, finished_at) '
        "SELECT id, 1, 'FAILURE', %s FROM unnest(%s::uuid[]) AS id",
        [finished, failed],
    )
    return ids


def test_retention_drops_a_whole_day_and_keeps_one_holding_an_unfinished_job(
    jq: Any, schema: str, conn: Any
) -> None:
    s = f'"{schema}"'
    # The legacy partition (empty here) covers every past day: out of the way.
    conn.execute(f"DROP TABLE {s}.jobs_legacy, {s}.job_attempts_legacy")
    conn.execute(f"DELETE FROM {s}.history_partitions WHERE name = 'legacy'")
    old, kept = _day(-10), _day(-9)
    for day in (old, kept):
        conn.execute(f"SELECT {s}.history_partition_add(%s, %s)", [day, day + DAY])
    finished = datetime.now(timezone.utc) - 8 * DAY  # past both ages (1 and 7 days)
    _insert_finished(conn, schema, old, finished, 500)
    expired = _insert_finished(conn, schema, kept, finished, 500)
    # A job made that day that has not run yet (a far eta): its day must stay.
    waiting = str(uuid7(kept.timestamp() + 3600))
    conn.execute(
        f"SELECT {s}.enqueue('add', '[1, 2]', id => %s, run_at => now() + interval '1 day')",
        [waiting],
    )
    assert _stats_match_a_real_count(conn, schema)[0][("default", "SUCCESS")] == 900

    deleted = Retention(jq.app.store, jq.app.conf).prune(conn)

    assert not _exists(conn, schema, f"jobs_{_partition_name(old)}")  # dropped whole
    assert not _exists(conn, schema, f"job_attempts_{_partition_name(old)}")
    assert _exists(conn, schema, f"jobs_{_partition_name(kept)}")
    # The day that stays is pruned row by row (the fallback), its waiting job kept.
    assert deleted == len(expired)
    rows = conn.execute(f"SELECT id::text, state FROM {s}.jobs_{_partition_name(kept)}").fetchall()
    assert rows == [(waiting, states.PENDING)]
    attempts = conn.execute(f"SELECT count(*) FROM {s}.job_attempts").fetchone()
    assert attempts == (0,)
    counted, real = _stats_match_a_real_count(conn, schema)
    assert counted == real == {}
    # The dropped day's counters went with it.
    left = conn.execute(
        f"SELECT count(*) FROM {s}.job_counts WHERE hour >= %s AND hour < %s",
        [old, old + DAY],
    ).fetchone()
    assert left == (0,)
    # Once its last job has run and expired, the kept day goes whole too.
    conn.execute(f"DELETE FROM {s}.job_queue WHERE job_id = %s", [waiting])
    conn.execute(
        f"UPDATE {s}.jobs SET state = 'SUCCESS', finished_at = now() - interval '2 days' "
        "WHERE id = %s",
        [waiting],
    )
    assert Retention(jq.app.store, jq.app.conf).prune(conn) == 0  # no row deleted...
    assert not _exists(conn, schema, f"jobs_{_partition_name(kept)}")  # ...the day dropped


def test_counters_equal_a_real_count_after_a_concurrent_drain(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    """Two workers drain successes, failures, retries (some still waiting for
    their next attempt) and revocations at once: queue_stats (the counters)
    equals a count of the rows."""
    for _ in range(2):
        start_worker("--concurrency", "4")
    ok = jq.app.enqueue_many(jq.add, [(i, i) for i in range(400)])
    doomed = [jq.boom.delay("no") for _ in range(60)]
    flaky = [jq.flaky.delay(2) for _ in range(40)]
    later = [jq.retries_later.delay() for _ in range(20)]
    scheduled = [jq.add.apply_async((1, 1), countdown=600) for _ in range(30)]
    jq.app.revoke([r.id for r in scheduled])
    extra = [jq.add.delay(i, 1) for i in range(100)]
    s = f'"{schema}"'

    def settled() -> bool:
        row = conn.execute(
            f"SELECT count(*) FILTER (WHERE state IN ('SUCCESS', 'FAILURE', 'REVOKED')), "
            f"count(*) FILTER (WHERE state = 'RETRY') FROM {s}.jobs"
        ).fetchone()
        leased = conn.execute(f"SELECT count(*) FROM {s}.job_lease").fetchone()
        finished = len(ok) + len(doomed) + len(flaky) + len(scheduled) + len(extra)
        return row == (finished, len(later)) and leased == (0,)

    wait_for(settled, 120, "every job to finish (the slow retries to wait)")
    counted, real = _stats_match_a_real_count(conn, schema)
    assert counted == real
    assert real[("default", "SUCCESS")] == len(ok) + len(flaky) + len(extra)
    assert real[("default", "FAILURE")] == len(doomed)
    assert real[("default", "REVOKED")] == len(scheduled)
    assert real[("default", "RETRY")] == len(later)


def test_a_day_held_back_only_by_young_failures_keeps_them_alone(
    jq: Any, schema: str, conn: Any
) -> None:
    """With the default ages a day's successes expire six days before its
    failures: the partition is rebuilt with its failures (and their attempts)
    alone, instead of its successes being deleted row by row."""
    s = f'"{schema}"'
    conn.execute(f"DROP TABLE {s}.jobs_legacy, {s}.job_attempts_legacy")
    conn.execute(f"DELETE FROM {s}.history_partitions WHERE name = 'legacy'")
    day = _day(-4)
    conn.execute(f"SELECT {s}.history_partition_add(%s, %s)", [day, day + DAY])
    finished = datetime.now(timezone.utc) - 3 * DAY  # successes expired, failures not
    ids = _insert_finished(conn, schema, day, finished, 1000)
    failed, retried = ids[:100], ids[500]
    conn.execute(
        f"INSERT INTO {s}.job_attempts (job_id, attempt, state) VALUES (%s, 1, 'RETRY')",
        [retried],  # a success's earlier attempt goes with it
    )
    name = _partition_name(day)

    assert jq.app.store.history_prune(conn, 86400.0, 7 * 86400.0) == [(name, 100)]

    rows = conn.execute(f"SELECT id::text, state FROM {s}.jobs_{name} ORDER BY id").fetchall()
    assert rows == [(i, states.FAILURE) for i in sorted(failed)]
    attempts = conn.execute(f"SELECT job_id::text FROM {s}.job_attempts_{name}").fetchall()
    assert sorted(a for (a,) in attempts) == sorted(failed)
    counted, real = _stats_match_a_real_count(conn, schema)
    assert counted == real == {("default", "FAILURE"): 100}
    # Still a partition of jobs: new rows of that day land in it.
    late = str(uuid7(day.timestamp() + 7200))
    conn.execute(f"SELECT {s}.enqueue('add', '[1, 2]', id => %s)", [late])
    assert _where(conn, schema, late) == f"jobs_{name}"
    # Nothing more to gain: the next run leaves it alone.
    assert jq.app.store.history_prune(conn, 86400.0, 7 * 86400.0) == []


def test_the_legacy_partition_is_compacted_like_any_other(jq: Any, schema: str, conn: Any) -> None:
    """jobs_legacy (every id below the bound 0012 chose) has no lower bound:
    compacting it keeps that. Its end is moved back here, as if 0012 had run
    days ago."""
    s = f'"{schema}"'
    end = _day(-2)
    (bound,) = conn.execute(f"SELECT {s}.uuid7_floor(%s)::text", [end]).fetchone()
    for table in ("jobs", "job_attempts"):
        conn.execute(f"ALTER TABLE {s}.{table} DETACH PARTITION {s}.{table}_legacy")
        conn.execute(
            f"ALTER TABLE {s}.{table} ATTACH PARTITION {s}.{table}_legacy "
            f"FOR VALUES FROM (MINVALUE) TO ('{bound}')"
        )
    conn.execute(f"UPDATE {s}.history_partitions SET ends_at = %s WHERE name = 'legacy'", [end])
    failed = _insert_finished(conn, schema, _day(-5), datetime.now(timezone.utc) - 3 * DAY, 200)
    failed = failed[:20]

    assert jq.app.store.history_prune(conn, 86400.0, 7 * 86400.0) == [("legacy", 20)]

    rows = conn.execute(f"SELECT id::text FROM {s}.jobs_legacy ORDER BY id").fetchall()
    assert [r for (r,) in rows] == sorted(failed)
    (range_,) = conn.execute(
        "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE oid = %s::regclass",
        [f"{s}.jobs_legacy"],
    ).fetchone()
    assert range_ == f"FOR VALUES FROM (MINVALUE) TO ('{bound}')"
    ancient = str(uuid7(0.001))  # the lowest ids still land in it
    conn.execute(f"SELECT {s}.enqueue('add', '[1, 2]', id => %s)", [ancient])
    assert _where(conn, schema, ancient) == "jobs_legacy"
