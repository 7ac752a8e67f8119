"""The process pool hands each child its next job while the child runs one
(so the child never waits on its slot's thread in between): that job is not
started, and is treated as such when it is revoked, when the worker stops and
when the child is killed. Real workers, real children."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from jobqueue import TaskRevokedError, states
from tests.conftest import wait_for

DEBUG = ("--loglevel", "debug")  # the slot's line when it hands a job ahead


def _held_ahead(
    jq: Any, schema: str, conn: Any, start_worker: Any, gate: Path, later: int = 1
) -> tuple[Any, Any, list[Any]]:
    """A worker (process pool, one slot) running a job held at ``gate`` before
    its side effect, and ``later`` more jobs handed to its child ahead. The
    worker first runs 300 short jobs, so that it holds more jobs than it runs
    (its estimate of a job's run time starts at a second, and a worker that
    expects long jobs claims for its free slots alone)."""
    worker = start_worker("--pool", "processes", "--concurrency", "1", *DEBUG)
    conn.execute(f'CREATE TABLE "{schema}".runs (job uuid, host text, pid int)')
    warm = jq.app.enqueue_many(jq.add, [(i, i) for i in range(300)])
    assert [r.get(timeout=60) for r in warm] == [2 * i for i in range(300)]
    gate.touch()
    first = jq.effect.delay(f"{schema}.runs", str(gate))
    ahead = [jq.effect.delay(f"{schema}.runs") for _ in range(later)]
    wait_for(lambda: list(gate.parent.glob(f"gate~*~{first.id}~*")), 30, "the first to run")
    wanted = [f"job {job.id} handed to its child ahead" for job in ahead]
    wait_for(lambda: all(line in worker.log for line in wanted), 30, "the jobs to go ahead")
    return worker, first, ahead


def _runs(conn: Any, schema: str) -> list[str]:
    rows = conn.execute(f'SELECT job::text FROM "{schema}".runs ORDER BY job').fetchall()
    return [row[0] for row in rows]


def test_a_job_handed_ahead_and_revoked_never_runs(
    jq: Any, schema: str, conn: Any, start_worker: Any, tmp_path: Path
) -> None:
    worker, first, (second,) = _held_ahead(jq, schema, conn, start_worker, tmp_path / "gate")
    second.revoke()
    wait_for(lambda: "to be skipped (revoked)" in worker.log, 30, "the skip to be asked")
    (tmp_path / "gate").unlink()
    assert first.get(timeout=30) == first.id
    with pytest.raises(TaskRevokedError, match="before it started"):
        second.get(timeout=30)
    assert _runs(conn, schema) == [first.id]
    assert worker.proc.poll() is None


def test_warm_shutdown_hands_back_the_job_a_child_holds_ahead(
    jq: Any, schema: str, conn: Any, start_worker: Any, tmp_path: Path
) -> None:
    worker, first, (second,) = _held_ahead(jq, schema, conn, start_worker, tmp_path / "gate")
    worker.proc.send_signal(signal.SIGTERM)
    wanted = "to be skipped (the worker is stopping)"
    wait_for(lambda: wanted in worker.log, 30, "the skip to be asked")
    (tmp_path / "gate").unlink()  # the running job finishes within the grace period
    assert worker.proc.wait(30) == 0
    assert first.get(timeout=30) == first.id
    assert second.state == states.PENDING  # back in the queue, not run
    assert _runs(conn, schema) == [first.id]
    start_worker("--pool", "processes", "--concurrency", "1")
    assert second.get(timeout=30) == second.id
    assert sorted(_runs(conn, schema)) == sorted([first.id, second.id])


def test_the_job_ahead_of_a_terminated_one_runs_in_a_new_child(
    jq: Any, schema: str, conn: Any, start_worker: Any, tmp_path: Path
) -> None:
    worker, first, (second, third) = _held_ahead(
        jq, schema, conn, start_worker, tmp_path / "gate", later=2
    )
    first.revoke(terminate=True)  # kills the child holding all three
    with pytest.raises(TaskRevokedError):
        first.get(timeout=30)
    for later in (second, third):  # handed back unstarted, then run once
        assert later.get(timeout=30) == later.id
    assert worker.log.count("handed to a child that was stopped (terminate)") == 2
    assert _runs(conn, schema) == sorted([second.id, third.id])  # never the first's effect
    rows = conn.execute(
        f'SELECT attempts FROM "{schema}".jobs WHERE id IN (%s, %s)', (second.id, third.id)
    ).fetchall()
    assert rows == [(1,), (1,)]  # their hand-back did not count as an attempt
