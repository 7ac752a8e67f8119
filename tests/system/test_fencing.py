"""Fencing: a worker presumed dead starts none of the jobs it still holds.

A network partition, played with SIGSTOP: the stopped worker misses its
heartbeats, another worker rescues its jobs and runs them, and the stopped
worker resumes. It used to start its prefetched jobs at once (17 of 21
already-rescued jobs ran twice in an adversarial run); now it hands them back
unstarted, logs each refused outcome, and registers again under a new id.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import psycopg

from jobqueue import states
from tests.conftest import wait_for

FAST = ("--heartbeat-interval", "0.2", "--lease-ttl", "1.5")


def test_a_worker_presumed_dead_starts_none_of_the_jobs_it_held(
    jq: Any, schema: str, conn: Any, dsn: str, start_worker: Any
) -> None:
    conn.execute(f'CREATE TABLE "{schema}".runs (key text NOT NULL)')
    table = f"{schema}.runs"
    cut = start_worker("--concurrency", "1", *FAST)
    old_id = conn.execute(
        f'SELECT id::text FROM "{schema}".workers WHERE pid = %s', [cut.proc.pid]
    ).fetchone()[0]
    warmup = jq.app.enqueue_many(jq.add, [(i, i) for i in range(300)])
    warmup[-1].get(timeout=30)  # short jobs: the worker now claims well ahead
    with psycopg.connect(dsn) as tx:  # one commit: one claim takes them all
        blocker = jq.sleep.apply_async((2.0,), connection=tx)
        noted = [jq.note_run.apply_async((table, f"k{i}"), connection=tx) for i in range(20)]
    wait_for(lambda: blocker.state == states.STARTED, 20, "the blocker to start")
    held = conn.execute(
        f'SELECT count(*) FROM "{schema}".job_lease WHERE worker_id = %s', [old_id]
    ).fetchone()
    assert held == (21,)  # 1 running, 20 waiting in its buffer

    os.kill(cut.proc.pid, signal.SIGSTOP)  # the partition
    try:
        rescuer = start_worker("--concurrency", "4", *FAST)
        wait_for(lambda: all(r.state == states.SUCCESS for r in noted), 30, "the rescue")
    finally:
        os.kill(cut.proc.pid, signal.SIGCONT)  # the partition heals
    # Back: it finds its row gone ("... again" in any release's words).
    wait_for(lambda: "again" in cut.log, 20, "the cut worker's return")
    assert blocker.get(timeout=30) == 2.0  # run again by the rescuer, recorded once
    runs = dict(conn.execute(f'SELECT key, count(*) FROM "{schema}".runs GROUP BY key').fetchall())
    assert runs == {f"k{i}": 1 for i in range(20)}  # every side effect exactly once
    assert "registers again as a new worker" in cut.log
    assert "fenced" in cut.log
    # What it finished or handed back after the rescue is refused, one line each
    # (the job its slot held: the blocker, or whichever the claim listed first).
    assert "refused: worker" in cut.log
    assert rescuer.proc.poll() is None and cut.proc.poll() is None
    assert jq.add.delay(5, 5).get(timeout=20) == 10  # both still serve
