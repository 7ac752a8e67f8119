"""Operations under load: purging 1,000,000 waiting jobs while workers run (issue 21).

    .venv/bin/python -m benchmarks.operations --dsn postgresql://postgres@127.0.0.1:5436/postgres \\
        [--jobs 1000000] [--rate 500] [--before 60] [--repeat 3]

Run it on a stock PostgreSQL 15 cluster of its own, not on a tuned or shared
server (this machine's server at 5432 runs with ``autovacuum=off``)::

    pg_createcluster 15 opsbench -p 5436
    # /etc/postgresql/15/opsbench/pg_hba.conf: the "host" lines' method -> trust
    pg_ctlcluster --skip-systemctl-redirect 15 opsbench start
    .venv/bin/python -m benchmarks.operations --dsn postgresql://postgres@127.0.0.1:5436/postgres
    pg_dropcluster --stop 15 opsbench

Each repetition, on a database of its own (created and dropped here):

1. ``--jobs`` waiting no-op jobs are loaded into queue ``doomed`` with
   ``app.enqueue_many`` in chunks of 100,000 (COPY), then the job tables are
   vacuumed and analysed, so autovacuum does not start on the load mid-run;
2. two ``jobqueue worker`` processes (``-Q live -c 4``, thread pool) run a
   steady stream of no-op jobs that four producer threads enqueue into queue
   ``live`` with ``delay()`` at ``--rate`` jobs/s;
3. after a warm-up and ``--before`` seconds, ``doomed`` is purged with
   ``app.control.purge("doomed")`` (batches of 10,000: one short transaction
   each; each batch is timed);
4. the live jobs' throughput (finished per second), enqueue→start latency
   (``started_at - created_at``: p50/p99/max, by ``created_at``), the longest
   gap between two starts, and the producer's ``delay()`` call time are
   compared between the purge and an equal window just before it (``--before``
   bounds it); then ``doomed`` is counted by state: nothing may be left
   PENDING and the count returned must equal ``--jobs``.

Figures are indicative: everything shares one machine; repeat and report the
spread.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg

import jobqueue
from benchmarks.tasks import register
from benchmarks.throughput import bench_database
from jobqueue import JobQueue, migrate

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 100_000
WARMUP = 10.0
AFTER = 5.0


def now() -> datetime:
    return datetime.now(timezone.utc)


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Producer:
    """Threads enqueueing into ``live`` with ``delay()`` at a steady rate in
    all; each call's start and duration are recorded (list.append is atomic
    under the GIL)."""

    task: Any
    rate: float
    threads: int
    calls: list[tuple[datetime, float]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    pool: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for index in range(self.threads):
            thread = threading.Thread(target=self._run, name=f"producer-{index}", daemon=True)
            thread.start()
            self.pool.append(thread)

    def _run(self) -> None:
        start = time.perf_counter()
        sent = 0
        rate = self.rate / self.threads
        while not self.stop.is_set():
            due = start + sent / rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            at = now()
            t0 = time.perf_counter()
            self.task.apply_async(queue="live")
            self.calls.append((at, time.perf_counter() - t0))
            sent += 1

    def finish(self) -> None:
        self.stop.set()
        for thread in self.pool:
            thread.join(30)


@dataclass
class Window:
    name: str
    start: datetime
    end: datetime

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


def window_figures(
    conn: psycopg.Connection[Any], window: Window, producer: Producer
) -> dict[str, float]:
    latencies = [
        float(row[0])
        for row in conn.execute(
            "SELECT extract(epoch FROM started_at - created_at) * 1000 FROM jobqueue.jobs "
            "WHERE queue = 'live' AND created_at >= %s AND created_at < %s "
            "AND started_at IS NOT NULL",
            (window.start, window.end),
        ).fetchall()
    ]
    finished = conn.execute(
        "SELECT count(*) FROM jobqueue.jobs WHERE queue = 'live' AND state = 'SUCCESS' "
        "AND finished_at >= %s AND finished_at < %s",
        (window.start, window.end),
    ).fetchone()
    gap = conn.execute(
        "SELECT COALESCE(max(d), 0) FROM (SELECT extract(epoch FROM started_at - "
        "lag(started_at) OVER (ORDER BY started_at)) * 1000 AS d FROM jobqueue.jobs "
        "WHERE queue = 'live' AND started_at >= %s AND started_at < %s) AS g",
        (window.start, window.end),
    ).fetchone()
    calls = [d * 1000 for at, d in producer.calls if window.start <= at < window.end]
    assert finished is not None and gap is not None
    return {
        "jobs/s": finished[0] / window.seconds,
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p99": pct(latencies, 0.99) if latencies else float("nan"),
        "max": max(latencies) if latencies else float("nan"),
        "gap": float(gap[0]),
        "enq/s": len(calls) / window.seconds,
        "delay p99": pct(calls, 0.99) if calls else float("nan"),
        "delay max": max(calls) if calls else float("nan"),
        "n": float(len(latencies)),
    }


def start_workers(dsn: str, count: int) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("JOBQUEUE_DSN", None)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jobqueue",
                "-A",
                "benchmarks.tasks:app",
                "--dsn",
                dsn,
                "worker",
                "-Q",
                "live",
                "-c",
                "4",
                "-P",
                "threads",
                "--loglevel",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]
    deadline = time.monotonic() + 60
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            row = conn.execute("SELECT count(*) FROM jobqueue.workers").fetchone()
            if row is not None and row[0] >= count:
                return procs
            if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                stop_workers(procs)
                raise RuntimeError("the workers did not start")
            time.sleep(0.1)


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def run_once(server_dsn: str, index: int, options: argparse.Namespace) -> dict[str, float]:
    jobs: int = options.jobs
    with bench_database(server_dsn, f"operations_{index}") as dsn:
        migrate.upgrade(dsn, "jobqueue")
        app = JobQueue(dsn, auto_migrate=False)
        noop = register(app)
        procs: list[subprocess.Popen[bytes]] = []
        producer = Producer(noop, options.rate, options.producers)
        try:
            t0 = time.perf_counter()
            for first in range(0, jobs, CHUNK):
                app.enqueue_many(
                    noop, [() for _ in range(min(CHUNK, jobs - first))], queue="doomed"
                )
            load = time.perf_counter() - t0
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("VACUUM (ANALYZE) jobqueue.job_queue, jobqueue.jobs")
            print(
                f"  loaded {jobs:,} jobs into 'doomed' in {load:.1f} s ({jobs / load:,.0f} jobs/s)",
                flush=True,
            )

            procs = start_workers(dsn, options.workers)
            producer.start()
            time.sleep(WARMUP + options.before)

            batches: list[float] = []
            store_purge = app.store.purge_queue

            def timed_purge(queue: str | None = None, max_jobs: int = 10_000) -> int:
                b0 = time.perf_counter()
                try:
                    return store_purge(queue, max_jobs)
                finally:
                    batches.append(time.perf_counter() - b0)

            setattr(app.store, "purge_queue", timed_purge)  # noqa: B010 (time each batch)
            purge_start = now()
            p0 = time.perf_counter()
            purged = app.control.purge("doomed")
            purge_seconds = time.perf_counter() - p0
            purge_end = now()
            time.sleep(AFTER)
            producer.finish()
            deadline = time.monotonic() + 60
            with psycopg.connect(dsn, autocommit=True) as conn:
                while time.monotonic() < deadline:  # the live jobs of the windows have run
                    row = conn.execute(
                        "SELECT count(*) FROM jobqueue.job_queue WHERE queue = 'live'"
                    ).fetchone()
                    if row is not None and row[0] == 0:
                        break
                    time.sleep(0.2)
                stop_workers(procs)
                procs = []
                length = min(purge_seconds, options.before)
                during = Window("during purge", purge_start, purge_end)
                before = Window("before", purge_start - timedelta(seconds=length), purge_start)
                fig_before = window_figures(conn, before, producer)
                fig_during = window_figures(conn, during, producer)
                states = conn.execute(
                    "SELECT state, count(*) FROM jobqueue.all_jobs WHERE queue = 'doomed' "
                    "GROUP BY state ORDER BY state"
                ).fetchall()
        finally:
            producer.finish()
            stop_workers(procs)
            with suppress(Exception):
                app.close()

    left = {str(state): int(count) for state, count in states}
    print(
        f"  purge: app.control.purge('doomed') returned {purged:,} in {purge_seconds:.2f} s "
        f"({purged / purge_seconds:,.0f} jobs/s), {len(batches)} calls, batch p50 "
        f"{statistics.median(batches) * 1000:.0f} ms, max {max(batches) * 1000:.0f} ms; "
        f"'doomed' by state: {left}",
        flush=True,
    )
    if purged != jobs or left.get("PENDING", 0) or left.get("RETRY", 0):
        print(f"  !! expected {jobs:,} purged and nothing PENDING", flush=True)
    print(
        f"  {'window':<14} {'secs':>6} {'jobs/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'gap ms':>8} {'enq/s':>7} {'delay p99':>9} {'delay max':>9}"
    )
    for window, fig in ((before, fig_before), (during, fig_during)):
        print(
            f"  {window.name:<14} {window.seconds:6.1f} {fig['jobs/s']:8.0f} {fig['p50']:8.2f} "
            f"{fig['p99']:8.2f} {fig['max']:8.1f} {fig['gap']:8.1f} {fig['enq/s']:7.0f} "
            f"{fig['delay p99']:9.2f} {fig['delay max']:9.1f}"
        )
    ratios = {k: fig_during[k] / fig_before[k] for k in ("jobs/s", "p50", "p99", "max")}
    print("  during/before: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()), flush=True)
    return {
        "load s": load,
        "purge s": purge_seconds,
        "purged/s": purged / purge_seconds,
        "batch max ms": max(batches) * 1000,
        **{f"before {k}": v for k, v in fig_before.items()},
        **{f"during {k}": v for k, v in fig_during.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.operations", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--dsn", required=True, help="a maintenance database on the server")
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=500.0, help="live jobs/s enqueued")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--producers", type=int, default=4, help="threads sharing --rate")
    parser.add_argument(
        "--before",
        type=float,
        default=60.0,
        help="seconds measured before the purge (bounds the compared window)",
    )
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args(argv)

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    with psycopg.connect(options.dsn, autocommit=True) as conn:
        settings = {
            name: conn.execute(f"SHOW {name}").fetchone()
            for name in ("server_version", "autovacuum", "shared_buffers", "max_wal_size")
        }
    print(
        f"CPUs {os.cpu_count()}, load {os.getloadavg()[0]:.1f}, Python "
        f"{platform.python_version()}, jobqueue {jobqueue.__version__}, "
        + ", ".join(f"{k}={v[0] if v else '?'}" for k, v in settings.items()),
        flush=True,
    )
    runs: list[dict[str, float]] = []
    for index in range(options.repeat):
        print(f"run {index + 1}/{options.repeat} (load {os.getloadavg()[0]:.1f})", flush=True)
        runs.append(run_once(options.dsn, index, options))
    if len(runs) > 1:
        print("\nmedian [min - max] over the runs:")
        for key in runs[0]:
            values = [run[key] for run in runs]
            print(
                f"  {key:<18} {statistics.median(values):10.2f}  "
                f"[{min(values):.2f} - {max(values):.2f}]"
            )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
