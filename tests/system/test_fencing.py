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
from pathlib import Path
from typing import Any

import psycopg
import pytest

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


def _child_pids(pid: int) -> set[int]:
    """The process pool's children of ``pid`` (Linux /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == pid and b"spawn_main" in cmdline:
            found.add(int(stat.parent.name))
    return found


@pytest.mark.parametrize("pool", ["processes", "threads"])
def test_a_fenced_worker_stops_its_running_job_where_its_pool_can(
    jq: Any, schema: str, conn: Any, start_worker: Any, tmp_path: Path, pool: str
) -> None:
    """The process pool kills the child of a job running when its worker is
    fenced: the job's side effect never happens there, and the job runs once,
    after its rescue. A thread cannot be stopped: its run finishes (its side
    effect happens: a second one) and its outcome is refused, one line."""
    conn.execute(f'CREATE TABLE "{schema}".runs (job uuid, host text, pid int)')
    gate = tmp_path / "gate"
    gate.touch()  # the job waits before its side effect until the test opens this
    cut = start_worker("--pool", pool, "--concurrency", "1", "--hostname", "cut", *FAST)
    old_id = conn.execute(
        f'SELECT id::text FROM "{schema}".workers WHERE pid = %s', [cut.proc.pid]
    ).fetchone()[0]
    job = jq.effect.delay(f"{schema}.runs", str(gate))
    held = wait_for(lambda: list(tmp_path.glob(f"gate~cut~{job.id}~*")), 30, "the job to start")
    runner_pid = int(held[0].name.rsplit("~", 1)[1])  # a pool child, or the worker itself

    os.kill(cut.proc.pid, signal.SIGSTOP)  # a partition: its lease lapses
    try:
        rescuer = start_worker("--concurrency", "1", "--hostname", "rescuer", *FAST)
        wait_for(lambda: list(tmp_path.glob(f"gate~rescuer~{job.id}~*")), 30, "the rescue")
    finally:
        os.kill(cut.proc.pid, signal.SIGCONT)
    wait_for(lambda: "registers again as a new worker" in cut.log, 20, "the cut worker's return")
    if pool == "processes":
        wait_for(lambda: not Path(f"/proc/{runner_pid}").exists(), 10, "its child to be killed")
        # The fence logs its line once the pool has stopped the child: the
        # child can be seen dead (and its loss logged) a moment before.
        wait_for(lambda: "1 running job(s) stopped, 0 finish" in cut.log, 10, "the fence's line")
        assert "its process was killed: the worker is fenced" in cut.log
    gate.unlink()  # whoever still holds the job may now do its side effect
    assert job.get(timeout=30) == job.id
    wait_for(lambda: f"of job {job.id} (attempt 1) refused" in cut.log, 20, "the refusal line")
    assert cut.log.count(f"of job {job.id} (attempt 1) refused") == 1
    runs = conn.execute(f'SELECT host, pid FROM "{schema}".runs ORDER BY host').fetchall()
    if pool == "processes":
        assert runs == [("rescuer", runs[0][1])]  # once, by the rescuer; never by the killed child
    else:  # the thread finished its run once the gate opened: documented, refused
        assert runs == [("cut", cut.proc.pid), ("rescuer", runs[1][1])]
    new_id = conn.execute(
        f'SELECT id::text FROM "{schema}".workers WHERE pid = %s', [cut.proc.pid]
    ).fetchone()[0]
    assert new_id != old_id
    # Alone now, the cut worker still serves (its pool replaced the killed child).
    assert rescuer.terminate() == 0
    ran_in = jq.pid.delay().get(timeout=30)
    if pool == "processes":
        assert ran_in in _child_pids(cut.proc.pid) and ran_in != runner_pid
    else:
        assert ran_in == cut.proc.pid
