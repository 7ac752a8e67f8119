"""Batches: the drain of jobs that belong to one batch, against the same jobs
on their own, and how soon on_complete follows the last member.

    python -m benchmarks.batches --dsn postgresql://postgres@127.0.0.1:5432/postgres \\
        [--jobs 20000] [--workers 1,2] [--runs 3]

Each run drains ``--jobs`` no-op jobs (``Bench.drain``'s way: idle workers,
one commit) twice, alternating which goes first: plain (``enqueue_many``) and
as one batch (``batch.add_many`` then ``close()``, so every completion counts
its members against the same batch row). For the batch it also reports the
time from the last member's finish to the on_complete job's creation (which
the transaction that counted the last member wrote).
"""

from __future__ import annotations

import argparse
import os
import statistics

from benchmarks.throughput import DEFAULT_DSN, Bench, bench_database


def drain(bench: Bench, n: int, workers: int, batched: bool, run: int) -> tuple[float, float]:
    schema = f"bench_batch_{'b' if batched else 'p'}{workers}_{run}"
    app, noop = bench.schema(schema)
    procs = [bench.start_worker(schema) for _ in range(workers)]
    lag = float("nan")
    if batched:
        batch = app.batch(on_complete=noop.si())
        batch.add_many(noop, [() for _ in range(n)])
        batch.close()
    else:
        app.enqueue_many(noop, [() for _ in range(n)])
    rate = bench.drained(schema, n, procs)
    if batched:
        callback = batch.on_complete
        assert callback is not None
        callback.get(timeout=120)
        last, created = bench.sql(
            f"SELECT max(finished_at) FILTER (WHERE id <> %s), "
            f'max(created_at) FILTER (WHERE id = %s) FROM "{schema}".jobs',
            callback.id,
            callback.id,
        )
        lag = (created - last).total_seconds() * 1000
    bench.stop_workers()
    return rate, lag


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batches", description=__doc__)
    parser.add_argument("--dsn", default=os.environ.get("JOBQUEUE_BENCH_DSN") or DEFAULT_DSN)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()
    with bench_database(options.dsn) as dsn:
        bench = Bench(dsn)
        try:
            for workers in map(int, options.workers.split(",")):
                rates: dict[bool, list[float]] = {False: [], True: []}
                lags: list[float] = []
                for run in range(options.runs):
                    order = (False, True) if run % 2 == 0 else (True, False)
                    for batched in order:
                        rate, lag = drain(bench, options.jobs, workers, batched, run)
                        rates[batched].append(rate)
                        if batched:
                            lags.append(lag)
                        kind = "batch" if batched else "plain"
                        print(f"run {run} {kind} {workers}w: {rate:,.0f} jobs/s", flush=True)
                plain, batch = (statistics.median(rates[k]) for k in (False, True))
                print(
                    f"{workers} worker(s), {options.jobs:,} jobs: plain {plain:,.0f} jobs/s, "
                    f"one batch {batch:,.0f} jobs/s ({batch / plain:.2f}x); on_complete "
                    f"created {statistics.median(lags):.1f} ms (median) after the last member "
                    "(0: by the transaction that completed it)",
                    flush=True,
                )
        finally:
            bench.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
