"""What the events stream costs the drain: no listener against a listener.

    python -m benchmarks.events --dsn postgresql://postgres@127.0.0.1:5446/postgres \\
        [--runs 5] [--jobs 50000] [--workers 1]

Each run drains ``--jobs`` no-op jobs (``throughput.Bench.drain``'s way: an
idle worker, one ``enqueue_many`` commit, first start to last finish, a fresh
schema) in two modes, interleaved and alternating which goes first: with
nobody listening, and with a real ``jobqueue events --json`` subprocess
attached (started and listening before the enqueue), whose output a thread of
this process reads and counts. A listening run also says how many events the
listener printed and how long after the last job finished it printed the
last one (its lag). Prints every run, then the medians, their spread and the
ratio (listener ÷ no listener). ``--listener-nice N`` runs the listener at
that nice level (a monitor on a shared host; default 0, like anyone's shell).
``--lock-only`` adds a third mode: the events lock held on a bare connection
and nobody reading, so the statements build and send their NOTIFYs and
nothing else happens: the workers' share of the cost, without the
listener's own work.

For "no listener" against the code before events, use ``benchmarks.ab_drain``
with the two checkouts. Use a server with default settings (autovacuum on),
never one tuned for a test suite, and a machine as quiet as you can get.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg

from benchmarks.throughput import Bench, bench_database
from jobqueue.sql import lock_classes

ROOT = Path(__file__).resolve().parent.parent
EVENTS_PER_JOB = 3  # task-received, task-started, task-succeeded


class LockOnly:
    """The statements' own share: the events lock held, nobody LISTENing (the
    NOTIFYs are sent, and dropped by the server)."""

    def __init__(self, dsn: str, schema: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute("SELECT pg_advisory_lock(%s, 0)", (lock_classes(schema)["events"],))

    def stop(self) -> None:
        self.conn.close()


class Listener:
    """``jobqueue events --json`` in a subprocess; a thread counts its task events."""

    def __init__(self, dsn: str, schema: str, nice: int) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("JOBQUEUE_DSN", None)
        command = [sys.executable, "-m", "jobqueue", "--dsn", dsn, "--schema", schema]
        command += ["events", "--json"]
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=(lambda: os.nice(nice)) if nice else None,
        )
        self.lines = 0
        self.last_at = 0.0
        self.ready = threading.Event()
        threading.Thread(target=self._stderr, daemon=True).start()
        threading.Thread(target=self._stdout, daemon=True).start()
        if not self.ready.wait(60):
            raise RuntimeError("the listener did not start")

    def _stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if b"listening" in line:
                self.ready.set()
            else:
                sys.stderr.write("listener: " + line.decode(errors="replace"))

    def _stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(b'{"type": "task-'):
                self.lines += 1
                self.last_at = time.time()

    def wait_for(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.lines < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.lines >= count

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def drain(bench: Bench, n: int, workers: int, mode: str, nice: int, tag: str) -> dict[str, float]:
    schema = f"bench_events_{tag}"
    app, noop = bench.schema(schema)
    procs = [bench.start_worker(schema) for _ in range(workers)]
    listener = Listener(bench.dsn, schema, nice) if mode == "listener" else None
    held = LockOnly(bench.dsn, schema) if mode == "lock only" else None
    try:
        app.enqueue_many(noop, [() for _ in range(n)])
        query = (
            f'SELECT count(*), min(started_at), max(finished_at) FROM "{schema}".jobs '
            "WHERE state = 'SUCCESS'"
        )
        deadline = time.monotonic() + max(120.0, n / 100)
        while True:
            done, first, last = bench.sql(query)
            if done >= n:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {done:,}/{n:,} jobs done before the deadline")
            if any(proc.poll() is not None for proc in procs):
                raise RuntimeError("a worker exited")
            time.sleep(0.1)
        out = {"rate": n / (last - first).total_seconds()}
        if listener is not None:
            caught_up = listener.wait_for(EVENTS_PER_JOB * n, timeout=max(120.0, n / 200))
            out["events"] = float(listener.lines)
            out["lag"] = (listener.last_at - last.timestamp()) if caught_up else float("nan")
        return out
    finally:
        if listener is not None:
            listener.stop()
        if held is not None:
            held.stop()
        bench.stop_workers()
        app.close()
        bench.apps.remove(app)
        with psycopg.connect(bench.dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.events", description=__doc__)
    parser.add_argument("--dsn", required=True, help="a maintenance database on the server")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--listener-nice", type=int, default=0)
    parser.add_argument(
        "--lock-only",
        action="store_true",
        help="a third mode: the events lock held and nobody reading (the statements' share)",
    )
    options = parser.parse_args(argv)
    modes = ["no listener", "listener"] + (["lock only"] if options.lock_only else [])
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    with bench_database(options.dsn, "events") as dsn:
        bench = Bench(dsn)
        try:
            for run in range(options.runs):
                order = modes if run % 2 == 0 else modes[::-1]
                for mode in order:
                    got = drain(
                        bench,
                        options.jobs,
                        options.workers,
                        mode,
                        options.listener_nice,
                        f"{run}_{modes.index(mode)}",
                    )
                    rates[mode].append(got["rate"])
                    extra = ""
                    if "events" in got:
                        extra = f" ({got['events']:,.0f} events, last {got['lag']:.2f}s after)"
                    print(f"run {run + 1} {mode}: {got['rate']:,.0f} jobs/s{extra}", flush=True)
        finally:
            bench.close()
    print(
        f"\n{options.jobs:,} no-op jobs, {options.workers} worker(s), {options.runs} runs "
        f"each, interleaved; listener nice {options.listener_nice}; jobs/s"
    )
    print("| mode | median | min | max | every run |\n|---|---:|---:|---:|---|")
    for mode, values in rates.items():
        every = ", ".join(f"{v:,.0f}" for v in values)
        print(
            f"| {mode} | {statistics.median(values):,.0f} | {min(values):,.0f} | "
            f"{max(values):,.0f} | {every} |"
        )
    base = statistics.median(rates["no listener"])
    for mode in modes[1:]:
        print(f"{mode} / no listener = {statistics.median(rates[mode]) / base:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
