"""Through PgBouncer in transaction mode vs direct: drain, enqueue-to-start latency, delay().

    .venv/bin/python -m benchmarks.pgbouncer --dsn postgresql://postgres@127.0.0.1:5435/postgres \\
        [--jobs 20000] [--latency-jobs 300] [--pool-size 10] [--repeat 1]

``--dsn`` names a superuser's maintenance database on a stock PostgreSQL (see
``benchmarks.workers`` for a cluster of your own). The benchmark creates a
database ``bench_pgb_<pid>`` and starts Debian's ``pgbouncer`` (1.18 here) in
front of the server with ``tests/pgbouncer.py`` (foreground, a free port,
trust authentication, ``pool_mode = transaction``, ``default_pool_size``
``--pool-size``; as root it runs as ``postgres``). It stops pgbouncer and drops
the database at the end.

Worker modes, each a ``jobqueue worker`` process (thread pool, concurrency 8):

- ``direct``: worker and producer connect to PostgreSQL;
- ``txn+listen_dsn``: both through pgbouncer (``pooler="auto"`` detects it),
  the worker LISTENs on a direct ``listen_dsn``;
- ``txn poll 1s`` and ``txn poll 5s`` (the default): through pgbouncer, no
  ``listen_dsn``: poll-only.

For each: the drain of ``--jobs`` no-op jobs (one ``enqueue_many`` while the
worker idles; first start to last finish), and the latency from the job row's
creation to its start (``started_at - created_at``) of ``--latency-jobs``
``delay()`` calls sent one at a time at random intervals of 20-100 ms, so a
job lands at a random point of a poll interval. Then single ``delay()`` calls
from one producer thread for 5 s, no worker running: direct, direct with
prepared statements off (what transaction mode implies), and through pgbouncer.
``--repeat`` runs every mode that many times, interleaved; medians are printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

import jobqueue
from benchmarks.workers import ROOT, Sampler, register_all, shown, with_params
from jobqueue import JobQueue, migrate
from tests.pgbouncer import PgBouncer, pgbouncer_binary, pgbouncer_version, start

MODES = ("direct", "txn+listen_dsn", "txn poll 1s", "txn poll 5s")


class Bench:
    def __init__(self, admin_dsn: str, dbname: str, bouncer: PgBouncer, log_dir: Path) -> None:
        self.direct, self.dbname = admin_dsn, dbname
        self.pooled = bouncer.dsn(dbname)
        self.log_dir = log_dir
        self.sampler = Sampler(admin_dsn, dbname, role=None)
        self.serial = 0
        self.results: dict[tuple[str, str], list[float]] = {}

    def record(self, mode: str, what: str, value: float) -> None:
        self.results.setdefault((mode, what), []).append(value)

    def sql(self, query: str, *params: Any) -> tuple[Any, ...]:
        row = self.sampler.conn.execute(query, params).fetchone()
        assert row is not None
        return row

    def schema(self) -> str:
        self.serial += 1
        name = f"p{self.serial}"
        migrate.upgrade(self.direct, name)
        return name

    def producer(self, mode: str, schema: str, **settings: Any) -> JobQueue:
        dsn = self.direct if mode == "direct" else self.pooled
        app = JobQueue(dsn, schema=schema, auto_migrate=False, **settings)
        register_all(app)
        return app

    def worker(self, mode: str, schema: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for name in ("JOBQUEUE_DSN", "JOBQUEUE_LISTEN_DSN", "JOBQUEUE_POOLER"):
            env.pop(name, None)
        args = ["--dsn", self.direct if mode == "direct" else self.pooled, "--schema", schema]
        args += ["worker", "-c", "8", "--loglevel", "info"]
        if mode == "txn+listen_dsn":
            env["JOBQUEUE_LISTEN_DSN"] = self.direct
        if mode == "txn poll 1s":
            args += ["--poll-interval", "1"]
        with (self.log_dir / f"worker-{schema}.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "jobqueue", "-A", "benchmarks.workers:app", *args],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + 60
        query = f'SELECT count(*) FROM "{schema}".workers WHERE pid = %s'
        while not self.sql(query, proc.pid)[0]:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start: {self.worker_log(schema)}")
            time.sleep(0.05)
        time.sleep(1.0)
        return proc

    def worker_log(self, schema: str) -> str:
        return (self.log_dir / f"worker-{schema}.log").read_text(errors="replace")

    @staticmethod
    def stop(proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def one_mode(self, mode: str, jobs: int, latency_jobs: int) -> None:
        schema = self.schema()
        app = self.producer(mode, schema)
        proc = self.worker(mode, schema)
        try:
            wakeups = [
                line.split("wake-ups=")[1].strip()
                for line in self.worker_log(schema).splitlines()
                if "wake-ups=" in line
            ]
            # The drain.
            self.sampler.start()
            app.enqueue_many(app.tasks["noop"], [() for _ in range(jobs)])
            query = f"SELECT count(*) FROM \"{schema}\".jobs WHERE state = 'SUCCESS'"
            deadline = time.monotonic() + max(120.0, jobs / 100)
            while self.sql(query)[0] < jobs:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{mode}: drain failed: {self.worker_log(schema)}")
                time.sleep(0.1)
            peak, by_name = self.sampler.stop()
            first, last = self.sql(f'SELECT min(started_at), max(finished_at) FROM "{schema}".jobs')
            rate = jobs / (last - first).total_seconds()
            self.record(mode, "drain jobs/s", rate)
            # The latency, on an idle worker.
            time.sleep(1.0)
            ids: list[str] = []
            for _ in range(latency_jobs):
                ids.append(app.tasks["noop"].delay().id)
                time.sleep(random.uniform(0.02, 0.1))
            deadline = time.monotonic() + 30
            done_query = f"SELECT count(*) FROM \"{schema}\".jobs WHERE state = 'SUCCESS'"
            while self.sql(done_query)[0] < jobs + latency_jobs:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{mode}: latency jobs not done")
                time.sleep(0.1)
            rows = self.sampler.conn.execute(
                "SELECT extract(epoch FROM started_at - created_at) * 1000 "
                f'FROM "{schema}".jobs WHERE id = ANY(%s::uuid[])',
                (ids,),
            ).fetchall()
            ms = sorted(float(row[0]) for row in rows)
            p50, p99 = statistics.median(ms), ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
            self.record(mode, "latency p50 ms", p50)
            self.record(mode, "latency p99 ms", p99)
            self.record(mode, "latency max ms", ms[-1])
            print(
                f"  {mode:15} wake-ups={','.join(wakeups) or '?'}: drain {jobs:,} at "
                f"{rate:,.0f} jobs/s (server connections peak {peak}: {shown(by_name)}); "
                f"created->started p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {ms[-1]:.2f} ms",
                flush=True,
            )
        finally:
            self.stop(proc)
            app.close()

    def enqueue_rate(self, seconds: float = 5.0) -> None:
        for label, mode, settings in (
            ("direct", "direct", {}),
            ("direct, prepared statements off", "direct", {"prepared_statements": False}),
            ("through pgbouncer (transaction)", "txn", {}),
        ):
            schema = self.schema()
            app = self.producer(mode, schema, **settings)
            noop = app.tasks["noop"]
            for _ in range(50):  # the pool open, statements prepared where they are
                noop.delay()
            count, deadline = 0, time.perf_counter() + seconds
            began = time.perf_counter()
            while time.perf_counter() < deadline:
                noop.delay()
                count += 1
            rate = count / (time.perf_counter() - began)
            app.close()
            self.record(label, "delay() jobs/s", rate)
            print(f"  single delay(), 1 thread, {label}: {rate:,.0f} jobs/s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pgbouncer", description=__doc__)
    parser.add_argument("--dsn", required=True, help="a superuser's maintenance database")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--latency-jobs", type=int, default=300)
    parser.add_argument("--pool-size", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=1)
    options = parser.parse_args(argv)
    if pgbouncer_binary() is None:
        print("pgbouncer is not installed (apt-get install pgbouncer)", file=sys.stderr)
        return 1

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    dbname = f"bench_pgb_{os.getpid()}"
    with psycopg.connect(options.dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    admin_dsn = with_params(options.dsn, dbname=dbname)
    bouncer: PgBouncer | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="bench-pgb-") as tmp:
            os.chmod(tmp, 0o755)
            bouncer = start(admin_dsn, Path(tmp), "transaction", options.pool_size)
            bench = Bench(admin_dsn, dbname, bouncer, Path(tmp))
            version = ".".join(map(str, pgbouncer_version() or ()))
            print(
                f"CPUs {os.cpu_count()}, PostgreSQL {bench.sql('SHOW server_version')[0]}, "
                f"PgBouncer {version} (transaction, default_pool_size {options.pool_size}), "
                f"Python {platform.python_version()}, jobqueue from "
                f"{Path(jobqueue.__file__).parent}, load average {os.getloadavg()[0]:.1f}",
                flush=True,
            )
            for run in range(options.repeat):
                print(f"run {run + 1}")
                modes = MODES if run % 2 == 0 else MODES[::-1]
                for mode in modes:
                    bench.one_mode(mode, options.jobs, options.latency_jobs)
                bench.enqueue_rate()
            print(f"\nmedians of {options.repeat} run(s)")
            print("| mode | measure | median | every run |\n|---|---|---:|---|")
            for (mode, what), values in bench.results.items():
                every = ", ".join(f"{v:,.2f}" if v < 100 else f"{v:,.0f}" for v in values)
                median = statistics.median(values)
                print(f"| {mode} | {what} | {median:,.2f} | {every} |")
            bench.sampler.conn.close()
    finally:
        if bouncer is not None:
            bouncer.stop()
        with psycopg.connect(options.dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        print(f"stopped pgbouncer, dropped database {dbname}", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
