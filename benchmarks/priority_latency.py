"""A high-priority job's wait while a large backlog drains (issue 25, item 4).

    python -m benchmarks.priority_latency [--dsn DSN] [--backlog 1000000]
        [--jobs 300] [--interval 0.02] [--priority 9] [--backlog-task noop|sleep_ms]

One worker with the defaults drains ``--backlog`` jobs of priority 0 (no-op
jobs, or ``sleep_ms``: a millisecond each, so the worker prefetches about 800
that wait for a slot)
(enqueued before it starts, in one ``enqueue_many``); once it is draining,
this process sends ``--jobs`` jobs of ``--priority`` (``stamp``: it returns
the time it started), one every ``--interval`` seconds, and checks at the end
that the backlog was still draining when the last one was sent. Each job's
wait is measured twice: to its claim (``started_at - created_at``, the
server's clock) and to its start (the task's ``time.time()`` less the
client's before the call: what a user waits). Prints p50, p99 and the
maximum of each, and the backlog's drain rate meanwhile. Without ``--dsn`` it
starts a stock server of its own (``benchmarks/stockserver.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import psycopg

from benchmarks.stockserver import stock_server
from benchmarks.throughput import Bench, bench_database


def percentile(ordered: list[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def measure(dsn: str, backlog: int, jobs: int, interval: float, priority: int, task: str) -> None:
    bench = Bench(dsn)
    schema = "bench_priority"
    try:
        app, _ = bench.schema(schema)
        start = time.perf_counter()
        app.enqueue_many(app.tasks[task], [() for _ in range(backlog)])
        print(f"backlog of {backlog:,} enqueued in {time.perf_counter() - start:.1f} s", flush=True)
        with psycopg.connect(dsn, autocommit=True) as conn:  # warm tables, as users run
            conn.execute(f'VACUUM ANALYZE "{schema}".job_queue')
        count = f'SELECT count(*) FROM "{schema}".job_queue'
        bench.start_worker(schema)
        deadline = time.monotonic() + 60
        while bench.sql(count)[0] > backlog - 2_000:  # draining at full speed
            if time.monotonic() > deadline:
                raise RuntimeError("the worker did not start draining")
            time.sleep(0.05)
        waiting_before = bench.sql(count)[0]
        began = time.perf_counter()
        urgent = app.tasks["stamp"].s().set(priority=priority)
        ids, sent = [], []
        for _ in range(jobs):
            sent.append(time.time())
            ids.append(urgent.apply_async().id)
            time.sleep(interval)
        sent_for = time.perf_counter() - began
        waiting_after = bench.sql(count)[0]
        if waiting_after <= jobs:
            raise RuntimeError("the backlog ran out before the last job was sent: use a larger one")
        deadline = time.monotonic() + 60
        finished = f'SELECT count(*) FROM "{schema}".jobs WHERE id = ANY(%s::uuid[]) AND state = %s'
        while bench.sql(finished, ids, "SUCCESS")[0] < len(ids):
            if time.monotonic() > deadline:
                raise RuntimeError("the high-priority jobs did not all finish")
            time.sleep(0.05)
        rows = bench.sql(
            "SELECT array_agg(extract(epoch FROM started_at - created_at)::float8 * 1000) "
            f'FROM "{schema}".jobs WHERE id = ANY(%s::uuid[])',
            ids,
        )[0]
        ms = sorted(float(v) for v in rows)
        results = [app.AsyncResult(job_id).get(timeout=10) for job_id in ids]
        to_start = sorted((float(r) - s) * 1000 for r, s in zip(results, sent, strict=True))
        rate = (waiting_before - waiting_after) / sent_for
        print(
            f"{len(ms)} jobs of priority {priority}, one every {interval * 1000:.0f} ms, while "
            f"{backlog:,} jobs of {task} (priority 0) drained at {rate:,.0f} jobs/s "
            f"({waiting_after:,} still waiting at the end)"
        )
        print(f"| priority {priority}, ms | p50 | p99 | max |\n|---|---:|---:|---:|")
        for name, values in (("enqueue → claim", ms), ("call → task start", to_start)):
            print(
                f"| {name} | {statistics.median(values):.2f} | "
                f"{percentile(values, 0.99):.2f} | {values[-1]:.2f} |"
            )
    finally:
        bench.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.priority_latency", description=__doc__
    )
    parser.add_argument("--dsn", help="a maintenance database (default: a stock server of its own)")
    parser.add_argument("--backlog", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--priority", type=int, default=9)
    parser.add_argument("--backlog-task", default="noop", choices=("noop", "sleep_ms"))
    options = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        server = options.dsn or stack.enter_context(stock_server())
        dsn = stack.enter_context(bench_database(server, "priority"))
        measure(
            dsn,
            options.backlog,
            options.jobs,
            options.interval,
            options.priority,
            options.backlog_task,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
