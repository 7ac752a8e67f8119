"""Async single enqueue from one event loop: jobqueue against PgQueuer and Procrastinate.

    python -m benchmarks.async_enqueue [--dsn DSN] [--jobs 20000] [--concurrency 10] [--reps 3]

What a web handler does: one job per call, awaited, from one event loop.
Two modes, each ``--jobs`` jobs after a warm-up:

- sequential: one coroutine awaits each enqueue before the next;
- concurrent: ``--concurrency`` coroutines on the same loop share the jobs
  (what a busy ASGI server does with overlapping requests).

Each system runs in its own subprocess, on a scratch database of its own, as
its documentation recommends: jobqueue's ``await task.adelay()`` (its own
async pool); PgQueuer's ``Queries.enqueue`` over asyncpg (one connection
sequentially, its pool driver concurrently); Procrastinate's
``await task.defer_async()`` through its ``PsycopgConnector`` (an async
psycopg pool). Peers are installed from PyPI into ``benchmarks/.peers/<name>``
by ``benchmarks.compare``'s pinned requirements. Within a repetition the
systems run back to back, the order rotating; medians of the repetitions and
the ratios jobqueue/peer are printed. Each run checks that the database holds
exactly the jobs it sent.

Run it on a stock cluster of its own (the machine's development server runs
with autovacuum off), e.g.::

    pg_createcluster 15 aiobench -p 5499   # trust for 127.0.0.1 in its pg_hba.conf
    pg_ctlcluster 15 aiobench start
    python -m benchmarks.async_enqueue --dsn postgresql://postgres@127.0.0.1:5499/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SYSTEMS = ("jobqueue", "pgqueuer", "procrastinate")
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5499/postgres"
Enqueue = Callable[[], Awaitable[Any]]


# -- one system's run (in that system's interpreter) ------------------------------------


async def measure(
    sequential: Enqueue, concurrent: Enqueue, jobs: int, concurrency: int, warmup: int
) -> dict[str, float]:
    """Jobs per second, one coroutine awaiting each call, then ``concurrency``
    coroutines sharing the loop."""
    for _ in range(warmup):
        await sequential()
    start = time.perf_counter()
    for _ in range(jobs):
        await sequential()
    seq = jobs / (time.perf_counter() - start)

    share = jobs // concurrency

    async def client() -> None:
        for _ in range(share):
            await concurrent()

    for _ in range(warmup):
        await concurrent()
    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    conc = share * concurrency / (time.perf_counter() - start)
    return {"sequential_jobs_s": seq, "concurrent_jobs_s": conc}


def sent(jobs: int, concurrency: int, warmup: int) -> int:
    return 2 * warmup + jobs + jobs // concurrency * concurrency


async def run_jobqueue(dsn: str, jobs: int, concurrency: int, warmup: int) -> dict[str, Any]:
    import psycopg

    import jobqueue
    from benchmarks.tasks import register
    from jobqueue import JobQueue, migrate

    migrate.upgrade(dsn, "jobqueue")
    app = JobQueue(dsn, auto_migrate=False, pool_max_size=concurrency)
    noop = register(app)
    result = await measure(noop.adelay, noop.adelay, jobs, concurrency, warmup)
    await app.aclose()
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM jobqueue.all_jobs").fetchone()
    return {
        **result,
        "version": jobqueue.__version__,
        "config": f"await task.adelay(); its async pool (max {concurrency})",
        "written": int(row[0]) if row else 0,
    }


async def run_pgqueuer(dsn: str, jobs: int, concurrency: int, warmup: int) -> dict[str, Any]:
    from importlib.metadata import version

    import asyncpg  # type: ignore[import-not-found,import-untyped,unused-ignore]
    from pgqueuer import Queries  # type: ignore[import-not-found,unused-ignore]
    from pgqueuer.db import (  # type: ignore[import-not-found,unused-ignore]
        AsyncpgDriver,
        AsyncpgPoolDriver,
    )

    pgq = str(Path(sys.executable).with_name("pgq"))
    subprocess.run([pgq, "--pg-dsn", dsn, "install"], check=True, capture_output=True)
    conn = await asyncpg.connect(dsn)
    pool = await asyncpg.create_pool(dsn, min_size=concurrency, max_size=concurrency)
    one = Queries(AsyncpgDriver(conn))
    shared = Queries(AsyncpgPoolDriver(pool))

    async def sequential() -> Any:
        return await one.enqueue("noop", None)

    async def concurrent() -> Any:
        return await shared.enqueue("noop", None)

    result = await measure(sequential, concurrent, jobs, concurrency, warmup)
    written = await conn.fetchval("SELECT count(*) FROM pgqueuer")
    await pool.close()
    await conn.close()
    return {
        **result,
        "version": version("pgqueuer"),
        "config": f"Queries.enqueue over asyncpg: 1 connection; pool driver (max {concurrency})",
        "written": int(written),
    }


async def run_procrastinate(dsn: str, jobs: int, concurrency: int, warmup: int) -> dict[str, Any]:
    from importlib.metadata import version

    import psycopg
    from procrastinate import App, PsycopgConnector  # type: ignore[import-not-found,unused-ignore]

    app = App(connector=PsycopgConnector(conninfo=dsn, max_size=concurrency))

    @app.task(name="noop")  # type: ignore[untyped-decorator,unused-ignore]
    async def noop() -> None:
        return None

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        result = await measure(noop.defer_async, noop.defer_async, jobs, concurrency, warmup)
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cursor = await conn.execute("SELECT count(*) FROM procrastinate_jobs")
        row = await cursor.fetchone()
    return {
        **result,
        "version": version("procrastinate"),
        "config": f"await task.defer_async(); PsycopgConnector pool (max {concurrency})",
        "written": int(row[0]) if row else 0,
    }


RUNNERS = {"jobqueue": run_jobqueue, "pgqueuer": run_pgqueuer, "procrastinate": run_procrastinate}


def child(options: argparse.Namespace) -> int:
    runner = RUNNERS[options.system]
    result = asyncio.run(runner(options.dsn, options.jobs, options.concurrency, options.warmup))
    expected = sent(options.jobs, options.concurrency, options.warmup)
    if result["written"] != expected:
        raise SystemExit(f"{options.system} wrote {result['written']} jobs, sent {expected}")
    print("RESULT " + json.dumps({"system": options.system, **result}), flush=True)
    return 0


# -- the driver ---------------------------------------------------------------------------


def python_for(system: str) -> str:
    if system == "jobqueue":
        return sys.executable
    from benchmarks.compare import ensure_venv

    return str(ensure_venv(system))


def run_system(system: str, dsn: str, options: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.peers._common import scratch_database

    with scratch_database(dsn, f"aio_{system}") as scratch:
        command = [python_for(system), "-m", "benchmarks.async_enqueue", "--system", system]
        command += ["--dsn", scratch, "--jobs", str(options.jobs)]
        command += ["--concurrency", str(options.concurrency), "--warmup", str(options.warmup)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return result
    raise SystemExit(f"{system} failed:\n{done.stdout}\n{done.stderr}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("JOBQUEUE_BENCH_DSN") or DEFAULT_DSN)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", default=",".join(SYSTEMS), help="systems, comma-separated")
    parser.add_argument("--system", choices=SYSTEMS, help=argparse.SUPPRESS)  # a child run
    options = parser.parse_args(argv)
    if options.jobs < options.concurrency:
        parser.error("--jobs must be at least --concurrency")
    if options.system:
        return child(options)
    systems = [s for s in options.only.split(",") if s]
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    for rep in range(options.reps):
        order = systems[rep % len(systems) :] + systems[: rep % len(systems)]
        for system in order:
            result = run_system(system, options.dsn, options)
            runs[system].append(result)
            print(
                f"rep {rep + 1} {system:14} sequential {result['sequential_jobs_s']:8.0f} jobs/s"
                f"  concurrent({options.concurrency}) {result['concurrent_jobs_s']:8.0f} jobs/s",
                flush=True,
            )
    print(f"\nmedians of {options.reps} repetition(s), {options.jobs} jobs per mode:")
    modes = ("sequential_jobs_s", "concurrent_jobs_s")
    medians = {s: {m: statistics.median(r[m] for r in runs[s]) for m in modes} for s in systems}
    for system in systems:
        first = runs[system][0]
        print(f"  {system} {first['version']}: {first['config']}")
        line = f"    sequential {medians[system]['sequential_jobs_s']:8.0f} jobs/s"
        line += f"   concurrent {medians[system]['concurrent_jobs_s']:8.0f} jobs/s"
        if system != "jobqueue" and "jobqueue" in medians:
            ratio = {m: medians["jobqueue"][m] / medians[system][m] for m in medians[system]}
            line += f"   jobqueue/{system}: {ratio['sequential_jobs_s']:.2f}x"
            line += f" / {ratio['concurrent_jobs_s']:.2f}x"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
