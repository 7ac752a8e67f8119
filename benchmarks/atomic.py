"""What an atomic task costs: the drain of jobs that each insert one row.

    python -m benchmarks.atomic [--dsn DSN] [--jobs 20000] [--reps 3] [--concurrency 8]

Three workloads, each on a fresh schema, drained by one worker (thread pool)
that starts idle and is woken by one ``enqueue_many`` commit:

- ``noop``: a task that does nothing (the queue's own ceiling);
- ``write_row``: a task that inserts one row through the worker's task pool,
  in autocommit, as a task usually writes (at least once: a worker killed
  after the insert runs it again);
- ``write_row_atomic``: the same insert through ``self.connection`` of an
  ``atomic=True`` task, committed with the job's success (exactly once).

The workloads rotate within each repetition; medians and the ratios to
``write_row`` are printed. Run it on a stock cluster of its own (the machine's
development server runs with autovacuum off), e.g.::

    pg_createcluster 15 atomicbench -p 5499   # trust for 127.0.0.1 in its pg_hba.conf
    pg_ctlcluster 15 atomicbench start
    python -m benchmarks.atomic --dsn postgresql://postgres@127.0.0.1:5499/postgres
"""

from __future__ import annotations

import argparse
import os
import statistics

from benchmarks.throughput import Bench, bench_database

WORKLOADS = ("noop", "write_row", "write_row_atomic")
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5499/postgres"


def drain(bench: Bench, workload: str, jobs: int, concurrency: int, rep: int) -> float:
    schema = f"bench_atomic_{workload}_{rep}"
    app, _ = bench.schema(schema)
    with app.db.pool().connection() as conn:
        conn.execute(f'CREATE TABLE "{schema}".effects (n int)')
    procs = [bench.start_worker(schema, "--concurrency", str(concurrency))]
    task = app.tasks[workload]
    app.enqueue_many(task, [() if workload == "noop" else (i,) for i in range(jobs)])
    rate = bench.drained(schema, jobs, procs)
    bench.stop_workers()
    if workload != "noop":
        rows = bench.sql(f'SELECT count(*) FROM "{schema}".effects')[0]
        assert rows == jobs, f"{workload}: {rows} rows for {jobs} jobs"
    return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.atomic", description=__doc__)
    parser.add_argument("--dsn", default=os.environ.get("JOBQUEUE_BENCH_DSN") or DEFAULT_DSN)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    rates: dict[str, list[float]] = {w: [] for w in WORKLOADS}
    with bench_database(args.dsn, "atomic") as dsn:
        bench = Bench(dsn)
        try:
            for rep in range(args.reps):
                order = WORKLOADS[rep % 3 :] + WORKLOADS[: rep % 3]
                for workload in order:
                    rate = drain(bench, workload, args.jobs, args.concurrency, rep)
                    rates[workload].append(rate)
                    print(f"  rep {rep + 1} {workload}: {rate:,.0f} jobs/s", flush=True)
        finally:
            bench.close()
    base = statistics.median(rates["write_row"])
    print(f"\ndrain of {args.jobs:,} jobs, 1 worker, {args.concurrency} threads, medians:")
    for workload in WORKLOADS:
        median = statistics.median(rates[workload])
        print(f"  {workload:18} {median:8,.0f} jobs/s   {median / base:.2f}x write_row")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
