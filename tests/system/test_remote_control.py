"""Remote control and inspect against live worker processes: one in the
thread pool, one in the process pool, answering over SQL and NOTIFY; a worker
that hangs must not make a call hang."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from jobqueue import JobQueue

from ..conftest import ROOT, wait_for


def _workers_row(conn: Any, schema: str, hostname: str) -> tuple[Any, ...]:
    row = conn.execute(
        f'SELECT concurrency, queues, pool, tasks FROM "{schema}".workers WHERE hostname = %s',
        (hostname,),
    ).fetchone()
    assert row is not None, f"no workers row for {hostname}"
    return tuple(row)


def _state(conn: Any, schema: str, job_id: str) -> str:
    row = conn.execute(f'SELECT state FROM "{schema}".all_jobs WHERE id = %s', (job_id,)).fetchone()
    return str(row[0]) if row else "?"


def _cli(dsn: str, schema: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "JOBQUEUE_DSN"}
    command = [sys.executable, "-m", "jobqueue", "-A", "tests.apps:app", "--dsn", dsn]
    return subprocess.run(
        [*command, "--schema", schema, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_inspect_and_control_two_live_workers(
    jq: Any, dsn: str, schema: str, conn: Any, start_worker: Any
) -> None:
    app: JobQueue = jq.app
    threads = start_worker("-n", "w-threads", "-c", "1", "--heartbeat-interval", "1")
    procs = start_worker("-n", "w-procs", "-c", "1", "-P", "processes", "--heartbeat-interval", "1")
    inspect = app.control.inspect(timeout=5)

    # ping: both answer, and the call returns once both have (not at the timeout).
    started = time.monotonic()
    assert inspect.ping() == {"w-threads": {"ok": "pong"}, "w-procs": {"ok": "pong"}}
    assert time.monotonic() - started < 3

    registered = inspect.registered()
    assert registered is not None and set(registered) == {"w-threads", "w-procs"}
    assert "add" in registered["w-threads"] and "sleep" in registered["w-procs"]
    # ...and the same from SQL (the workers table), for dashboards.
    assert "add" in _workers_row(conn, schema, "w-procs")[3]
    assert _workers_row(conn, schema, "w-procs")[2] == "processes"

    stats = inspect.stats()
    assert stats is not None
    assert stats["w-threads"]["pool"]["implementation"] == "threads"
    assert stats["w-procs"]["pool"]["implementation"] == "processes"
    assert len(stats["w-procs"]["pool"]["processes"]) == 1
    assert stats["w-threads"]["broker"]["transport"] == "postgresql"
    assert "password" not in json.dumps(stats)

    # active: a long job on each worker shows where it runs.
    long = [jq.sleep.delay(60) for _ in range(2)]
    wait_for(lambda: all(_state(conn, schema, r.id) == "STARTED" for r in long), 30, "both run")
    active = inspect.active()
    assert active is not None
    running = {host: [job["id"] for job in jobs] for host, jobs in active.items()}
    assert sorted(running["w-threads"] + running["w-procs"]) == sorted(r.id for r in long)
    one = active["w-procs"][0]
    assert one["name"] == "sleep" and one["args"] == [60] and one["time_start"] > 0
    assert one["delivery_info"]["routing_key"] == "default"
    assert inspect.scheduled() == {"w-threads": [], "w-procs": []}
    reserved = inspect.reserved()
    assert reserved is not None and set(reserved) == {"w-threads", "w-procs"}

    # pool_grow: the process pool gets a second slot, which takes a new job
    # while the first one still runs; the workers table says so.
    assert app.control.pool_grow(1, destination=["w-procs"], reply=True, timeout=5) == [
        {"w-procs": {"ok": "pool will grow to 2"}}
    ]
    assert _workers_row(conn, schema, "w-procs")[0] == 2
    extra = jq.sleep.delay(60)
    wait_for(lambda: _state(conn, schema, extra.id) == "STARTED", 30, "the grown slot to run")
    stats = inspect.stats()
    assert stats is not None and stats["w-procs"]["pool"]["max-concurrency"] == 2
    assert len(stats["w-procs"]["pool"]["processes"]) == 2
    assert app.control.pool_shrink(1, destination=["w-procs"], reply=True, timeout=5) == [
        {"w-procs": {"ok": "pool will shrink to 1"}}
    ]
    assert _workers_row(conn, schema, "w-procs")[0] == 1
    # The last slot never goes.
    assert app.control.pool_shrink(5, destination=["w-threads"], reply=True, timeout=5) == [
        {"w-threads": {"ok": "pool will shrink to 1"}}
    ]
    app.control.cancel([*(r.id for r in long), extra.id], terminate=True)

    # add_consumer / cancel_consumer: the thread worker takes queue "extra" too.
    replies = app.control.add_consumer("extra", destination="w-threads", reply=True, timeout=5)
    assert replies == [{"w-threads": {"ok": "add consumer extra"}}]
    assert _workers_row(conn, schema, "w-threads")[1] == ["default", "extra"]
    assert inspect.active_queues() == {
        "w-threads": [
            {"name": "default", "routing_key": "default"},
            {"name": "extra", "routing_key": "extra"},
        ],
        "w-procs": [{"name": "default", "routing_key": "default"}],
    }
    assert jq.whoami.apply_async(queue="extra").get(timeout=30)["hostname"] == "w-threads"
    replies = app.control.cancel_consumer("extra", destination="w-threads", reply=True, timeout=5)
    assert replies == [{"w-threads": {"ok": "no longer consuming from 'extra'"}}]
    assert _workers_row(conn, schema, "w-threads")[1] == ["default"]

    # The CLI says the same.
    out = _cli(dsn, schema, "inspect", "ping", "--json", "-t", "5")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"w-threads": {"ok": "pong"}, "w-procs": {"ok": "pong"}}
    out = _cli(dsn, schema, "inspect", "registered", "-d", "w-procs", "-t", "5")
    assert out.returncode == 0 and "-> w-procs: OK" in out.stdout and "* add" in out.stdout
    assert "w-threads" not in out.stdout

    # shutdown: a warm stop of one worker; the other stays.
    out = _cli(dsn, schema, "control", "shutdown", "-d", "w-threads", "--json", "-t", "5")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"w-threads": {"ok": "shutting down"}}
    assert threads.proc.wait(30) == 0
    assert inspect.ping() == {"w-procs": {"ok": "pong"}}
    assert procs.proc.poll() is None


def test_a_hung_worker_does_not_make_inspect_hang(jq: Any, conn: Any, start_worker: Any) -> None:
    """A stopped (SIGSTOP) worker keeps its lease but cannot answer: the call
    returns the others' replies at its timeout; a worker that is gone (its
    row deleted by a clean exit) is not waited for at all."""
    alive = start_worker("-n", "alive")
    hung = start_worker("-n", "hung")
    gone = start_worker("-n", "gone")
    assert gone.terminate() == 0
    os.kill(hung.proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert jq.app.control.inspect(timeout=1.5).ping() == {"alive": {"ok": "pong"}}
        took = time.monotonic() - started
        assert 1.5 <= took < 3.5, took
        # Nobody at all: None, at once (nobody is expected).
        started = time.monotonic()
        assert jq.app.control.inspect(destination="gone", timeout=5).ping() is None
        assert time.monotonic() - started < 2
    finally:
        os.kill(hung.proc.pid, signal.SIGCONT)
    # Back, it answers requests sent while it was stopped only if they are
    # still live; a fresh ping reaches it.
    assert jq.app.control.inspect(timeout=10).ping() == {
        "alive": {"ok": "pong"},
        "hung": {"ok": "pong"},
    }
    assert alive.proc.poll() is None


def test_rate_limit_set_at_run_time_throttles_a_task_that_declares_none(
    jq: Any, dsn: str, schema: str, conn: Any, start_worker: Any
) -> None:
    """rate_limit works on any task, for every worker, and outlives a worker
    restart (a starting worker's sync of declared limits keeps it)."""
    out = _cli(dsn, schema, "control", "rate_limit", "add", "4/s")
    assert out.returncode == 0, out.stderr
    assert "add: 4 jobs/s" in out.stdout
    start_worker("-c", "4")  # registers: its sync must not undo the limit
    results = [jq.add.delay(i, i) for i in range(12)]
    assert [r.get(timeout=60) for r in results] == [2 * i for i in range(12)]
    row = conn.execute(
        f"""SELECT extract(epoch FROM max(started_at) - min(started_at))
            FROM "{schema}".all_jobs WHERE task = 'add'"""
    ).fetchone()
    # 12 jobs at 4/s with a bucket of 1: at least 11 / 4 = 2.75 s apart.
    assert row is not None and float(row[0]) >= 2.5, row
    limits = {x["task"]: x for x in jq.app.control.limits()}
    assert limits["add"]["rate_per_second"] == 4.0 and limits["add"]["rate_set_by"]
    assert limits["add"]["declared_rate"] is None
    assert jq.app.control.reset_limits("add") is True
    assert "add" not in {x["task"] for x in jq.app.control.limits()}  # add declares none
