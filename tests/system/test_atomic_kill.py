"""Atomic tasks under kill -9: every job's write exists exactly once.

1,000 jobs each insert one row in their atomic transaction, then pause a
random moment before it commits, while worker processes (both pools) are
killed with SIGKILL at random moments and replaced. A kill lands before the
write, between the write and the commit, or after it: either way each job
ends SUCCESS with exactly one row, and no job that committed ran again."""

from __future__ import annotations

import random
import signal
import time
from typing import Any

from jobqueue import states
from tests.conftest import unsettled, wait_for

JOBS = 1000
FAST_LEASE = ("--lease-ttl", "2", "--heartbeat-interval", "0.5")


def test_kill_9_at_random_points_leaves_every_write_exactly_once(
    ja: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    pools = [("--pool", "threads", "--concurrency", "8"), ("--pool", "processes", "-c", "4")]
    live = [start_worker(*pool, *FAST_LEASE, app="tests.apps_atomic:app") for pool in pools]
    ids = [r.id for r in ja.app.enqueue_many(ja.insert, [(i, 0.1) for i in range(JOBS)])]
    rng = random.Random(24)
    kills = 0
    deadline = time.monotonic() + 240
    # Kill while at least a tenth of the jobs are left: a kill lands on running
    # transactions most of the time (8 + 4 slots busy with ~50 ms pauses).
    while unsettled(conn, schema) > JOBS // 10 and time.monotonic() < deadline:
        time.sleep(rng.uniform(0.1, 0.6))  # the fault's timing, not a synchronisation
        index = rng.randrange(len(live))
        live[index].proc.send_signal(signal.SIGKILL)
        live[index].proc.wait(10)
        kills += 1
        live[index] = start_worker(*pools[index], *FAST_LEASE, app="tests.apps_atomic:app")
    wait_for(lambda: unsettled(conn, schema) == 0, 240, "every job to settle")

    states_found = conn.execute(
        f'SELECT state, count(*) FROM "{schema}".jobs GROUP BY state'
    ).fetchall()
    assert states_found == [(states.SUCCESS, JOBS)]
    per_job = conn.execute(
        f"SELECT count(*), count(DISTINCT job), max(c) FROM (SELECT job, count(*) AS c "
        f'FROM "{schema}".effects GROUP BY job) AS e'
    ).fetchone()
    assert per_job == (JOBS, JOBS, 1)  # every job's row, each exactly once
    assert {str(r) for (r,) in conn.execute(f'SELECT job FROM "{schema}".effects')} == set(
        map(str, ids)
    )
    rerun, lost = conn.execute(
        f'SELECT (SELECT count(*) FROM "{schema}".jobs WHERE attempts > 1), '
        f"(SELECT count(*) FROM \"{schema}\".job_history WHERE error_type = 'WorkerLostError')"
    ).fetchone()
    # A job whose write committed was never run again: its SUCCESS is its
    # last attempt, every earlier one was lost before it committed.
    assert conn.execute(
        f'SELECT count(*) FROM "{schema}".job_history AS h JOIN "{schema}".jobs AS j '
        f"ON j.id = h.job_id WHERE h.state = 'SUCCESS' AND h.attempt <> j.attempts"
    ).fetchone() == (0,)
    print(
        f"\natomic kill -9: {JOBS} jobs, {kills} kills, {rerun} jobs run again after a kill "
        f"({lost} lost attempts rolled back); rows per job: exactly 1"
    )
    assert kills >= 5 and rerun > 0
