"""Fair scheduling: one tenant's backlog against many small tenants.

    python -m benchmarks.fair [--dsn DSN] [--backlog 1000000] [--tenants 100] [--reps 3]

Each run, on a fresh schema: one tenant ("big") has ``--backlog`` jobs
waiting (enqueue_many); one worker (thread pool, ``--concurrency`` threads)
starts and drains it while ``--tenants`` other tenants each enqueue one job a
second (a producer thread, one job every 1/tenants s, in turn). Two modes, of
the same no-op job:

- ``fair``: the task has ``fair_key=lambda tenant: tenant`` (job_claim_fair);
- ``unfair``: no fair key, plain claim order.

Printed per mode (medians over the repetitions, modes alternating): the big
tenant's drain rate (its jobs from the first start to the last finish), and
the small tenants' wait, enqueue to start (p50, p99, max), for their jobs
enqueued while the backlog lasted. Run it on a stock cluster of its own (the
machine's development server runs with autovacuum off), e.g.::

    pg_createcluster 15 fairbench -p 5499   # trust for 127.0.0.1 in its pg_hba.conf
    pg_ctlcluster 15 fairbench start
    python -m benchmarks.fair --dsn postgresql://postgres@127.0.0.1:5499/postgres
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

import psycopg

from benchmarks.throughput import Bench, bench_database

MODES = ("fair", "unfair")
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5499/postgres"
CHUNK = 50_000  # enqueue_many per call: bounds the producer's memory


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(
    bench: Bench, mode: str, backlog: int, tenants: int, concurrency: int, rep: int
) -> dict[str, float]:
    schema = f"bench_fair_{mode}_{rep}"
    app, _ = bench.schema(schema)
    task = app.tasks[f"tenant_{mode}"]
    last = ""
    for start in range(0, backlog, CHUNK):
        last = app.enqueue_many(task, [("big",)] * min(CHUNK, backlog - start))[-1].id
    with psycopg.connect(bench.dsn, autocommit=True) as conn:
        conn.execute(f'VACUUM ANALYZE "{schema}".job_queue')
    stop = threading.Event()
    small: list[str] = []

    def produce() -> None:
        interval, index = 1.0 / tenants, 0
        next_at = time.monotonic()
        while not stop.is_set():
            small.append(task.delay(f"t{index % tenants:03d}").id)
            index += 1
            next_at += interval
            stop.wait(max(0.0, next_at - time.monotonic()))

    procs = [bench.start_worker(schema, "--concurrency", str(concurrency))]
    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    # The backlog's last job is claimed last of its jobs, in either mode: its
    # end is the backlog's (a key lookup: polling a count of the backlog cost
    # the server more than some claims).
    done = f"SELECT state = 'SUCCESS' FROM \"{schema}\".jobs WHERE id = %s"
    deadline = time.monotonic() + max(120.0, backlog / 500)
    while not (bench.sql_maybe(done, last) or (None,))[0]:
        if time.monotonic() > deadline or procs[0].poll() is not None:
            stop.set()
            raise RuntimeError(f"{mode}: the backlog did not drain")
        time.sleep(0.25)
    stop.set()
    producer.join()
    ids = list(small)
    pending = f'SELECT count(*) FROM "{schema}".job_queue'
    while bench.sql(pending)[0] or bench.sql(f'SELECT count(*) FROM "{schema}".job_lease')[0]:
        time.sleep(0.1)
    bench.stop_workers()
    with psycopg.connect(bench.dsn, autocommit=True) as conn:
        span = conn.execute(
            f'SELECT min(started_at), max(finished_at), max(started_at) FROM "{schema}".jobs '
            "WHERE args ->> 0 = 'big'"
        ).fetchone()
        assert span is not None
        first, last, big_end = span
        waits = [
            float(w)
            for (w,) in conn.execute(
                "SELECT extract(epoch FROM started_at - created_at) "
                f'FROM "{schema}".jobs WHERE id = ANY(%s::uuid[]) AND created_at <= %s',
                (ids, big_end),
            ).fetchall()
        ]
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    return {
        "drain": backlog / (last - first).total_seconds(),
        "p50": percentile(waits, 0.5),
        "p99": percentile(waits, 0.99),
        "max": max(waits),
        "small": len(waits),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fair", description=__doc__)
    parser.add_argument("--dsn", default=os.environ.get("JOBQUEUE_BENCH_DSN") or DEFAULT_DSN)
    parser.add_argument("--backlog", type=int, default=1_000_000)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    results: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    with bench_database(args.dsn, "fair") as dsn:
        bench = Bench(dsn)
        try:
            for rep in range(args.reps):
                for mode in MODES if rep % 2 == 0 else MODES[::-1]:
                    r = run(bench, mode, args.backlog, args.tenants, args.concurrency, rep)
                    results[mode].append(r)
                    print(
                        f"  rep {rep + 1} {mode:6}: drain {r['drain']:8,.0f} jobs/s; small "
                        f"tenants' wait p50 {r['p50'] * 1000:8.1f} ms, p99 "
                        f"{r['p99'] * 1000:8.1f} ms, max {r['max'] * 1000:8.1f} ms "
                        f"({r['small']} jobs)",
                        flush=True,
                    )
        finally:
            bench.close()
    print(
        f"\n{args.backlog:,} jobs of one tenant, {args.tenants} tenants at 1 job/s each, "
        f"1 worker, {args.concurrency} threads, medians of {args.reps}:"
    )
    med = {
        m: {k: statistics.median(r[k] for r in results[m]) for k in ("drain", "p50", "p99", "max")}
        for m in MODES
    }
    for mode in MODES:
        m = med[mode]
        print(
            f"  {mode:6}  drain {m['drain']:8,.0f} jobs/s   small tenants' wait p50 "
            f"{m['p50'] * 1000:8.1f} ms  p99 {m['p99'] * 1000:8.1f} ms  "
            f"max {m['max'] * 1000:8.1f} ms"
        )
    print(f"  fair drain / unfair drain: {med['fair']['drain'] / med['unfair']['drain']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
