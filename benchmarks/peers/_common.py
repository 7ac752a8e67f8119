"""Standard-library plumbing shared by the per-system workload scripts.

A script defines a ``System`` (how to enqueue, start a worker and read
progress from that system's own records) and calls ``main``; the workloads
themselves are written once, here, so every system runs exactly the same ones.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
LATENCY_ENV = "BENCH_LATENCY_FILE"
WORKLOADS = ("bulk", "single", "drain", "drain2", "latency", "bloat", "sustained")
Metrics = dict[str, Any]


class System(Protocol):
    name: str
    version: str
    config: str  # the worker configuration, as shown in the report
    has_history: bool  # finished jobs stay in PostgreSQL (bloat applies)
    claim_tables: tuple[str, ...]  # the tables its claim reads

    def setup(self, dsn: str) -> None: ...
    def close(self) -> None: ...
    def enqueue_bulk(self, n: int) -> list[Any]: ...
    def enqueue_one(self) -> None: ...
    def enqueue_stamp(self, sent: float) -> Any: ...
    def start_worker(self) -> subprocess.Popen[bytes]: ...
    def pending(self) -> int: ...
    def span(self, ids: list[Any]) -> tuple[float, float]: ...
    def db_latencies(self, ids: list[Any]) -> list[float] | None: ...
    def hold(self) -> None: ...
    def release(self) -> None: ...
    def clone_history(self, n: int) -> None: ...


# -- the task side ---------------------------------------------------------------------


def record_latency(sent: float) -> None:
    """Called first thing by the latency task inside the worker."""
    elapsed = time.time() - sent
    path = os.environ.get(LATENCY_ENV)
    if path:
        with open(path, "a") as out:
            out.write(f"{elapsed:.6f}\n")


# -- processes ----------------------------------------------------------------------


class Workers:
    """Worker subprocesses in their own sessions, so a prefork pool dies with them."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: dict[int, Path] = {}

    def spawn(self, command: Sequence[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = Path(tempfile.mkstemp(prefix="bench-worker-", suffix=".log")[1])
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **env}
        with log.open("wb") as err:
            proc = subprocess.Popen(
                list(command),
                cwd=ROOT,
                env=full_env,
                stdout=err,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        self.logs[proc.pid] = log
        return proc

    def check(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                tail = self.logs[proc.pid].read_text(errors="replace")[-3000:]
                raise RuntimeError(f"worker {proc.pid} exited ({proc.returncode}):\n{tail}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            with suppress(ProcessLookupError):  # prefork children left behind
                os.killpg(proc.pid, signal.SIGKILL)
            self.logs.pop(proc.pid).unlink(missing_ok=True)
        self.procs.clear()


def rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MiB."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        with suppress(OSError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def wait_until(what: str, done: Callable[[], bool], workers: Workers, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        workers.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


# -- PostgreSQL through psql (no driver needed here) ------------------------------------


def with_dbname(dsn: str, dbname: str) -> str:
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres"):
        raise SystemExit("--dsn must be a postgresql:// URI")
    return urlunsplit(parts._replace(path=f"/{dbname}"))


def psql(dsn: str, query: str) -> list[list[str]]:
    out = subprocess.run(
        ["psql", dsn, "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", query],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [line.split("\t") for line in out.splitlines() if line]


@contextmanager
def scratch_database(server_dsn: str, system: str) -> Iterator[str]:
    name = f"bench_{system}_{os.getpid()}"
    psql(server_dsn, f'CREATE DATABASE "{name}"')
    try:
        yield with_dbname(server_dsn, name)
    finally:
        psql(server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sizes_mb(dsn: str) -> Metrics:
    """Heap (with TOAST) and index size of every table in the scratch database."""
    rows = psql(
        dsn,
        "SELECT c.relname, pg_table_size(c.oid), pg_indexes_size(c.oid) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "ORDER BY pg_total_relation_size(c.oid) DESC",
    )
    mb = 2**20
    return {
        "table_mb": sum(int(r[1]) for r in rows) / mb,
        "index_mb": sum(int(r[2]) for r in rows) / mb,
        "tables": {r[0]: round((int(r[1]) + int(r[2])) / mb, 1) for r in rows[:4]},
    }


# -- workloads ------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


CHUNK = 1_000  # how an application sends a bulk: the harness measured this


def bulk(system: System, n: int) -> Metrics:
    """``n`` jobs in one call, then ``n`` more in calls of ``CHUNK`` (each its
    own transaction, as a loop over a web request's or an import's rows sends
    them)."""
    start = time.perf_counter()
    system.enqueue_bulk(n)
    metrics = {"jobs_s": n / (time.perf_counter() - start)}
    start = time.perf_counter()
    for _ in range(-(-n // CHUNK)):
        system.enqueue_bulk(CHUNK)
    metrics["chunk_jobs_s"] = -(-n // CHUNK) * CHUNK / (time.perf_counter() - start)
    return metrics


def single(system: System, seconds: float, threads: int, warmup: float = 0.0) -> Metrics:
    """Threads enqueueing one job at a time: a warm-up, then the measurement
    (with new threads). Both are reported: with the driver's blocking calls from
    threads, the first seconds of a fresh process can run at about half the
    later rate on this 2-core machine (how the scheduler first places the
    threads next to the server's processes), which a long-lived producer does
    not see."""
    system.enqueue_one()  # connections open outside the measurement
    metrics: Metrics = {}
    if warmup:
        metrics["first_jobs_s"] = enqueue_for(system, warmup, threads)
    metrics["jobs_s"] = enqueue_for(system, seconds, threads)
    return metrics


def enqueue_for(system: System, seconds: float, threads: int) -> float:
    """One-job enqueues from ``threads`` threads for ``seconds``; jobs/s."""
    return in_threads(seconds, threads, lambda index: system.enqueue_one())


def in_threads(seconds: float, threads: int, call: Callable[[int], object]) -> float:
    """``call(thread_index)`` in a loop from ``threads`` threads for ``seconds``;
    calls per second."""
    import threading

    counts = [0] * threads
    deadline = time.perf_counter() + seconds

    def loop(index: int) -> None:
        while time.perf_counter() < deadline:
            call(index)
            counts[index] += 1

    pool = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    start = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return sum(counts) / (time.perf_counter() - start)


def drain(system: System, workers: Workers, n: int, count: int) -> Metrics:
    """Idle workers, then one bulk enqueue; first start to last finish. Then
    the same drain on warm tables: vacuumed and analyzed, as autovacuum keeps
    them on a server that has run a while. The first ran on tables created
    just before, never analyzed: a system whose planner needs statistics shows
    its cold start there, and its steady state in the second."""
    first, last, wall, wal = _drain_once(system, workers, n, count)
    # wall: the client's view (enqueue committed -> nothing pending), a cross-check;
    # dead rows: what the drain left behind for the next claim to step over;
    # WAL per job: what claiming and completing one job writes (server-wide).
    result = {"jobs_s": n / (last - first), "wall_jobs_s": n / wall}
    result |= dead_rows(system.claim_tables)
    if wal is not None:
        result["wal_bytes_per_job"] = wal / n
    dsn = os.environ.get("BENCH_SCRATCH_DSN")
    if dsn:
        psql(dsn, "VACUUM ANALYZE")
        first, last, _, _ = _drain_once(system, workers, n, count)
        result["warm_jobs_s"] = n / (last - first)
    return result


def _drain_once(
    system: System, workers: Workers, n: int, count: int
) -> tuple[float, float, float, int | None]:
    """``count`` idle workers drain ``n`` jobs enqueued in one call: the first
    start and last finish as the system recorded them, the client's wall time
    from the commit to nothing pending, and the server's WAL written meanwhile
    (None outside PostgreSQL)."""
    for _ in range(count):
        system.start_worker()
    system.hold()
    ids = system.enqueue_bulk(n)
    system.release()
    committed = time.perf_counter()
    wal_before = wal_bytes()
    wait_until("the drain", lambda: system.pending() == 0, workers, max(120.0, n / 100))
    wall = time.perf_counter() - committed
    wal_after = wal_bytes()
    first, last = system.span(ids)
    workers.stop()
    wal = None if wal_before is None or wal_after is None else wal_after - wal_before
    return first, last, wall, wal


def wal_bytes() -> int | None:
    """The server's WAL position in bytes (None for systems outside PostgreSQL)."""
    dsn = os.environ.get("BENCH_SCRATCH_DSN")
    if not dsn:
        return None
    return int(psql(dsn, "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")[0][0].split(".")[0])


def checkpoint() -> None:
    """Start a probe from a steady state: a bulk load just before it would make
    the probe pay for the load's checkpoint (every page's first change after a
    checkpoint writes a full page image to the WAL)."""
    dsn = os.environ.get("BENCH_SCRATCH_DSN")
    if dsn:
        psql(dsn, "CHECKPOINT")


def dead_rows(claim_tables: Sequence[str]) -> Metrics:
    """Dead tuples, as the statistics count them: in the tables the claim reads
    (what the next claim must step over) and in the whole scratch database."""
    dsn = os.environ.get("BENCH_SCRATCH_DSN")
    if not dsn:
        return {}
    time.sleep(1.0)  # backends publish their table statistics within a second
    names = ",".join("'" + t.replace("'", "") + "'" for t in claim_tables) or "NULL"
    claim, total = psql(
        dsn,
        "SELECT COALESCE(sum(n_dead_tup) FILTER (WHERE relname IN (" + names + ")), 0), "
        "COALESCE(sum(n_dead_tup), 0) FROM pg_stat_user_tables",
    )[0]
    return {"dead_rows_claim": int(claim), "dead_rows": int(total)}


def sustained(system: System, workers: Workers, seconds: float, window: float = 30.0) -> Metrics:
    """Enqueue and drain at the same time for ``seconds``: one default worker, and a
    producer that tops the backlog up with bulk enqueues of 1,000 whenever fewer
    than 5,000 wait. Reports the completion rate over the whole run and over its
    first and last ``window`` seconds (dead rows piling up would show as a drop)."""
    system.start_worker()
    enqueued, samples = 0, []  # (seconds since start, jobs done)
    start = time.perf_counter()
    while (now := time.perf_counter() - start) < seconds:
        workers.check()
        pending = system.pending()
        samples.append((now, enqueued - pending))
        if pending < 5_000:
            system.enqueue_bulk(1_000)
            enqueued += 1_000
        else:
            time.sleep(0.05)
    workers.stop()

    def done_at(t: float) -> float:
        return min(samples, key=lambda s: abs(s[0] - t))[1]

    end, total = samples[-1]
    window = min(window, end / 3)
    return {
        "jobs_s": total / end,
        "first_jobs_s": done_at(window) / window,
        "last_jobs_s": (total - done_at(end - window)) / window,
    } | dead_rows(system.claim_tables)


def latency(system: System, workers: Workers, count: int, interval: float) -> Metrics:
    """An idle worker; jobs sent one at a time every ``interval`` seconds."""
    return latency_summary(*latency_samples(system, workers, count, interval))


def latency_summary(ms: Sequence[float], db: Sequence[float] | None) -> Metrics:
    result = {"p50_ms": statistics.median(ms), "p99_ms": percentile(ms, 0.99)}
    if db:
        result |= {"db_p50_ms": statistics.median(db), "db_p99_ms": percentile(db, 0.99)}
    return result


def latency_samples(
    system: System, workers: Workers, count: int, interval: float
) -> tuple[list[float], list[float] | None]:
    """Enqueue-to-start and in-database latencies (ms) of one trickle."""
    path = Path(os.environ[LATENCY_ENV])
    system.start_worker()
    for _ in range(5):  # warm-up: connections, imports, caches
        system.enqueue_stamp(time.time())
        time.sleep(interval)
    wait_until("the warm-up", lambda: system.pending() == 0, workers, 60)
    checkpoint()  # not one forced by the WAL of the workloads before, halfway through
    path.write_text("")
    ids, tick = [], time.perf_counter()
    for _ in range(count):
        ids.append(system.enqueue_stamp(time.time()))
        tick += interval
        time.sleep(max(0.0, tick - time.perf_counter()))
    wait_until("the trickle", lambda: system.pending() == 0, workers, 60)
    time.sleep(0.2)  # the last task's write
    workers.stop()
    ms = [float(line) * 1000 for line in path.read_text().split()]
    if len(ms) != count:
        raise RuntimeError(f"latency: {len(ms)} of {count} tasks reported")
    return ms, system.db_latencies(ids)


def pass_through(
    system: System, workers: Workers, total: int, checkpoints: Sequence[int], chunk: int = 10_000
) -> Metrics:
    """``total`` jobs through one worker, fed in chunks; worker RSS at checkpoints."""
    proc = system.start_worker()
    result: Metrics = {"rss_mb_start": rss_mb(proc.pid)}
    enqueued, start = 0, time.perf_counter()
    deadline = time.monotonic() + max(600.0, total / 50)
    while True:
        workers.check()
        pending = system.pending()
        done = enqueued - pending
        for mark in checkpoints:
            if f"rss_mb_{mark}" not in result and done >= mark:
                result[f"rss_mb_{mark}"] = rss_mb(proc.pid)
        if enqueued < total and pending < chunk:
            batch = min(chunk, total - enqueued)
            system.enqueue_bulk(batch)
            enqueued += batch
        elif enqueued >= total and pending == 0:
            break
        elif time.monotonic() > deadline:
            raise RuntimeError(f"pass-through: {done:,}/{total:,} done before the deadline")
        else:
            time.sleep(0.2)
    result["pass_jobs_s"] = total / (time.perf_counter() - start)
    result["rss_mb_end"] = rss_mb(proc.pid)
    workers.stop()
    return result


def bloat(system: System, workers: Workers, options: argparse.Namespace, dsn: str) -> Metrics:
    """Drain and latency on an empty table, then with ``--history`` finished jobs.

    The history is real up to the last memory checkpoint (that many jobs pass
    through one worker, whose RSS is read on the way); the rest are copies of
    those finished rows made by SQL in the system's own tables, since a
    million jobs through the slowest worker would take an hour.
    """
    marks = [int(m) for m in options.memory_at.split(",")]
    result: Metrics = {}
    total = max(options.history, *marks) if system.has_history else max(marks)
    if system.has_history:
        result |= prefixed("empty_", probes(system, workers, options))
    passed = max(marks)
    result |= pass_through(system, workers, passed, marks)
    result["history"] = total
    if system.has_history:
        if total > passed:
            start = time.perf_counter()
            system.clone_history(total - passed)
            psql(dsn, "ANALYZE")
            result["clone_s"] = time.perf_counter() - start
        result |= sizes_mb(dsn)
        result |= prefixed("hist_", probes(system, workers, options))
    return result


def probes(system: System, workers: Workers, options: argparse.Namespace) -> Metrics:
    """The bloat probes, repeated: a drain of ``--probe-jobs`` that lasts under a
    second moves by ~10 % from one run to the next, too much to judge a 10 %
    bound on. Up to ``--probe-reps`` drains (median) and latency trickles (the
    samples pooled), stopping early once the probes have taken a minute: a
    probe that long is steady already (and the slowest peers take minutes)."""
    drains: list[Metrics] = []
    ms: list[float] = []
    db: list[float] = []
    started = time.perf_counter()
    for _ in range(options.probe_reps):
        checkpoint()
        drains.append(drain(system, workers, options.probe_jobs, 1))
        trickle, in_db = latency_samples(system, workers, options.latency_jobs, 0.02)
        ms += trickle
        db += in_db or []
        if time.perf_counter() - started > 60:
            break
    result = {key: statistics.median(d[key] for d in drains) for key in drains[0]}
    return result | {"each_jobs_s": [d["jobs_s"] for d in drains]} | latency_summary(ms, db)


def prefixed(prefix: str, metrics: Metrics) -> Metrics:
    return {prefix + key: value for key, value in metrics.items()}


# -- entry point ------------------------------------------------------------------------


def parse_args(system: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.peers.{system}")
    add = parser.add_argument
    add("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres", help="server DSN")
    add("--workload", required=True, choices=WORKLOADS)
    add("--jobs", type=int, default=10_000, help="bulk and drain size")
    add("--seconds", type=float, default=3.0, help="single/sustained: how long to enqueue")
    add("--threads", type=int, default=4, help="single: enqueuing threads")
    add("--warmup", type=float, default=0.0, help="single: seconds enqueued first, not counted")
    add("--latency-jobs", type=int, default=200, help="latency: jobs in the trickle")
    add("--interval", type=float, default=0.02, help="latency: seconds between jobs")
    add("--history", type=int, default=1_000_000, help="bloat: jobs passed through")
    add("--probe-jobs", type=int, default=20_000, help="bloat: drain size before and after")
    add("--probe-reps", type=int, default=3, help="bloat: probes before and after (at most)")
    add("--memory-at", default="10000,200000", help="bloat: RSS checkpoints (jobs done)")
    return parser.parse_args(argv)


def run(system: System, options: argparse.Namespace, dsn: str, workers: Workers) -> Metrics:
    workload = options.workload
    if workload == "bulk":
        return bulk(system, options.jobs)
    if workload == "single":
        return single(system, options.seconds, options.threads, options.warmup)
    if workload in ("drain", "drain2"):
        return drain(system, workers, options.jobs, 2 if workload == "drain2" else 1)
    if workload == "latency":
        return latency(system, workers, options.latency_jobs, options.interval)
    if workload == "sustained":
        return sustained(system, workers, options.seconds)
    return bloat(system, workers, options, dsn)


def main(system: System, workers: Workers, needs_database: bool = True) -> int:
    options = parse_args(system.name)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    fd, latency_file = tempfile.mkstemp(prefix="bench-latency-")
    os.close(fd)
    os.environ[LATENCY_ENV] = latency_file
    database = (
        scratch_database(options.dsn, system.name) if needs_database else _no_database(options.dsn)
    )
    try:
        with database as dsn:
            if needs_database:  # Celery keeps its jobs in Redis
                os.environ["BENCH_SCRATCH_DSN"] = dsn
            system.setup(dsn)
            try:
                metrics = run(system, options, dsn, workers)
            finally:
                workers.stop()
                system.close()
    finally:
        os.unlink(latency_file)
    line = {
        "system": system.name,
        "version": system.version,
        "config": system.config,
        "workload": options.workload,
        "metrics": metrics,
    }
    print("RESULT " + json.dumps(line), flush=True)
    return 0


@contextmanager
def _no_database(dsn: str) -> Iterator[str]:
    yield dsn
