"""Batches under kill -9: on_complete runs exactly once, with the right counts.

A batch of 300 atomic inserts (a row exists exactly once per job that
committed) is added in several transactions while workers of both pools
drain it and are killed with SIGKILL at random moments and replaced. Every
member must be counted once (the counting commits with the completion), the
batch must complete once, and its on_complete (itself an atomic insert)
must run exactly once with the batch's totals."""

from __future__ import annotations

import random
import signal
import time
from typing import Any

from jobqueue import states
from tests.conftest import unsettled, wait_for

MEMBERS = 300
CHUNK = 50
FAST_LEASE = ("--lease-ttl", "2", "--heartbeat-interval", "0.5")
APP = "tests.apps_atomic:app"


def test_kill_9_on_complete_runs_once_with_the_right_counts(
    ja: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    pools = [("--pool", "threads", "-c", "6"), ("--pool", "processes", "-c", "3")]
    live = [start_worker(*pool, *FAST_LEASE, app=APP) for pool in pools]
    batch = ja.app.batch(on_complete=ja.batch_done.s())
    rng = random.Random(19)
    kills = 0

    def kill_one() -> None:
        nonlocal kills
        index = rng.randrange(len(live))
        live[index].proc.send_signal(signal.SIGKILL)
        live[index].proc.wait(10)
        kills += 1
        live[index] = start_worker(*pools[index], *FAST_LEASE, app=APP)

    for start in range(0, MEMBERS, CHUNK):  # added while the first ones drain
        batch.add_many(ja.insert, [(n, 0.5) for n in range(start, start + CHUNK)])
        if start == MEMBERS // 2:
            kill_one()
    assert batch.close() in ("CLOSED", "DONE")
    deadline = time.monotonic() + 180
    while unsettled(conn, schema) > MEMBERS // 5 and time.monotonic() < deadline:
        time.sleep(rng.uniform(0.2, 0.8))  # the fault's timing, not a synchronisation
        kill_one()
    wait_for(lambda: batch.progress().completed, 180, "the batch to complete")
    callback = batch.on_complete
    assert callback is not None
    counts = {"batch": batch.id, "total": MEMBERS, "succeeded": MEMBERS, "failed": 0, "revoked": 0}
    assert callback.get(timeout=120) == counts
    wait_for(lambda: unsettled(conn, schema) == 0, 180, "every job to settle")

    assert batch.progress() == ("DONE", MEMBERS, 0, MEMBERS, 0, 0, True, True)
    found = conn.execute(f'SELECT state, count(*) FROM "{schema}".jobs GROUP BY 1').fetchall()
    assert found == [(states.SUCCESS, MEMBERS + 1)]
    spawned = conn.execute(
        f"SELECT count(*) FROM \"{schema}\".jobs WHERE task = 'atomic.batch_done'"
    ).fetchone()
    assert spawned == (1,)  # on_complete spawned once
    rows = conn.execute(f'SELECT count(*), count(DISTINCT job) FROM "{schema}".effects').fetchone()
    assert rows == (MEMBERS + 1, MEMBERS + 1)  # every job's write, exactly once
    ran = conn.execute(f'SELECT n FROM "{schema}".effects WHERE job = %s', [callback.id]).fetchall()
    assert ran == [(MEMBERS,)]  # on_complete ran once, with the batch's total
    left = conn.execute(f'SELECT count(*) FROM "{schema}".batch_members').fetchone()
    assert left == (0,)
    rerun = conn.execute(f'SELECT count(*) FROM "{schema}".jobs WHERE attempts > 1').fetchone()
    print(
        f"\nbatch under kill -9: {MEMBERS} members added in {MEMBERS // CHUNK} transactions, "
        f"{kills} kills, {rerun[0]} jobs run again after a kill; on_complete ran once"
    )
    assert kills >= 3
