"""Many workers: connections per worker process, how many fit, the drain with 1 to 32 of them.

On a stock PostgreSQL (default settings, ``max_connections=100``, nothing else
using it; not a server tuned for a test suite), for example a cluster of your own:

    pg_createcluster 15 wbench -p 5435      # then set pg_hba.conf's host lines to trust
    pg_ctlcluster --skip-systemctl-redirect 15 wbench start
    .venv/bin/python -m benchmarks.workers --dsn postgresql://postgres@127.0.0.1:5435/postgres
    pg_dropcluster --stop 15 wbench

``--dsn`` names a superuser's maintenance database. The benchmark creates a
login role ``jq_bench`` (not a superuser, so the 3 ``superuser_reserved_connections``
stay free for the benchmark's own two connections: a sampler of
``pg_stat_activity`` and a producer with a pool of one) and a database
``bench_workers_<pid>`` it owns, migrates it as that role, and runs every
worker as ``jobqueue worker`` processes connecting as ``jq_bench``
(``--heartbeat-interval 1``, thread pool unless said). Connections are counted
in ``pg_stat_activity`` by ``usename = 'jq_bench'``, grouped by
``application_name`` with the worker ids taken out, every 20 ms. At the end
the database and the role are dropped, even on error or Ctrl-C.

1. **Per worker process**: one worker (the maintenance leader, so its third
   connection shows) idle, then draining 2,000 jobs, for the thread pool at
   concurrency 1, 4 and 16 and the process pool at 4; with no-op tasks and
   with tasks that each enqueue one no-op job (``delay()`` inside a task).
2. **Most workers under max_connections**: workers of concurrency 2 started
   one at a time, each with ``db_retry_seconds`` of 2 s, with none of the
   benchmark's connections open (a worker's "ready" log line says its two
   sessions are open), until one exits for want of a connection slot or is
   not ready in 60 s; then the benchmark reconnects as superuser (the
   reserved slots) and the ones that fit drain ``--backlog`` jobs together,
   each job appending its id to a file of its process, which shows every job
   ran exactly once and which processes ran jobs.
3. **Drain rate**: ``--jobs`` no-op jobs, enqueued in one ``enqueue_many``
   while 1, 8, 16 and 32 idle worker processes of concurrency 2 wait;
   first start to last finish from the ``jobs`` rows; the workers' CPU time
   per job (``/proc``); the peak of connections sampled meanwhile;
   ``--repeat`` runs, the order reversed every other run. On a 2-core
   machine, more processes than cores measure CPU contention between the
   workers, the server and the benchmark, not how the queue scales on a
   bigger machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import jobqueue
from benchmarks.tasks import register
from jobqueue import JobQueue, Task, migrate

ROOT = Path(__file__).resolve().parent.parent
ROLE = "jq_bench"
MARK_DIR_ENV = "JOBQUEUE_BENCH_MARK_DIR"
RETRY_ENV = "JOBQUEUE_BENCH_DB_RETRY"
_ID = re.compile(r" [0-9a-f]{12}\b")


# -- the workers' app (-A benchmarks.workers:app) -----------------------------------


def register_all(app: JobQueue) -> tuple[Task[[], None], Task[[], None], Task[[], None]]:
    noop = register(app)

    @app.task(name="enqueue_one")
    def enqueue_one() -> None:
        noop.delay()

    @app.task(name="mark", bind=True)
    def mark(self: Task[[], None]) -> None:
        # One line per run in a file of this process: duplicates would show.
        directory = os.environ[MARK_DIR_ENV]
        with open(os.path.join(directory, str(os.getpid())), "a") as out:
            out.write(self.request.id + "\n")

    return noop, enqueue_one, mark


app = JobQueue(auto_migrate=False, db_retry_seconds=float(os.environ.get(RETRY_ENV) or 10))
register_all(app)


# -- the benchmark ------------------------------------------------------------------


def with_params(dsn: str, **changes: Any) -> str:
    params = {k: v for k, v in conninfo_to_dict(dsn).items() if v is not None}
    params.update(changes)
    return make_conninfo("", **params)


class Sampler:
    """Counts ``role``'s connections to ``dbname`` (any role's but its own if
    None) by application_name every ``interval`` s."""

    def __init__(
        self, dsn: str, dbname: str, role: str | None = ROLE, interval: float = 0.02
    ) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True, application_name="bench-sampler")
        self.dbname, self.role, self.interval = dbname, role, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.peak_total = 0
        self.peak_by_name: Counter[str] = Counter()

    def sample(self) -> Counter[str]:
        rows = self.conn.execute(
            "SELECT application_name, count(*) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid() "
            "AND (usename = %s OR %s::text IS NULL) GROUP BY 1",
            (self.dbname, self.role, self.role),
        ).fetchall()
        counts: Counter[str] = Counter()
        for name, count in rows:
            counts[_ID.sub(" <id>", name or "(none)")] += int(count)
        return counts

    def start(self) -> None:
        self.peak_total, self.peak_by_name = 0, Counter()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            counts = self.sample()
            self.peak_total = max(self.peak_total, sum(counts.values()))
            for name, count in counts.items():
                self.peak_by_name[name] = max(self.peak_by_name[name], count)
            self._stop.wait(self.interval)

    def stop(self) -> tuple[int, Counter[str]]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.peak_total, self.peak_by_name


def shown(counts: Counter[str]) -> str:
    return ", ".join(f"{name}: {count}" for name, count in sorted(counts.items())) or "none"


class Bench:
    def __init__(self, admin_dsn: str, worker_dsn: str, dbname: str, mark_dir: Path) -> None:
        self.admin_dsn, self.worker_dsn, self.dbname = admin_dsn, worker_dsn, dbname
        self.mark_dir = mark_dir
        self.sampler = Sampler(admin_dsn, dbname)
        self.conn = psycopg.connect(admin_dsn, autocommit=True, application_name="bench")
        self.workers: list[subprocess.Popen[bytes]] = []
        self.logs: dict[int, Path] = {}  # pid: its stderr
        self.apps: list[JobQueue] = []
        self.serial = 0

    def schema(self) -> tuple[str, JobQueue]:
        self.serial += 1
        name = f"w{self.serial}"
        migrate.upgrade(self.worker_dsn, name)
        producer = JobQueue(self.admin_dsn, schema=name, auto_migrate=False, pool_max_size=1)
        register_all(producer)
        self.apps.append(producer)
        return name, producer

    def sql(self, query: str, *params: Any) -> tuple[Any, ...]:
        row = self.conn.execute(query, params).fetchone()
        assert row is not None
        return row

    def spawn(
        self, schema: str, *args: str, retry: float = 10.0, loglevel: str = "warning"
    ) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", MARK_DIR_ENV: str(self.mark_dir)}
        env[RETRY_ENV] = str(retry)
        env.pop("JOBQUEUE_DSN", None)
        path = self.mark_dir / f"worker-{schema}-{len(self.workers)}.log"
        log = path.open("wb")
        command = [sys.executable, "-m", "jobqueue", "-A", "benchmarks.workers:app"]
        command += ["--dsn", self.worker_dsn, "--schema", schema, "worker"]
        command += ["--loglevel", loglevel, "--heartbeat-interval", "1"]
        proc = subprocess.Popen(
            [*command, *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log
        )
        log.close()
        self.workers.append(proc)
        self.logs[proc.pid] = path
        return proc

    def registered(self, schema: str, procs: list[subprocess.Popen[bytes]], timeout: float) -> bool:
        """Wait until every process has its workers row; False if one exits or time runs out."""
        pids = [proc.pid for proc in procs]
        deadline = time.monotonic() + timeout
        query = f'SELECT count(DISTINCT pid) FROM "{schema}".workers WHERE pid = ANY(%s)'
        while self.sql(query, pids)[0] < len(pids):
            if any(proc.poll() is not None for proc in procs) or time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def wait_done(self, schema: str, n: int, procs: list[subprocess.Popen[bytes]]) -> None:
        deadline = time.monotonic() + max(120.0, n / 100)
        query = f"SELECT count(*) FROM \"{schema}\".jobs WHERE state = 'SUCCESS'"
        while (done := self.sql(query)[0]) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {done:,}/{n:,} jobs done before the deadline")
            if any(proc.poll() is not None for proc in procs):
                raise RuntimeError("a worker exited during the drain")
            time.sleep(0.1)

    def rate(self, schema: str) -> tuple[int, float]:
        done, first, last = self.sql(
            f'SELECT count(*), min(started_at), max(finished_at) FROM "{schema}".jobs '
            "WHERE state = 'SUCCESS'"
        )
        return int(done), done / (last - first).total_seconds()

    def stop_workers(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.workers.clear()

    def close(self) -> None:
        self.stop_workers()
        for producer in self.apps:
            with suppress(Exception):
                producer.close()
        self.sampler.stop()
        self.sampler.conn.close()
        self.conn.close()

    # -- 1. per worker process ----------------------------------------------------------

    def per_worker(self, pool: str, concurrency: int, task: str, jobs: int = 2000) -> None:
        schema, producer = self.schema()
        proc = self.spawn(schema, "-P", pool, "-c", str(concurrency))
        if not self.registered(schema, [proc], 60):
            raise RuntimeError(f"worker did not start: {self.worker_log(proc)}")
        time.sleep(2.5)  # two heartbeats: elected leader, its maintenance round done
        idle = self.sampler.sample()
        self.sampler.start()
        producer.enqueue_many(producer.tasks[task], [() for _ in range(jobs)])
        # Every job final; an enqueue_one that succeeded enqueued one noop more.
        query = (
            f"SELECT count(*) FILTER (WHERE task = %s AND state IN ('SUCCESS', 'FAILURE')), "
            "count(*) FILTER (WHERE task = %s AND state = 'SUCCESS'), "
            "count(*) FILTER (WHERE task = 'noop' AND state IN ('SUCCESS', 'FAILURE')), "
            f"count(*) FILTER (WHERE state = 'FAILURE') FROM \"{schema}\".jobs"
        )
        deadline = time.monotonic() + 300
        while True:
            final, succeeded, noops, failed = self.sql(query, task, task)
            if final == jobs and (task == "noop" or noops == succeeded):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{final:,}/{jobs:,} jobs final: {self.worker_log(proc)}")
            time.sleep(0.1)
        peak, by_name = self.sampler.stop()
        kind = "enqueue one job each" if task == "enqueue_one" else "no-op"
        failures = ""
        if failed:
            failures = f"; {failed} job(s) FAILED, last log line: {self.worker_log(proc)}"
        print(
            f"  {pool} c={concurrency}, {kind}: idle {sum(idle.values())} ({shown(idle)}); "
            f"draining {jobs:,}: peak {peak} ({shown(by_name)}){failures}",
            flush=True,
        )
        self.stop_workers()

    def worker_log(self, proc: subprocess.Popen[bytes]) -> str:
        text = self.logs[proc.pid].read_text(errors="replace")
        lines = [line for line in text.splitlines() if line.strip()]
        return lines[-1][:300] if lines else "(no output)"

    # -- 2. the most workers that fit ----------------------------------------------------

    def most_workers(self, backlog: int, limit: int) -> None:
        schema, producer = self.schema()
        # Nothing of ours connected while they start: each worker's log says
        # "ready" (its two sessions open) or it exits; we reconnect afterwards
        # as superuser, in the reserved slots.
        self.conn.close()
        self.sampler.conn.close()
        running: list[subprocess.Popen[bytes]] = []
        refused = ""
        while len(running) < limit:
            proc = self.spawn(schema, "-c", "2", retry=2.0, loglevel="info")
            deadline = time.monotonic() + 60
            while " ready: " not in self.logs[proc.pid].read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            else:
                running.append(proc)
                time.sleep(2.5 if len(running) == 1 else 0.2)  # the first becomes the leader
                continue
            refused = f"exit {proc.poll()}: {self.worker_log(proc)}"
            if proc.poll() is None:
                refused = f"not ready in 60 s (still running): {self.worker_log(proc)}"
            break
        self.conn = psycopg.connect(self.admin_dsn, autocommit=True, application_name="bench")
        self.sampler.conn = psycopg.connect(
            self.admin_dsn, autocommit=True, application_name="bench-sampler"
        )
        time.sleep(3)
        after = self.sampler.sample()
        dead = [proc.pid for proc in running if proc.poll() is not None]
        print(
            f"  {len(running)} worker processes (concurrency 2) ready, nothing else connected; "
            f"the next one: {refused or 'not tried (--max-workers reached)'}",
            flush=True,
        )
        print(f"  connections of {ROLE}: {sum(after.values())} ({shown(after)})", flush=True)
        max_conn, reserved = self.sql(
            "SELECT current_setting('max_connections'), "
            "current_setting('superuser_reserved_connections')"
        )
        print(f"  max_connections={max_conn}, superuser_reserved_connections={reserved}")
        if dead:
            print(f"  exited meanwhile: {len(dead)} of them")
        alive = [proc for proc in running if proc.poll() is None]
        for old in self.mark_dir.iterdir():
            if old.name.isdigit():
                old.unlink()
        self.sampler.start()
        producer.enqueue_many(producer.tasks["mark"], [() for _ in range(backlog)])
        self.wait_done(schema, backlog, alive)
        peak, by_name = self.sampler.stop()
        done, rate = self.rate(schema)
        marks: Counter[str] = Counter()
        ran_in = 0
        for path in self.mark_dir.iterdir():
            if path.name.isdigit():
                ids = path.read_text().split()
                marks.update(ids)
                ran_in += bool(ids)
        runs, distinct = sum(marks.values()), len(marks)
        print(
            f"  drained {backlog:,} jobs together at {rate:,.0f} jobs/s: {done:,} SUCCESS rows, "
            f"{runs:,} runs of {distinct:,} distinct jobs "
            f"({'exactly once' if runs == distinct == backlog else 'NOT exactly once'}), "
            f"jobs ran in {ran_in} of {len(alive)} processes; "
            f"peak connections {peak} ({shown(by_name)})",
            flush=True,
        )
        self.stop_workers()

    # -- 3. drain rate with many processes ----------------------------------------------

    def drain(self, processes: int, jobs: int) -> tuple[float, int]:
        schema, producer = self.schema()
        procs = [self.spawn(schema, "-c", "2") for _ in range(processes)]
        if not self.registered(schema, procs, 60 + 5 * processes):
            raise RuntimeError("workers did not start: " + self.worker_log(procs[0]))
        time.sleep(2.5)
        idle = sum(self.sampler.sample().values())
        cpu_before = cpu_seconds(procs)
        self.sampler.start()
        producer.enqueue_many(producer.tasks["noop"], [() for _ in range(jobs)])
        self.wait_done(schema, jobs, procs)
        peak, by_name = self.sampler.stop()
        cpu = cpu_seconds(procs) - cpu_before
        _, rate = self.rate(schema)
        print(
            f"  {processes:2} processes x 2 threads: {rate:8,.0f} jobs/s; workers' CPU "
            f"{cpu * 1e6 / jobs:,.0f} us/job; connections idle {idle}, peak while draining "
            f"{peak} ({shown(by_name)})",
            flush=True,
        )
        self.stop_workers()
        return rate, peak


def cpu_seconds(procs: list[subprocess.Popen[bytes]]) -> float:
    """User + system CPU of the worker processes so far (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for proc in procs:
        with suppress(OSError):
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


@contextmanager
def bench_database(admin_dsn: str) -> Iterator[tuple[str, str]]:
    """A role and a database of our own; (database name, the role's DSN to it)."""
    name = f"bench_workers_{os.getpid()}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone():
            conn.execute(f"CREATE ROLE {ROLE} LOGIN")
        conn.execute(f'CREATE DATABASE "{name}" OWNER {ROLE}')
    try:
        yield name, with_params(admin_dsn, dbname=name, user=ROLE)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f"DROP ROLE IF EXISTS {ROLE}")
        print(f"dropped database {name} and role {ROLE}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workers", description=__doc__)
    parser.add_argument("--dsn", required=True, help="a superuser's maintenance database")
    parser.add_argument("--jobs", type=int, default=50_000, help="jobs per drain (part 3)")
    parser.add_argument("--backlog", type=int, default=20_000, help="jobs for part 2's drain")
    parser.add_argument("--processes", default="1,8,16,32", help="worker processes (part 3)")
    parser.add_argument("--max-workers", type=int, default=80, help="part 2 stops here")
    parser.add_argument("--parts", default="1,2,3")
    parser.add_argument("--repeat", type=int, default=1, help="part 3's runs, interleaved")
    options = parser.parse_args(argv)
    parts = set(options.parts.split(","))

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    with (
        bench_database(options.dsn) as (dbname, worker_dsn),
        tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp,
    ):
        admin_dsn = with_params(options.dsn, dbname=dbname)
        bench = Bench(admin_dsn, worker_dsn, dbname, Path(tmp))
        version = bench.sql("SHOW server_version")[0]
        print(
            f"CPUs {os.cpu_count()}, PostgreSQL {version}, Python {platform.python_version()}, "
            f"jobqueue {jobqueue.__version__} from {Path(jobqueue.__file__).parent}, "
            f"{platform.platform()}, load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        try:
            if "1" in parts:
                print("1. connections of one worker process (the leader: +1 maintenance)")
                for pool, concurrency in (("threads", 1), ("threads", 4), ("threads", 16),
                                          ("processes", 4)):  # fmt: skip
                    for task in ("noop", "enqueue_one"):
                        bench.per_worker(pool, concurrency, task)
            if "2" in parts:
                print("2. worker processes started one by one until one cannot connect")
                bench.most_workers(options.backlog, options.max_workers)
            if "3" in parts:
                print(
                    f"3. drain of {options.jobs:,} no-op jobs; this machine has "
                    f"{os.cpu_count()} cores: past a few processes this measures CPU "
                    "contention (workers, server and benchmark share them)"
                )
                counts = [int(c) for c in options.processes.split(",")]
                rates: dict[int, list[float]] = {count: [] for count in counts}
                peaks: dict[int, list[int]] = {count: [] for count in counts}
                for run in range(options.repeat):
                    for count in counts if run % 2 == 0 else counts[::-1]:
                        rate, peak = bench.drain(count, options.jobs)
                        rates[count].append(rate)
                        peaks[count].append(peak)
                base = statistics.median(rates[counts[0]])
                print(f"  medians of {options.repeat} run(s):")
                for count in counts:
                    median = statistics.median(rates[count])
                    every = ", ".join(f"{rate:,.0f}" for rate in rates[count])
                    print(
                        f"  {count:2} processes: {median:,.0f} jobs/s ({median / base:.2f}x "
                        f"{counts[0]}; runs {every}), peak connections {max(peaks[count])}"
                    )
        finally:
            bench.close()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
