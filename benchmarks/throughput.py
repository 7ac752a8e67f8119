"""Throughput and latency of jobqueue on a real PostgreSQL.

    .venv/bin/python -m benchmarks.throughput [--dsn DSN] [--jobs N] [--quick]

DSN: ``--dsn``, else ``$JOBQUEUE_BENCH_DSN``, else a local maintenance database.
The benchmark creates its own database ``jobqueue_bench_<pid>`` on that server
(one fresh schema per workload) and drops it at the end, even on error or
Ctrl-C. Figures are indicative: everything shares one machine.
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
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import jobqueue
from benchmarks.tasks import register
from jobqueue import JobQueue, Task, migrate

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


class Bench:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.apps: list[JobQueue] = []
        self.workers: list[subprocess.Popen[bytes]] = []
        self.rows: list[tuple[str, str]] = []

    def report(self, name: str, value: str) -> None:
        print(f"  {name}: {value}", flush=True)
        self.rows.append((name, value))

    def schema(self, name: str) -> tuple[JobQueue, Task[[], None]]:
        """A fresh, migrated schema for one workload and an app bound to it."""
        migrate.upgrade(self.dsn, name)
        app = JobQueue(self.dsn, schema=name, auto_migrate=False)
        self.apps.append(app)
        return app, register(app)

    def discard(self, app: JobQueue, schema: str) -> None:
        """The end of a workload on a schema of its own: its workers stopped,
        its app closed, the schema dropped."""
        self.stop_workers()
        app.close()
        self.apps.remove(app)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')

    def sql(self, query: str, *params: Any) -> tuple[Any, ...]:
        row = self.sql_maybe(query, *params)
        assert row is not None
        return row

    def sql_maybe(self, query: str, *params: Any) -> tuple[Any, ...] | None:
        """The first row of ``query``, or None."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return conn.execute(query, params).fetchone()

    # -- workers ---------------------------------------------------------------------

    def start_worker(self, schema: str, *args: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("JOBQUEUE_DSN", None)
        command = [sys.executable, "-m", "jobqueue", "-A", "benchmarks.tasks:app"]
        command += ["--dsn", self.dsn, "--schema", schema, "worker", "--loglevel", "warning"]
        proc = subprocess.Popen([*command, *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        self.workers.append(proc)
        deadline = time.monotonic() + 30
        while not self.sql(f'SELECT count(*) FROM "{schema}".workers WHERE pid = %s', proc.pid)[0]:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {proc.pid} did not start (exit {proc.poll()})")
            time.sleep(0.05)
        return proc

    def stop_workers(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.workers.clear()

    # -- workloads ----------------------------------------------------------------------

    def bulk_enqueue(self, n: int) -> None:
        app, noop = self.schema("bench_bulk")
        start = time.perf_counter()
        app.enqueue_many(noop, [() for _ in range(n)])
        elapsed = time.perf_counter() - start
        self.report(f"bulk enqueue_many ({n:,} jobs)", f"{n / elapsed:,.0f} jobs/s")

    def single_enqueue(self, seconds: float, threads: int = 4) -> None:
        _, noop = self.schema("bench_single")
        noop.delay()  # open the producer pool outside the measurement
        counts = [0] * threads
        deadline = time.perf_counter() + seconds

        def produce(index: int) -> None:
            while time.perf_counter() < deadline:
                noop.delay()
                counts[index] += 1

        start = time.perf_counter()
        pool = [threading.Thread(target=produce, args=(i,)) for i in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        elapsed = time.perf_counter() - start
        rate = sum(counts) / elapsed
        self.report(f"single delay() ({threads} threads, {seconds:g} s)", f"{rate:,.0f} jobs/s")

    def drain(self, n: int, workers: int) -> None:
        """Workers start idle; one enqueue_many commit then wakes them all at once,
        so a second worker's start-up time does not count against it."""
        schema = f"bench_drain{workers}"
        app, noop = self.schema(schema)
        procs = [self.start_worker(schema) for _ in range(workers)]
        app.enqueue_many(noop, [() for _ in range(n)])
        rate = self.drained(schema, n, procs)
        self.report(f"drain, {workers} worker(s) ({n:,} jobs)", f"{rate:,.0f} jobs/s")
        if workers == 1:
            mb = rss_mb(procs[0].pid)
            self.report("worker RSS after drain", "n/a" if mb is None else f"{mb:.1f} MB")
        self.stop_workers()

    def drained(self, schema: str, n: int, procs: list[subprocess.Popen[bytes]]) -> float:
        """Wait until ``n`` jobs of ``schema`` succeeded; jobs/s from the first
        start to the last finish. Raises if a worker exits or it stalls."""
        first, last = self.wait_drained(schema, n, procs)
        return float(n / (last - first).total_seconds())

    def wait_drained(
        self, schema: str, n: int, procs: list[subprocess.Popen[bytes]], poll: float = 0.25
    ) -> tuple[datetime, datetime]:
        """Wait until ``n`` jobs of ``schema`` succeeded: the first start and
        the last finish. Polls on one connection, and only whether anything
        is still waiting or held, two probes of small tables: counting
        ``jobs`` on a new connection every 0.25 s cost the server about 2 us
        a job of the drain it measured (a scan of the table, a backend's
        start)."""
        busy = (
            f'SELECT EXISTS (SELECT 1 FROM "{schema}".job_queue) '
            f'OR EXISTS (SELECT 1 FROM "{schema}".job_lease)'
        )
        stats = (
            f'SELECT count(*), min(started_at), max(finished_at) FROM "{schema}".jobs '
            "WHERE state = 'SUCCESS'"
        )
        deadline = time.monotonic() + max(60.0, n / 200)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while True:
                if not conn.execute(busy).fetchone()[0]:  # type: ignore[index]
                    done, first, last = conn.execute(stats).fetchone()  # type: ignore[misc]
                    if done >= n:
                        return first, last
                if time.monotonic() > deadline:
                    raise RuntimeError(f"drain: not all {n:,} jobs done before the deadline")
                if any(proc.poll() is not None for proc in procs):
                    raise RuntimeError("drain: a worker exited")
                time.sleep(poll)

    def latency(self, count: int, warmup: int = 5) -> None:
        schema = "bench_latency"
        _, noop = self.schema(schema)
        self.start_worker(schema, "--poll-interval", "30")
        ids: list[str] = []
        for index in range(warmup + count):
            result = noop.delay()
            result.get(timeout=10)
            if index >= warmup:
                ids.append(result.id)
            time.sleep(0.005)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT extract(epoch FROM started_at - created_at) * 1000 "
                f'FROM "{schema}".jobs WHERE id = ANY(%s::uuid[])',
                (ids,),
            ).fetchall()
        ms = sorted(float(row[0]) for row in rows)
        p50, p99 = statistics.median(ms), ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
        self.report(
            f"latency created→started ({count} jobs, idle worker)",
            f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {ms[-1]:.2f} ms",
        )
        self.stop_workers()

    def close(self) -> None:
        self.stop_workers()
        for app in self.apps:
            with suppress(Exception):
                app.close()


def rss_mb(pid: int) -> float | None:
    try:
        import psutil  # type: ignore[import-untyped]
    except ImportError:
        return None
    return float(psutil.Process(pid).memory_info().rss) / 2**20


@contextmanager
def bench_database(server_dsn: str, tag: str = "") -> Iterator[str]:
    """A database of our own for this run (``tag`` tells several apart),
    dropped with FORCE at the end."""
    name = f"jobqueue_bench_{os.getpid()}" + (f"_{tag}" if tag else "")
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(server_dsn)
    params["dbname"] = name
    try:
        yield make_conninfo("", **{k: v for k, v in params.items() if v is not None})
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        print(f"dropped database {name}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__)
    parser.add_argument("--dsn", default=os.environ.get("JOBQUEUE_BENCH_DSN") or DEFAULT_DSN)
    parser.add_argument(
        "--jobs", type=int, default=None, help="jobs for the bulk enqueue (default 100,000)"
    )
    parser.add_argument("--quick", action="store_true", help="smaller, shorter workloads")
    options = parser.parse_args(argv)
    quick: bool = options.quick
    bulk = options.jobs or (10_000 if quick else 100_000)
    drain = 10_000 if quick else 50_000

    # SIGTERM unwinds like Ctrl-C, so the workers stop and the database is dropped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    with bench_database(options.dsn) as dsn:
        bench = Bench(dsn)
        version = bench.sql("SHOW server_version")[0]
        print(
            f"CPUs {os.cpu_count()}, PostgreSQL {version}, Python {platform.python_version()}, "
            f"jobqueue {jobqueue.__version__}, {platform.platform()}",
            flush=True,
        )
        try:
            bench.bulk_enqueue(bulk)
            bench.single_enqueue(2.0 if quick else 5.0)
            bench.drain(drain, workers=1)
            bench.drain(drain, workers=2)
            bench.latency(100 if quick else 300)
        finally:
            bench.close()
            print("\n| workload | result |\n|---|---|")
            for name, value in bench.rows:
                print(f"| {name} | {value} |", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
