"""Metrics (issue 21): what a scrape costs with 10 M finished jobs, and what
the counting triggers cost the claim and completion statements.

    python -m benchmarks.metrics --dsn postgresql://.../postgres \\
        [--rows 10000000] [--pairs 100] [--slots 10] [--waiting 100000] [--scrapes 200]

On a database of its own (created and dropped here):

- scrape: two schemas, one with an empty history and one holding ``--rows``
  finished jobs (benchmarks.history's loader), each with the same live state:
  ``--waiting`` due jobs over 20 queues, 200 running, 50 live workers, 20
  schedules, and job_metrics as ``--pairs`` (queue, task) pairs that each
  observed every bucket, written by ``--slots`` sessions (the rows a cluster
  keeps between folds). p50/p95/max of ``--scrapes`` reads of ``metrics()``
  alone, and of ``/metrics`` scraped over HTTP from the exporter's WSGI app
  (wsgiref, in a thread; the figure includes rendering the text), the two
  schemas in turn;
- the same scrape with no job waiting (the one part that grows with
  something: the backlog is counted row by row);
- trigger cost: claim and completion of batches of 50 no-op jobs, p50 of each
  statement, on a schema as migrated and on one whose metering triggers are
  dropped, a batch on each in turn (benchmarks.history.statement_latency).

Run it on a stock server (autovacuum on), not on a tuned or shared one.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import urllib.request
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import psycopg

from benchmarks.history import bench_database, prepare, statement_latency
from jobqueue import JobQueue, migrate
from jobqueue.metrics import make_wsgi_app


def live_state(dsn: str, schema: str, pairs: int, slots: int, waiting: int) -> None:
    """The same live state on each schema (see the module's docstring)."""
    s = f'"{schema}"'
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {s}.job_queue (job_id, queue, priority, run_at, task) "
            f"SELECT {s}.uuid7(), 'q' || (g % 20), 0, now() - interval '1 second', "
            f"'task' || (g % {pairs}) FROM generate_series(1, {int(waiting)}) AS g"
        )
        conn.execute(
            f"INSERT INTO {s}.workers (id, hostname, pid, queues, concurrency, version, "
            "lease_expires_at) SELECT gen_random_uuid(), 'host' || g, g, "
            "ARRAY['q' || (g % 20), 'q' || ((g + 1) % 20)], 8, '0.1.0', "
            "now() + interval '1 day' FROM generate_series(1, 50) AS g"
        )
        conn.execute(
            f"INSERT INTO {s}.job_lease (job_id, worker_id, attempt, task, queue) "
            f"SELECT {s}.uuid7(), gen_random_uuid(), 1, 'task' || (g % {pairs}), "
            "'q' || (g % 20) FROM generate_series(1, 200) AS g"
        )
        conn.execute(
            f"INSERT INTO {s}.schedules (name, task, interval_secs, next_run_at) "
            "SELECT 'every' || g, 'task1', 60, now() + interval '30 seconds' "
            "FROM generate_series(1, 20) AS g"
        )
        conn.execute(
            f"INSERT INTO {s}.job_metrics (queue, task, metric, le, slot, n, sum_us) "
            f"SELECT 'q' || (p % 20), 'task' || p, m.metric, b.le, slot, 7, 7000 "
            f"FROM generate_series(0, {pairs - 1}) AS p, generate_series(1, {slots}) AS slot, "
            "(VALUES ('wait'), ('run')) AS m(metric), "
            f"unnest({s}.metric_buckets() || 'Infinity'::float8) AS b(le) "
            f"UNION ALL SELECT 'q' || (p % 20), 'task' || p, m.metric, 'Infinity', slot, 9, 0 "
            f"FROM generate_series(0, {pairs - 1}) AS p, generate_series(1, {slots}) AS slot, "
            "(VALUES ('succeeded'), ('failed'), ('retried'), ('revoked')) AS m(metric)"
        )
        conn.execute(f"VACUUM ANALYZE {s}.job_queue, {s}.job_lease, {s}.job_metrics, {s}.workers")


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def scrape_times(
    dsn: str, schemas: list[str], scrapes: int
) -> dict[str, tuple[list[float], list[float], int]]:
    """Per schema: metrics() read times, /metrics scrape times (s), series count."""
    apps = {s: JobQueue(dsn, schema=s, auto_migrate=False) for s in schemas}
    servers: dict[str, WSGIServer] = {}
    out: dict[str, tuple[list[float], list[float], int]] = {s: ([], [], 0) for s in schemas}
    try:
        for s, app in apps.items():
            server = make_server("127.0.0.1", 0, make_wsgi_app(app), handler_class=_Quiet)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers[s] = server
        conns = {s: psycopg.connect(dsn, autocommit=True) for s in schemas}
        for i in range(scrapes + 10):
            for s in schemas if i % 2 else list(reversed(schemas)):
                started = time.perf_counter()
                rows = apps[s].store.metrics(conns[s], 30)
                read = time.perf_counter() - started
                url = f"http://127.0.0.1:{servers[s].server_address[1]}/metrics"
                started = time.perf_counter()
                with urllib.request.urlopen(url, timeout=30) as response:
                    body = response.read().decode()
                scraped = time.perf_counter() - started
                assert "jobqueue_up 1.0" in body, body[-500:]
                if i >= 10:  # warm: plans cached, pages in memory
                    out[s][0].append(read)
                    out[s][1].append(scraped)
                    out[s] = (out[s][0], out[s][1], len(rows))
        for conn in conns.values():
            conn.close()
    finally:
        for server in servers.values():
            server.shutdown()
            server.server_close()
        for app in apps.values():
            app.close()
    return out


def _ms(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    return (
        f"p50 {statistics.median(ordered) * 1000:.2f} ms, p95 {p95 * 1000:.2f} ms, "
        f"max {ordered[-1] * 1000:.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", required=True, help="a maintenance database on the server")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--pairs", type=int, default=100, help="(queue, task) pairs")
    parser.add_argument("--slots", type=int, default=10, help="sessions' rows per pair")
    parser.add_argument("--waiting", type=int, default=100_000)
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--batches", type=int, default=600, help="trigger cost: batches of 50")
    parser.add_argument("--skip-scrape", action="store_true")
    parser.add_argument("--skip-triggers", action="store_true")
    args = parser.parse_args()

    with bench_database(args.dsn) as dsn:
        if not args.skip_scrape:
            schemas = {"empty": 0, "full": args.rows}
            for schema, rows in schemas.items():
                migrate.upgrade(dsn, schema)
                prepare(dsn, schema, rows)
                live_state(dsn, schema, args.pairs, args.slots, args.waiting)
            results = scrape_times(dsn, list(schemas), args.scrapes)
            print(
                f"scrape ({args.pairs} queue/task pairs x {args.slots} sessions' rows, "
                f"{args.waiting:,} due jobs, 200 running, 50 workers, 20 schedules):"
            )
            for schema, (reads, scraped, series) in results.items():
                print(f"  {schema} history ({schemas[schema]:,} finished jobs), {series:,} series")
                print(f"    metrics() read:     {_ms(reads)}")
                print(f"    /metrics over HTTP: {_ms(scraped)}")
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute('TRUNCATE "full".job_queue')
            (reads, scraped, _) = scrape_times(dsn, ["full"], args.scrapes)["full"]
            print("  full history, no job waiting")
            print(f"    metrics() read:     {_ms(reads)}")
            print(f"    /metrics over HTTP: {_ms(scraped)}")

        if args.skip_triggers:
            return
        for schema in ("metered", "unmetered"):
            migrate.upgrade(dsn, schema)
            prepare(dsn, schema, 0)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute('DROP TRIGGER jobs_metered_insert ON "unmetered".jobs')
            conn.execute('DROP TRIGGER jobs_metered_update ON "unmetered".jobs')
        latency = statement_latency(dsn, ("metered", "unmetered"), batches=args.batches)
        print("trigger cost, batches of 50 no-op jobs (p50 of each statement):")
        for schema, (claim, complete) in latency.items():
            print(f"  {schema:9}: claim {claim:.3f} ms, completion {complete:.3f} ms")
        (mc, mk), (uc, uk) = latency["metered"], latency["unmetered"]
        print(
            f"  metered / unmetered: claim {mc / uc:.3f}, completion {mk / uk:.3f}, "
            f"both {(mc + mk) / (uc + uk):.3f}"
        )


if __name__ == "__main__":
    main()
