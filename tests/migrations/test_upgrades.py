"""Workers across schema changes: a worker never destroys a job it cannot record.

A worker of an earlier release, left running while ``jobqueue db upgrade``
ran, once kept claiming from a queue whose rows it no longer understood and
deleted every new single enqueue. The claim now asks the schema first
(``worker_compatible``), and never deletes a waiting row without writing its
record in the same statement.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from jobqueue import migrate, states
from jobqueue.ids import new_id
from jobqueue.options import resolve
from jobqueue.sql import load, queries
from jobqueue.worker.outcome import Outcome, outcome_params
from tests.conftest import wait_for

REVISION = int(migrate.head_revision())


def _claim(conn: Any, schema: str, worker: str, revision: int = REVISION) -> list[Any]:
    params = {
        "queues": ["default"],
        "limit": 10,
        "worker_id": worker,
        "revision": revision,
        "skip_tasks": [],
    }
    return conn.execute(queries(schema)["job_claim"], params).fetchall()


def _simulate_upgrade(conn: Any, schema: str, revision: int, oldest_worker: int) -> None:
    """What a later migration that old workers cannot run against does."""
    with conn.transaction():
        conn.execute(f'UPDATE "{schema}".alembic_version SET version_num = %s', [f"{revision:04d}"])
        conn.execute(
            f'UPDATE "{schema}".schema_compat SET oldest_worker_revision = %s', [oldest_worker]
        )


def test_a_running_worker_stops_claiming_when_the_schema_moves_past_it(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    worker = start_worker("--concurrency", "2")
    assert jq.add.delay(1, 2).get(timeout=30) == 3
    _simulate_upgrade(conn, schema, REVISION + 1, REVISION + 1)
    ids = [jq.add.delay(i, i).id for i in range(200)]  # new code's producers go on

    assert worker.proc.wait(30) != 0
    assert "must not claim from" in worker.log
    assert "Restart the worker with the release that matches the schema" in worker.log
    waiting = conn.execute(
        f'SELECT count(*) FROM "{schema}".all_jobs WHERE id = ANY(%s::uuid[]) AND state = %s',
        (ids, states.PENDING),
    ).fetchone()
    assert waiting == (200,)  # every job still there, unclaimed, for the new workers


def test_the_claim_of_an_unknown_or_older_revision_changes_nothing(
    jq: Any, schema: str, conn: Any
) -> None:
    job = jq.add.delay(1, 2)
    (oldest,) = conn.execute(
        f'SELECT oldest_worker_revision FROM "{schema}".schema_compat'
    ).fetchone()
    for revision in (oldest - 1, REVISION + 1):
        try:
            _claim(conn, schema, new_id(), revision)
        except Exception as exc:
            assert getattr(exc, "sqlstate", None) == "JQ001", exc
            assert f"worker of revision {revision}" in str(exc)
        else:
            raise AssertionError(f"a worker of revision {revision} claimed")
    assert job.state == states.PENDING
    [row] = _claim(conn, schema, new_id())
    assert row[0] == job.id


def _record_waiting(conn: Any, schema: str) -> None:
    """Give the waiting one-row jobs (job_insert, enqueue_many) their records
    now, as the enqueues that write both rows do (a caller's task_id=, the
    bulk INSERT path, releases before bulk COPY wrote one row): the layout of a
    "recorded" backlog, where the claim updates `jobs` instead of inserting."""
    conn.execute(
        f'INSERT INTO "{schema}".jobs (id, task, queue, priority, args, kwargs, options, '
        "run_at, expires_at, created_at) "
        "SELECT job_id, task, queue, priority, args, kwargs, options, run_at, expires_at, "
        f'created_at FROM "{schema}".job_queue WHERE args IS NOT NULL'
    )
    conn.execute(
        f'UPDATE "{schema}".job_queue SET args = NULL, kwargs = NULL, options = NULL, '
        "expires_at = NULL, created_at = NULL WHERE args IS NOT NULL"
    )


def test_a_waiting_row_whose_record_is_gone_fails_its_job_instead_of_vanishing(
    jq: Any, schema: str, conn: Any
) -> None:
    """A job enqueued with its record (bulk) whose record was deleted while it
    waited: the claim used to delete its queue row and record nothing."""
    [orphan, done] = jq.app.enqueue_many(jq.add, [(1, 1), (2, 2)])
    _record_waiting(conn, schema)
    conn.execute(f'DELETE FROM "{schema}".jobs WHERE id = %s', [orphan.id])
    conn.execute(
        f"UPDATE \"{schema}\".jobs SET state = 'SUCCESS', result = '4', finished_at = now() "
        "WHERE id = %s",
        [done.id],
    )
    assert _claim(conn, schema, new_id()) == []  # nothing to run...
    rows = dict(
        conn.execute(
            f'SELECT id::text, state FROM "{schema}".all_jobs WHERE id = ANY(%s::uuid[])',
            ([orphan.id, done.id],),
        ).fetchall()
    )
    assert rows == {orphan.id: states.FAILURE, done.id: states.SUCCESS}  # ...and nothing lost
    error = conn.execute(f'SELECT error FROM "{schema}".jobs WHERE id = %s', [orphan.id]).fetchone()
    assert error is not None and error[0]["type"] == "JobRecordMissing"
    assert orphan.id in error[0]["message"]
    queued = conn.execute(f'SELECT count(*) FROM "{schema}".job_queue').fetchone()
    assert queued == (0,)
    assert done.get(timeout=1) == 4


def test_a_worker_started_on_empty_tables_drains_a_recorded_backlog_through_keys(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    """The claim session keeps one generic plan per statement. Planned while
    `jobs` was empty (a fresh database: autovacuum has analyzed the empty
    tables), the claim's update of `jobs` read the whole table on every claim:
    10,000 rows for a claim of 8. Plan shape, not timing: the rows the drain
    reads through `jobs`' primary key stay in proportion to the jobs drained."""
    for table in ("jobs", "job_queue", "job_lease"):
        conn.execute(f'VACUUM ANALYZE "{schema}".{table}')
    start_worker("--concurrency", "4", "--poll-interval", "0.05")

    def index_stat(index: str, column: str) -> int:
        query = sql.SQL(
            "SELECT {} FROM pg_stat_user_indexes WHERE schemaname = %s AND indexrelname = %s"
        ).format(sql.Identifier(column))
        row = conn.execute(query, [schema, index]).fetchone()
        return int(row[0]) if row else 0

    def claims() -> int:
        return index_stat("job_queue_claim_idx", "idx_scan")

    def pkey_stat(column: str) -> int:
        # jobs is partitioned (0012): its primary key is read through the
        # partitions' own indexes.
        query = sql.SQL(
            "SELECT COALESCE(sum(s.{}), 0) FROM pg_partition_tree(%s::regclass) AS p "
            "JOIN pg_stat_user_indexes AS s ON s.indexrelid = p.relid"
        ).format(sql.Identifier(column))
        row = conn.execute(query, [f'"{schema}".jobs_pkey']).fetchone()
        return int(row[0]) if row else 0

    def pkey_reads() -> int:
        return pkey_stat("idx_tup_read")

    # psycopg prepares a statement on its sixth run: let the idle worker's
    # polls prepare the claim while the tables are empty.
    wait_for(lambda: claims() >= 12, 30, "the idle worker to prepare its claim")
    with conn.transaction():  # the worker sees the backlog with its records
        results = jq.app.enqueue_many(jq.add, [(i, i) for i in range(10_000)], connection=conn)
        _record_waiting(conn, schema)
    wait_for(
        lambda: conn.execute(
            f"SELECT count(*) = 0 FROM \"{schema}\".all_jobs WHERE state <> 'SUCCESS'"
        ).fetchone()[0],
        120,
        "the backlog to drain",
    )
    assert results[-1].get(timeout=5) == 2 * 9_999

    # Statistics reach the view within a second or so of each transaction.
    wait_for(lambda: pkey_reads() >= 10_000, 30, "the drain's statistics")
    reads, scans = pkey_reads(), pkey_stat("idx_scan")
    # Through keys: about one read to claim and one to complete each job. A
    # claim reading all of `jobs` makes it about 80 times the backlog.
    assert reads < 5 * 10_000, json.dumps({"jobs_pkey reads": reads})
    # And one lookup each: a completion whose lookup also took the batch's
    # id array as an index condition scanned the index once per id for each
    # outcome (a batch of B jobs: B * B scans; 20 times the backlog here).
    assert scans < 5 * 10_000, json.dumps({"jobs_pkey scans": scans})


@pytest.mark.parametrize("release", [7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22])
def test_workers_and_producers_of_an_earlier_release_run_through_the_upgrade(
    release: int, jq: Any, dsn: str, schema: str, conn: Any, start_worker: Any
) -> None:
    """Revisions 0008 to 0023 say workers of the release before may keep
    running while they are applied. Here a worker and two producers of that
    release (its own statements, kept in releases/) run while the schema goes
    from its revision to head, then a worker of this release joins: every
    committed job runs exactly once."""
    migrate.downgrade(dsn, schema, f"{release:04d}")
    old = load((Path(__file__).parent / "releases" / f"{release:04d}.sql").read_text(), schema)
    worker_id = new_id()
    stop = threading.Event()
    committed: list[str] = []
    errors: list[BaseException] = []

    def produce() -> None:
        with psycopg.connect(dsn, autocommit=True) as c:
            while not stop.is_set():
                params = resolve(jq.app, "add", jq.add, (1, 2), {}, {}).params()
                c.execute(old["job_insert"], params)
                committed.append(params["id"])

    def old_worker() -> None:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(
                old["worker_register"],
                {
                    "id": worker_id,
                    "hostname": "old",
                    "pid": 0,
                    "queues": ["default"],
                    "concurrency": 8,
                    "version": "0007",
                    "lease_ttl": 300,
                    "tasks": None,  # 0011 on
                    "pool": "threads",  # 0014 on
                },
            )
            while not stop.is_set() or claimable(c):
                params = {
                    "queues": ["default"],
                    "limit": 50,
                    "worker_id": worker_id,
                    "revision": release,  # unused before 0008
                    "skip_tasks": [],  # 0011 on
                }
                rows = c.execute(old["job_claim"], params).fetchall()
                done = [Outcome(r[0], r[6], states.SUCCESS, result="3") for r in rows]
                if done:
                    c.execute(old["job_complete_many"], outcome_params(done, worker_id))

    def claimable(c: Any) -> bool:
        row = c.execute(f'SELECT count(*) FROM "{schema}".job_queue').fetchone()
        return bool(row and row[0])

    def guarded(target: Any) -> Any:
        def run() -> None:
            try:
                target()
            except BaseException as exc:
                errors.append(exc)

        return run

    threads = [threading.Thread(target=guarded(f)) for f in (produce, produce, old_worker)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(committed) >= 500 or errors, 60, "the old release to get going")
        migrate.upgrade(dsn, schema)  # while they run
        before = len(committed)
        wait_for(lambda: len(committed) >= before + 500 or errors, 60, "enqueues after it")
        start_worker("--concurrency", "4")  # this release joins
        wait_for(lambda: len(committed) >= before + 1_000 or errors, 60, "more enqueues")
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert errors == []
    wait_for(
        lambda: (
            conn.execute(
                f"SELECT count(*) FROM \"{schema}\".all_jobs WHERE state <> 'SUCCESS'"
            ).fetchone()
            == (0,)
        ),
        60,
        "every job to finish",
    )
    rows = conn.execute(
        f'SELECT count(*), count(*) FILTER (WHERE attempts = 1) FROM "{schema}".jobs '
        "WHERE id = ANY(%s::uuid[])",
        (committed,),
    ).fetchone()
    assert rows == (len(committed), len(committed))
