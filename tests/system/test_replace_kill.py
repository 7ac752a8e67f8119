"""self.replace() under kill -9: a worker killed while jobs replace themselves
(before, during or after the transaction that writes the replacement with the
job's outcome) leaves every job replaced exactly once, and nothing lost."""

from __future__ import annotations

import random
import signal
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest

from jobqueue import JobQueue
from tests.apps_replace import build
from tests.conftest import wait_for

APP = "tests.apps_replace:app"
FAST_LEASE = ("--lease-ttl", "2", "--heartbeat-interval", "0.5")


@pytest.fixture
def rq(dsn: str, schema: str) -> Iterator[SimpleNamespace]:
    app = JobQueue(dsn, schema=schema, auto_migrate=False)
    yield build(app)
    app.close()


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_kill_9_while_jobs_replace_themselves(
    pool: str, rq: Any, schema: str, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    conn.execute(f'SET search_path TO "{schema}"')
    conn.execute("CREATE TABLE marks (job uuid PRIMARY KEY, tag text NOT NULL)")
    table = f"{schema}.marks"
    rng = random.Random(24)
    count = 300
    swaps = [rq.swap.delay(table, f"t{i}", rng.uniform(0, 0.03)) for i in range(count)]

    def replaced() -> int:
        row = conn.execute("SELECT count(*) FROM jobs WHERE task = 'swap' AND state = 'SUCCESS'")
        return int(row.fetchone()[0])

    kills = 0
    for _ in range(4):  # a worker killed mid-flight, four times over
        before = replaced()
        victim = start_worker("--pool", pool, "--concurrency", "8", *FAST_LEASE, app=APP)
        wait_for(lambda b=before: replaced() >= min(b + 30, count), 60, "progress")
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)
        kills += 1
    start_worker("--pool", pool, "--concurrency", "8", *FAST_LEASE, app=APP)

    # Nothing lost: every job's result is its replacement's.
    assert [r.get(timeout=120) for r in swaps] == [f"t{i}" for i in range(count)]
    # Nothing twice: each job has one replacement (its first step, a child),
    # and each tag was marked by one job.
    children = conn.execute(
        "SELECT count(*), count(DISTINCT parent_id) FROM jobs WHERE task = 'mark'"
    ).fetchone()
    assert children == (count, count)
    marks = conn.execute("SELECT count(*), count(DISTINCT tag) FROM marks").fetchone()
    assert marks == (count, count)
    identities = conn.execute(
        "SELECT count(*) FROM jobs WHERE task = 'identity' AND state = 'SUCCESS'"
    ).fetchone()
    assert identities == (count,)
    rescued = conn.execute(
        "SELECT count(*) FROM jobs WHERE task IN ('swap', 'mark', 'identity') AND attempts > 1"
    ).fetchone()[0]
    left = conn.execute(
        "SELECT (SELECT count(*) FROM job_lease), "
        "(SELECT count(*) FROM jobs WHERE state NOT IN ('SUCCESS')), "
        "(SELECT count(*) FROM chord_members)"
    ).fetchone()
    print(f"\n{pool}: {kills} kills, {rescued} jobs ran again after a kill")
    assert left == (0, 0, 0)
    assert kills == 4


def test_kill_9_inside_the_transaction_that_writes_the_replacement(
    rq: Any,
    dsn: str,
    schema: str,
    conn: psycopg.Connection[Any],
    start_worker: Any,
    tmp_path: Any,
) -> None:
    """The worker dies while its completer's transaction (job_replace) waits
    on a lock the test holds: nothing of the replacement survives, the job is
    rescued and run again, and it is replaced once."""
    conn.execute(f'SET search_path TO "{schema}"')
    conn.execute("CREATE TABLE marks (job uuid PRIMARY KEY, tag text NOT NULL)")
    gate = tmp_path / "gate"
    gate.touch()
    victim = start_worker("--concurrency", "2", *FAST_LEASE, app=APP)
    result = rq.swap_gated.delay(f"{schema}.marks", "once", str(gate))
    wait_for(lambda: result.state == "STARTED", 30, "the job to start")
    with psycopg.connect(dsn) as locker:  # a transaction holding the job's row
        locker.execute(
            f'SELECT 1 FROM "{schema}".jobs WHERE id = %s FOR UPDATE', [result.id]
        ).fetchall()
        gate.unlink()  # the task replaces itself; its completion waits on the lock

        def replace_waits() -> bool:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database() AND query LIKE %s",
                ["%detached%"],
            ).fetchone()
            return bool(row and row[0])

        wait_for(replace_waits, 30, "job_replace to wait on the lock")
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)
        locker.rollback()
    start_worker("--concurrency", "2", *FAST_LEASE, app=APP)
    assert result.get(timeout=60) == "once"
    assert conn.execute("SELECT attempts FROM jobs WHERE id = %s", [result.id]).fetchone() == (
        2,
    )  # the killed attempt and the rescued one
    marks = conn.execute("SELECT count(*) FROM jobs WHERE task = 'mark'").fetchone()
    assert marks == (1,)  # the first attempt's replacement was never written
    assert conn.execute("SELECT count(*), min(tag) FROM marks").fetchone() == (1, "once")
