"""depends_on under kill -9: dependents start after their dependencies, once.

100 dependents each wait for 3 jobs; every job is an atomic insert (so a
row exists exactly once per job that committed), and worker processes of
both pools are killed with SIGKILL at random moments and replaced. Every
dependent must run exactly once, never before all three of its
dependencies finished, and nothing may be left waiting."""

from __future__ import annotations

import random
import signal
import time
from typing import Any

from jobqueue import states
from tests.conftest import unsettled, wait_for

GROUPS = 100
FAST_LEASE = ("--lease-ttl", "2", "--heartbeat-interval", "0.5")
APP = "tests.apps_atomic:app"


def test_kill_9_dependents_run_once_after_their_dependencies(
    ja: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    pools = [("--pool", "threads", "-c", "6"), ("--pool", "processes", "-c", "3")]
    live = [start_worker(*pool, *FAST_LEASE, app=APP) for pool in pools]
    dependents = {}
    for g in range(GROUPS):
        deps = [ja.insert.apply_async((g * 10 + k, 0.2)) for k in range(3)]
        after = ja.insert.apply_async((g * 10 + 9,), depends_on=deps)
        dependents[after.id] = [d.id for d in deps]
    rng = random.Random(18)
    kills = 0
    deadline = time.monotonic() + 180
    while unsettled(conn, schema) > GROUPS // 4 and time.monotonic() < deadline:
        time.sleep(rng.uniform(0.2, 0.8))  # the fault's timing, not a synchronisation
        index = rng.randrange(len(live))
        live[index].proc.send_signal(signal.SIGKILL)
        live[index].proc.wait(10)
        kills += 1
        live[index] = start_worker(*pools[index], *FAST_LEASE, app=APP)
    wait_for(lambda: unsettled(conn, schema) == 0, 180, "every job to settle")

    found = conn.execute(f'SELECT state, count(*) FROM "{schema}".jobs GROUP BY 1').fetchall()
    assert found == [(states.SUCCESS, GROUPS * 4)]
    rows = conn.execute(f'SELECT count(*), count(DISTINCT job) FROM "{schema}".effects').fetchone()
    assert rows == (GROUPS * 4, GROUPS * 4)  # every job's write, exactly once
    early = 0
    for dependent, deps in dependents.items():
        started = conn.execute(
            f'SELECT started_at FROM "{schema}".jobs WHERE id = %s', [dependent]
        ).fetchone()[0]
        last = conn.execute(
            f'SELECT max(finished_at) FROM "{schema}".jobs WHERE id = ANY(%s::uuid[])', [deps]
        ).fetchone()[0]
        early += started < last
    assert early == 0
    left = conn.execute(
        f'SELECT (SELECT count(*) FROM "{schema}".job_waits), '
        f'(SELECT count(*) FROM "{schema}".job_dependencies)'
    ).fetchone()
    assert left == (0, 0)
    rerun = conn.execute(f'SELECT count(*) FROM "{schema}".jobs WHERE attempts > 1').fetchone()
    print(
        f"\ndepends_on under kill -9: {GROUPS} dependents of 3 jobs each, {kills} kills, "
        f"{rerun[0]} jobs run again after a kill; every dependent ran once, after its 3"
    )
    assert kills >= 3
