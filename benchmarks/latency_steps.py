"""Where an idle worker's enqueue-to-start time goes, step by step.

    python -m benchmarks.latency_steps [--dsn DSN] [--jobs 300] [--interval 0.02]
        [-- worker options]

One worker (``benchmarks/latency_steps_app.py``, default settings) waits on
an empty queue; this process sends one ``delay(time.time())`` every
``--interval`` seconds. The worker notes when its idle wait returned, when
each claim that took a job began and ended, and when the task began; each
job's time from the call to its start is split into:

- the ``delay()`` call (its insert, commit and reply);
- call to wake-up: from the call's start until the worker's wait returned
  (the commit, the NOTIFY's delivery, the process's wake-up);
- wake-up to claim: the loop's own work before the claim statement;
- the claim (the statement, its commit, reading the row, handing it to a slot);
- claim to task: the slot picking the job up and the task starting.

Prints p50 and p99 of each, and of the whole. Without ``--dsn`` it starts a
stock server of its own (``benchmarks/stockserver.py``), as every benchmark
should be run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from benchmarks.peers._common import scratch_database
from benchmarks.stockserver import stock_server
from jobqueue import migrate

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("delay() call", "call to wake-up", "wake-up to claim", "claim", "claim to task", "total")


def measure(
    dsn: str, jobs: int, interval: float, worker_args: list[str]
) -> list[tuple[float, ...]]:
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace"
        trace.write_text("")
        env = {**os.environ, "LATENCY_STEPS_TRACE": str(trace), "PYTHONPATH": str(ROOT)}
        env.pop("JOBQUEUE_DSN", None)
        os.environ["LATENCY_STEPS_TRACE"] = ""  # this process notes nothing
        from benchmarks.latency_steps_app import app, stamp

        app.conf.dsn = dsn
        command = [sys.executable, "-m", "jobqueue", "-A", "benchmarks.latency_steps_app:app"]
        command += ["--dsn", dsn, "worker", "--loglevel", "warning", *worker_args]
        worker = subprocess.Popen(command, env=env, cwd=ROOT)
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                deadline = time.monotonic() + 60
                registered = "SELECT count(*) FROM jobqueue.workers"
                while not (conn.execute(registered).fetchone() or (0,))[0]:
                    if time.monotonic() > deadline or worker.poll() is not None:
                        raise RuntimeError("the worker did not start")
                    time.sleep(0.05)
                for _ in range(5):  # warm-up: connections, prepared statements
                    stamp.delay(time.time())
                    time.sleep(interval)
                _wait_for_tasks(trace, 5)
                conn.execute("CHECKPOINT")
            trace.write_text("")
            calls: dict[str, float] = {}
            tick = time.perf_counter()
            for _ in range(jobs):
                sent = time.time()
                stamp.delay(sent)
                calls[f"{sent:.6f}"] = time.time() - sent
                tick += interval
                time.sleep(max(0.0, tick - time.perf_counter()))
            _wait_for_tasks(trace, jobs)
        finally:
            worker.terminate()
            worker.wait(30)
            app.close()
        return _split(trace.read_text().split("\n"), calls)


def _wait_for_tasks(trace: Path, count: int) -> None:
    deadline = time.monotonic() + 60
    while trace.read_text().count("task ") < count:
        if time.monotonic() > deadline:
            raise RuntimeError("the tasks did not all run")
        time.sleep(0.05)


def _split(lines: list[str], calls: dict[str, float]) -> list[tuple[float, ...]]:
    """Each task's steps: the claim that took it is the last one before its
    start, and the wake-up the last one before that claim."""
    rows: list[tuple[float, ...]] = []
    woke = claim_began = claim_ended = None
    for line in lines:
        kind, *fields = line.split() or [""]
        if kind == "woke":
            woke = float(fields[0])
        elif kind == "claim":
            claim_began, claim_ended = float(fields[0]), float(fields[1])
        elif kind == "task" and None not in (woke, claim_began, claim_ended):
            assert woke is not None and claim_began is not None and claim_ended is not None
            started, sent = float(fields[0]), float(fields[1])
            if woke > claim_began:  # the claim came from a loop that did not wait
                woke = claim_began
            rows.append(
                (
                    calls.get(fields[1], float("nan")),
                    woke - sent,
                    claim_began - woke,
                    claim_ended - claim_began,
                    started - claim_ended,
                    started - sent,
                )
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency_steps", description=__doc__)
    parser.add_argument("--dsn", help="a maintenance database (default: a stock server of its own)")
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("worker_args", nargs="*", help="after --: options of jobqueue worker")
    options = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        server = options.dsn or stack.enter_context(stock_server())
        dsn = stack.enter_context(scratch_database(server, "latency"))
        migrate.upgrade(dsn, "jobqueue")
        rows = measure(dsn, options.jobs, options.interval, options.worker_args)
    print(f"{len(rows)} jobs, one every {options.interval * 1000:.0f} ms, an idle worker (ms)")
    print("| step | p50 | p99 |\n|---|---:|---:|")
    for name, column in zip(STEPS, zip(*rows, strict=True), strict=True):
        ordered = sorted(column)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
        print(f"| {name} | {statistics.median(ordered) * 1000:.2f} | {p99 * 1000:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
