"""The drain against its own ceiling: jobqueue's claim and completion
statements run by pgbench (no Python, no worker), beside a real worker
draining the same jobs on the same server.

    .venv/bin/python -m benchmarks.drain_ceiling [--dsn DSN] [--jobs 100000]
        [--batch 32 --batch 128 ...] [--reps 3]

Without ``--dsn`` it starts a stock server of its own (benchmarks/stockserver.py).
Each repetition, on a fresh schema each time and in alternating order:

- **pgbench ceiling** at each ``--batch``: ``--jobs`` no-op jobs enqueued in
  one call, then one pgbench client runs, per transaction, ``job_claim`` of
  that many jobs and ``job_complete_many`` of what it claimed, each its own
  autocommit statement, prepared, with the worker's session settings
  (``session_hot_path``) and its parameters in the worker's form (ids,
  attempts and states comma-separated, results as JSON). The statements are
  the worker's own text from ``jobqueue/sql/queries.sql`` inside two
  plpgsql functions (``RETURN QUERY``: pgbench cannot carry rows from one
  statement to the next), which adds one function call per statement.
- **worker**: the same jobs drained by one ``jobqueue worker`` (defaults),
  first start to last finish (``throughput.Bench.drain``'s way), with the
  server's commits per job and the worker's CPU per job.

Prints the medians and the worker as a share of the best ceiling.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from typing import Any

import psycopg

from benchmarks.events import cpu_seconds
from benchmarks.stockserver import stock_server
from benchmarks.throughput import Bench, bench_database
from jobqueue import migrate
from jobqueue.sql import queries

# session_hot_path, as PGOPTIONS for pgbench's connection.
HOT_PATH = (
    "-c enable_seqscan=off -c enable_bitmapscan=off -c plan_cache_mode=force_generic_plan "
    "-c jit=off"
)
PARAM = re.compile(r"%\((\w+)\)s")
CLAIM_PARAMS = {
    "queues": "text[]",
    "limit": "integer",
    "worker_id": "uuid",
    "revision": "integer",
    "skip_tasks": "text[]",
}
COMPLETE_PARAMS = {
    "ids": "text",
    "attempts": "text",
    "states": "text",
    "results": "text",
    "errors": "text",
    "delays": "text",
    "worker_id": "uuid",
}
# One transaction of the ceiling: a claim, then the completion of what it
# claimed, as the worker's completer sends it (every job a success, result null).
SCRIPT = """\
SELECT string_agg(id, ',') AS ids, string_agg(attempts::text, ',') AS attempts,
       count(*) AS n FROM ceiling.claim(:batch) \\gset
SELECT ceiling.complete(:ids, :attempts, :n);
"""


def _function(name: str, statement: str, params: dict[str, str], returns: str) -> str:
    """The statement inside a plpgsql function of the same parameters."""
    body = PARAM.sub(lambda m: f"p_{m[1]}", statement)
    args = ", ".join(f"p_{name} {kind}" for name, kind in params.items())
    return (
        f"CREATE FUNCTION ceiling.{name}({args}) RETURNS TABLE ({returns}) "
        f"LANGUAGE plpgsql AS $fn$ BEGIN RETURN QUERY {body}; END $fn$"
    )


def _columns(conn: psycopg.Connection[Any], statement: str, params: Mapping[str, Any]) -> str:
    """The statement's result columns as a RETURNS TABLE list (it changes
    nothing: run on an empty queue, or on no ids, and rolled back)."""
    with conn.transaction(force_rollback=True):
        cursor = conn.execute(statement, params)
        assert cursor.description is not None
        types = [c.type_code for c in cursor.description]
    names = [
        conn.execute("SELECT format_type(%s, NULL)", (oid,)).fetchone()[0]  # type: ignore[index]
        for oid in types
    ]
    return ", ".join(f"c{i} {kind}" for i, kind in enumerate(names))


def install(dsn: str, schema: str) -> None:
    """The ceiling's two functions over ``schema``'s statements."""
    sql = queries(schema)
    worker = "00000000-0000-7000-8000-000000000001"
    claim_params = {
        "queues": ["default"],
        "limit": 1,
        "worker_id": worker,
        "revision": int(migrate.head_revision()),
        "skip_tasks": [],
    }
    complete_params = {
        "ids": "",
        "attempts": "",
        "states": "",
        "results": "[]",
        "errors": "[]",
        "delays": "[]",
        "worker_id": worker,
    }
    with psycopg.connect(dsn, autocommit=True) as conn:
        claim_columns = _columns(conn, sql["job_claim"], claim_params)
        complete_columns = _columns(conn, sql["job_complete_many"], complete_params)
        conn.execute("DROP SCHEMA IF EXISTS ceiling CASCADE")
        conn.execute("CREATE SCHEMA ceiling")
        conn.execute(_function("claim_rows", sql["job_claim"], CLAIM_PARAMS, claim_columns))
        conn.execute(
            _function("complete_rows", sql["job_complete_many"], COMPLETE_PARAMS, complete_columns)
        )
        conn.execute(
            f"""CREATE FUNCTION ceiling.claim(n integer) RETURNS SETOF record LANGUAGE sql AS $$
                SELECT c0, c6 FROM ceiling.claim_rows(ARRAY['default'], n,
                    '{worker}'::uuid, {claim_params["revision"]}, ARRAY[]::text[]) $$"""
        )
        # As outcome_params makes them: one text per column.
        conn.execute(
            f"""CREATE FUNCTION ceiling.complete(ids text, attempts text, n integer)
                RETURNS bigint LANGUAGE sql AS $$
                SELECT c0 FROM ceiling.complete_rows(
                    ids, attempts, array_to_string(array_fill('SUCCESS'::text, ARRAY[n]), ','),
                    '[' || array_to_string(array_fill('null'::text, ARRAY[n]), ',') || ']',
                    '[' || array_to_string(array_fill('null'::text, ARRAY[n]), ',') || ']',
                    '[' || array_to_string(array_fill('null'::text, ARRAY[n]), ',') || ']',
                    '{worker}'::uuid) $$"""
        )


@contextlib.contextmanager
def _script(batch: int) -> Iterator[str]:
    text = SCRIPT.replace(
        "FROM ceiling.claim(:batch)", "FROM ceiling.claim(:batch) AS c(id text, attempts integer)"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as script:
        script.write(text)
        script.flush()
        yield script.name


def ceiling(bench: Bench, jobs: int, batch: int, clients: int, tag: str) -> float:
    """Jobs/s of pgbench claiming and completing ``jobs`` jobs ``batch`` at a
    time, from ``clients`` connections at once (a worker's claim and
    completion run on two)."""
    schema = f"ceiling_{tag}"
    app, noop = bench.schema(schema)
    try:
        install(bench.dsn, schema)
        app.enqueue_many(noop, [() for _ in range(jobs)])
        with psycopg.connect(bench.dsn, autocommit=True) as conn:
            conn.execute(f'VACUUM ANALYZE "{schema}".job_queue')
        env = {**os.environ, "PGOPTIONS": HOT_PATH}
        transactions = -(-jobs // (batch * clients))
        with _script(batch) as path:
            started = time.monotonic()
            subprocess.run(
                [
                    "pgbench",
                    "-n",
                    "-M",
                    "prepared",
                    "-f",
                    path,
                    "-t",
                    str(transactions),
                    "-c",
                    str(clients),
                    "-j",
                    str(clients),
                    f"--define=batch={batch}",
                    bench.dsn,
                ],
                check=True,
                capture_output=True,
                text=True,
                env=env,
            )
            elapsed = time.monotonic() - started
        done = bench.sql(f"SELECT count(*) FROM \"{schema}\".jobs WHERE state = 'SUCCESS'")[0]
        if done < jobs:
            raise RuntimeError(f"the ceiling finished {done:,} of {jobs:,} jobs")
        return jobs / elapsed
    finally:
        bench.discard(app, schema)
        with psycopg.connect(bench.dsn, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS ceiling CASCADE")


def worker_drain(bench: Bench, jobs: int, tag: str) -> dict[str, float]:
    """One worker draining ``jobs`` no-op jobs: jobs/s, commits and worker CPU per job."""
    schema = f"ceiling_worker_{tag}"
    app, noop = bench.schema(schema)
    proc = bench.start_worker(schema)
    try:
        commits = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        with psycopg.connect(bench.dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            before = conn.execute(commits).fetchone()[0]  # type: ignore[index]
        cpu = cpu_seconds(proc.pid) or 0.0
        app.enqueue_many(noop, [() for _ in range(jobs)])
        rate = bench.drained(schema, jobs, [proc])
        spent = (cpu_seconds(proc.pid) or 0.0) - cpu
        # A busy backend reports its counters at most once a second, one
        # that ends at once: the worker's sessions end with it.
        bench.stop_workers()
        with psycopg.connect(bench.dsn, autocommit=True) as conn:
            after = conn.execute(commits).fetchone()[0]  # type: ignore[index]
        return {"rate": rate, "commits": (after - before) / jobs, "cpu": spent / jobs * 1e6}
    finally:
        bench.discard(app, schema)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.drain_ceiling", description=__doc__)
    parser.add_argument("--dsn", help="a maintenance database (default: a stock server of our own)")
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--batch", type=int, action="append", help="claim size (repeatable)")
    parser.add_argument("--clients", type=int, action="append", help="pgbench clients")
    parser.add_argument("--reps", type=int, default=3)
    options = parser.parse_args(argv)
    batches = options.batch or [16, 64, 256]
    clients = options.clients or [1, 2]
    ceilings = [(batch, n) for batch in batches for n in clients]
    with contextlib.ExitStack() as stack:
        dsn = options.dsn or stack.enter_context(stock_server())
        results: dict[str, list[float]] = {}
        commits: list[float] = []
        cpu: list[float] = []
        with bench_database(dsn, "ceiling") as database:
            bench = Bench(database)
            try:
                for rep in range(options.reps):
                    order: list[tuple[int, int] | None] = [None, *ceilings]  # None: the worker
                    if rep % 2:
                        order.reverse()
                    for what in order:
                        if what is None:
                            got = worker_drain(bench, options.jobs, str(rep))
                            results.setdefault("worker", []).append(got["rate"])
                            commits.append(got["commits"])
                            cpu.append(got["cpu"])
                            line = (
                                f"worker: {got['rate']:,.0f} jobs/s, {got['commits']:.3f} "
                                f"commits and {got['cpu']:.1f} us of worker CPU per job"
                            )
                        else:
                            batch, n = what
                            rate = ceiling(bench, options.jobs, batch, n, f"{rep}_{batch}_{n}")
                            name = f"pgbench, claims of {batch}, {n} client(s)"
                            results.setdefault(name, []).append(rate)
                            line = f"{name}: {rate:,.0f} jobs/s"
                        print(f"rep {rep + 1} {line}", flush=True)
            finally:
                bench.close()
    medians = {name: statistics.median(values) for name, values in results.items()}
    best = max(v for name, v in medians.items() if name != "worker")
    print(f"\n{options.jobs:,} no-op jobs, {options.reps} repetitions, medians")
    print("| what | jobs/s | share of the best ceiling |\n|---|---:|---:|")
    for name, value in medians.items():
        print(f"| {name} | {value:,.0f} | {value / best:.2f} |")
    print(
        f"\nworker: {statistics.median(commits):.3f} commits per job (server), "
        f"{statistics.median(cpu):.1f} us of its own CPU per job"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
