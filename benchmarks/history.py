"""History at 10 M jobs: the claim path, stats and retention with a large history.

    .venv/bin/python -m benchmarks.history --dsn postgresql://.../postgres \\
        [--rows 10000000] [--repeat 3] [--migration-rows 3000000]

On a database of its own (created and dropped here), it compares a schema with
an empty history to one holding ``--rows`` finished jobs (loaded in SQL, half
of them in one day old enough to expire, the rest in the last two days):

- drain rate: one ``jobqueue worker`` (concurrency 8) runs 20,000 no-op jobs
  enqueued at once; jobs per second from the enqueue to the last completion;
- claim and completion latency: the statements themselves, p50 over 540
  batches of 50 jobs on each schema, one batch on each in turn, on sessions
  set up as a worker's;
- ``queue_stats`` (what ``jobqueue stats`` reads): p50 of 50 reads;
- pruning: retention drops the expired day (half of ``--rows``);
- the migration to 0012 of a plain 0011 table of ``--migration-rows`` jobs:
  its phases, and the longest a reader waited on the table meanwhile.

Each figure is the median of ``--repeat`` runs (empty and full interleaved).
Run it on a stock server (autovacuum on), not on a tuned or shared one.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from benchmarks.tasks import register
from jobqueue import JobQueue, migrate
from jobqueue.ids import new_id
from jobqueue.worker.outcome import Outcome, outcome_params

ROOT = Path(__file__).resolve().parent.parent

# The workers' app (-A benchmarks.history:app): it keeps every result, so the
# leader's retention leaves the history (and the day this measures dropping) alone.
app = JobQueue(result_expires=None, failed_result_expires=None)
register(app)
DAY = 86400.0
REVISION = int(migrate.head_revision())

# A UUIDv7 for a given Unix time in ms (as jobqueue.uuid7(), with the time given).
_ID_AT = (
    "encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) PLACING "
    "substring(int8send(({ms})::bigint) FROM 3) FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid"
)


# ``varied`` history (load_finished): 100 tasks on 20 queues (task<n> on
# q<n % 20>), named as benchmarks.metrics' live state names them, in runs of 49
# jobs (so that one in ``failed`` rows falls on every task), an argument per
# job, and failures that carry an error with a traceback, as a worker records one.
_VARIED = {
    "task": "'task' || (g / 49 % 100)",
    "queue": "'q' || (g / 49 % 20)",
    "args": "jsonb_build_array(g)",
    "error": (
        "CASE WHEN {failure} THEN jsonb_build_object('type', e.name, 'module', 'builtins', "
        "'message', 'bad input ' || g, 'args', NULL, 'traceback', "
        "'Traceback (most recent call last):' || chr(10) || "
        "'  File \"/srv/app/tasks.py\", line ' || (10 + g % 90) || ', in run' || chr(10) || "
        "'    raise ' || e.name || '(value)' || chr(10) || e.name || ': bad input ' || g) END"
    ),
}
_PLAIN = {"task": "'noop'", "queue": "'default'", "args": "'[]'", "error": "NULL"}


def load_finished(
    conn: Any, schema: str, day_start: float, rows: int, finished_ago: float, failed: int = 0,
    varied: bool = False,
) -> None:  # fmt: skip
    """``rows`` jobs made during the day starting at ``day_start`` (Unix
    seconds), finished ``finished_ago`` seconds ago, one in ``failed`` FAILURE
    (none if 0), the rest SUCCESS; a million per statement. All are task
    'noop' on queue 'default' with no arguments, unless ``varied`` (_VARIED)."""
    failure = f"g % {failed} = 0" if failed else "false"
    state = f"CASE WHEN {failure} THEN 'FAILURE' ELSE 'SUCCESS' END"
    columns = {k: v.format(failure=failure) for k, v in (_VARIED if varied else _PLAIN).items()}
    errors = "(ARRAY['ValueError', 'KeyError', 'TimeoutError'])[1 + g % 3]"
    names = f", LATERAL (SELECT {errors} AS name) AS e" if varied else ""
    step = 1_000_000
    for first in range(0, rows, step):
        count = min(step, rows - first)
        ms = f"{int(day_start * 1000)} + (g * {int(DAY * 1000) // rows})"
        conn.execute(
            f'INSERT INTO "{schema}".jobs (id, task, queue, args, state, attempts, created_at, '
            "started_at, finished_at, result, error) "
            f"SELECT {_ID_AT.format(ms=ms)}, {columns['task']}, {columns['queue']}, "
            f"{columns['args']}, {state}, 1, now(), now(), "
            f"now() - make_interval(secs => {finished_ago}), 'null', {columns['error']} "
            f"FROM generate_series({first}, {first + count - 1}) AS g{names}"
        )


def day_start(offset: int) -> float:
    now = time.time()
    return (now // DAY + offset) * DAY


@contextmanager
def bench_database(server_dsn: str) -> Iterator[str]:
    name = f"bench_history_{os.getpid()}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(server_dsn)
    params["dbname"] = name
    try:
        yield make_conninfo("", **{k: v for k, v in params.items() if v is not None})
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def prepare(dsn: str, schema: str, rows: int, failed: int = 0, varied: bool = False) -> None:
    """Partitions for today, tomorrow, the last two days and a day ten days
    ago (the same for both schemas: a claim's plan locks every partition).
    Half the rows in the day ten days ago (finished 8 days ago: past both
    ages), a quarter in each of the last two days (kept); ``failed`` and
    ``varied`` as load_finished takes them."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        s = f'"{schema}"'
        # The (empty) legacy partition covers every past day; these days get their own.
        conn.execute(f"DROP TABLE {s}.jobs_legacy, {s}.job_attempts_legacy")
        conn.execute(f"DELETE FROM {s}.history_partitions WHERE name = 'legacy'")
        for offset in (-10, -2, -1, 0, 1):
            start = day_start(offset)
            conn.execute(
                f"SELECT {s}.history_partition_add(to_timestamp(%s), to_timestamp(%s))",
                [start, start + DAY],
            )
        if not rows:
            return
        started = time.monotonic()
        for offset, count, ago in (
            (-10, rows // 2, 8 * DAY),
            (-2, rows // 4, 3600),
            (-1, rows - rows // 2 - rows // 4, 60),
        ):
            load_finished(conn, schema, day_start(offset), count, ago, failed, varied)
        print(f"  loaded {rows:,} finished jobs in {time.monotonic() - started:.0f} s", flush=True)
        conn.execute(f"VACUUM ANALYZE {s}.jobs")
        conn.execute(f"VACUUM ANALYZE {s}.job_counts")


@contextmanager
def worker(dsn: str, schema: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobqueue", "-A", "benchmarks.history:app", "--dsn", dsn,
         "--schema", schema, "worker", "--concurrency", "8", "--pool", "threads",
         "--loglevel", "warning"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            wait(lambda: one(conn, f'SELECT count(*) FROM "{schema}".workers') > 0, 60)
        yield proc
    finally:
        proc.terminate()
        proc.wait(60)


def one(conn: Any, sql: str, params: Any = None) -> Any:
    row = conn.execute(sql, params).fetchone()
    return row[0] if row else None


def wait(done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step timed out")
        time.sleep(0.005)


def drain_rate(dsn: str, schema: str, n: int = 20_000) -> float:
    app = JobQueue(dsn, schema=schema, auto_migrate=False)
    noop = register(app)
    s = f'"{schema}"'
    try:
        with worker(dsn, schema), psycopg.connect(dsn, autocommit=True) as conn:
            started = time.monotonic()
            app.enqueue_many(noop, [() for _ in range(n)])
            empty = (
                f"SELECT NOT EXISTS (SELECT 1 FROM {s}.job_queue) "
                f"AND NOT EXISTS (SELECT 1 FROM {s}.job_lease)"
            )
            wait(lambda: bool(one(conn, empty)), 300)
            return n / (time.monotonic() - started)
    finally:
        app.close()


def statement_latency(
    dsn: str, schemas: tuple[str, ...], batches: int = 600, size: int = 50
) -> dict[str, tuple[float, float]]:
    """p50 of the claim and of the completion statement per schema, in ms: one
    batch on each schema in turn (the order alternating), so the machine's
    noise falls on both alike."""
    apps = {s: JobQueue(dsn, schema=s, auto_migrate=False) for s in schemas}
    tasks = {s: register(a) for s, a in apps.items()}
    worker_id = new_id()
    times: dict[str, tuple[list[float], list[float]]] = {s: ([], []) for s in schemas}
    conns = {s: psycopg.connect(dsn, autocommit=True) for s in schemas}
    try:
        for s, conn in conns.items():
            apps[s].store.hot_session(conn)
        for batch in range(batches):
            for s in schemas if batch % 2 else reversed(schemas):
                store, conn = apps[s].store, conns[s]
                apps[s].enqueue_many(tasks[s], [() for _ in range(size)])
                started = time.perf_counter()
                rows = store.claim(conn, ["default"], size, worker_id, REVISION)
                claimed = time.perf_counter()
                done = [Outcome(r[0], r[6], "SUCCESS", result="null") for r in rows]
                store.complete(conn, outcome_params(done, worker_id), [])
                if batch >= batches // 10:  # psycopg prepares a statement on its sixth run
                    times[s][0].append(claimed - started)
                    times[s][1].append(time.perf_counter() - claimed)
    finally:
        for conn in conns.values():
            conn.close()
        for app_ in apps.values():
            app_.close()
    return {
        s: (statistics.median(c) * 1000, statistics.median(k) * 1000) for s, (c, k) in times.items()
    }


def stats_latency(dsn: str, schema: str, reads: int = 50) -> float:
    app = JobQueue(dsn, schema=schema, auto_migrate=False)
    times = []
    try:
        for _ in range(reads):
            started = time.perf_counter()
            app.store.queue_stats()
            times.append(time.perf_counter() - started)
    finally:
        app.close()
    return statistics.median(times[5:]) * 1000


@contextmanager
def reader(dsn: str, schema: str) -> Iterator[list[float]]:
    """What a producer or a result lookup sees meanwhile: the time of each read
    of one job by id, every 2 ms."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        probe_id = one(conn, f'SELECT id FROM "{schema}".jobs ORDER BY id DESC LIMIT 1')
    stop = threading.Event()
    waits: list[float] = []

    def run() -> None:
        with psycopg.connect(dsn, autocommit=True) as c:
            while not stop.is_set():
                started = time.perf_counter()
                c.execute(f'SELECT state FROM "{schema}".jobs WHERE id = %s', [probe_id])
                waits.append(time.perf_counter() - started)
                time.sleep(0.002)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield waits
    finally:
        stop.set()
        thread.join()


def prune(dsn: str, schema: str) -> tuple[float, float, list[tuple[str, int]]]:
    """Retention by partition with the default ages: (seconds, the longest a
    concurrent reader of jobs waited, what it dropped or compacted)."""
    app = JobQueue(dsn, schema=schema, auto_migrate=False)
    try:
        with reader(dsn, schema) as waits, psycopg.connect(dsn, autocommit=True) as conn:
            started = time.perf_counter()
            done = app.store.history_prune(conn, 86400.0, 604800.0)
            seconds = time.perf_counter() - started
        return seconds, max(waits), done
    finally:
        app.close()


class PhaseLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "0012 phase" in record.getMessage():
            self.lines.append(record.getMessage())


def migration_cost(dsn: str, rows: int) -> None:
    schema = "hist_migration"
    migrate.upgrade(dsn, schema, "0011")
    with psycopg.connect(dsn, autocommit=True) as conn:
        load_finished(conn, schema, day_start(-1), rows, 60)
        conn.execute(f'VACUUM ANALYZE "{schema}".jobs')
    handler = PhaseLog()
    logging.getLogger("alembic.runtime.migration").addHandler(handler)
    logging.getLogger("alembic.runtime.migration").setLevel(logging.INFO)
    started = time.monotonic()
    with reader(dsn, schema) as waits:
        migrate.upgrade(dsn, schema)
    total = time.monotonic() - started
    print(f"  migration of {rows:,} jobs to 0012: {total:.1f} s in all", flush=True)
    for line in handler.lines:
        print(f"    {line}", flush=True)
    longest = max(waits) * 1000
    print(f"    longest wait of a concurrent reader of jobs: {longest:.0f} ms", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", required=True, help="a maintenance database on the server")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--migration-rows", type=int, default=3_000_000)
    options = parser.parse_args()

    with bench_database(options.dsn) as dsn:
        migrate.upgrade(dsn, "hist_empty")
        migrate.upgrade(dsn, "hist_full")
        print(f"history of {options.rows:,} finished jobs", flush=True)
        prepare(dsn, "hist_empty", 0)
        prepare(dsn, "hist_full", options.rows)
        figures: dict[str, dict[str, list[float]]] = {"hist_empty": {}, "hist_full": {}}
        for run in range(options.repeat):
            for schema in ("hist_empty", "hist_full"):
                got = figures[schema]
                got.setdefault("drain (jobs/s)", []).append(drain_rate(dsn, schema, 30_000))
                got.setdefault("queue_stats, p50 (ms)", []).append(stats_latency(dsn, schema))
                print(f"  run {run + 1} {schema}: " + ", ".join(
                    f"{k} {v[-1]:,.2f}" for k, v in got.items()), flush=True)  # fmt: skip
        latency = statement_latency(dsn, ("hist_empty", "hist_full"))
        for schema, (claim, complete) in latency.items():
            figures[schema]["claim of 50, p50 (ms)"] = [claim]
            figures[schema]["completion of 50, p50 (ms)"] = [complete]
        print(f"{'':32}{'empty':>12}{f'{options.rows:,}':>12}{'ratio':>8}")
        for key in figures["hist_empty"]:
            empty = statistics.median(figures["hist_empty"][key])
            full = statistics.median(figures["hist_full"][key])
            print(f"{key:32}{empty:12,.2f}{full:12,.2f}{full / empty:8.3f}")
        seconds, waited, done = prune(dsn, "hist_full")
        print(f"pruning the expired day ({options.rows // 2:,} jobs): {seconds * 1000:.0f} ms "
              f"(a concurrent reader waited {waited * 1000:.0f} ms at most): {done}",
              flush=True)  # fmt: skip
        print(f"queue_stats after the drop, p50: {stats_latency(dsn, 'hist_full'):.2f} ms")
        # A day whose successes expired but whose failures (1 %) are younger
        # than failed_result_expires: compacted.
        with psycopg.connect(dsn, autocommit=True) as conn:
            start = day_start(-5)
            s = '"hist_full"'
            conn.execute(
                f"SELECT {s}.history_partition_add(to_timestamp(%s), to_timestamp(%s))",
                [start, start + DAY],
            )
            load_finished(conn, "hist_full", start, options.rows // 2, 2 * DAY, failed=100)
            conn.execute(f"VACUUM ANALYZE {s}.jobs")
        seconds, waited, done = prune(dsn, "hist_full")
        print(f"compacting a day of {options.rows // 2:,} jobs, 1 % young failures: "
              f"{seconds * 1000:.0f} ms (a concurrent reader waited {waited * 1000:.0f} ms "
              f"at most): {done}", flush=True)  # fmt: skip
        if options.migration_rows:
            migration_cost(dsn, options.migration_rows)


if __name__ == "__main__":
    main()
