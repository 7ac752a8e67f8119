"""The workloads nobody had measured (issue 25, item 5): the process pool,
canvas, limits and memory, with Celery beside jobqueue where it has the
feature.

    .venv/bin/python -m benchmarks.features [--dsn DSN] [--reps 3] [--celery]
        [--only processes,chord,chain,limits,memory]

Without ``--dsn`` it starts a stock server of its own (benchmarks/stockserver.py).
Each repetition runs every workload on a fresh schema, one worker (the
defaults: thread pool, concurrency 8, unless said), idle and ready before the
clock starts; times are from the client's clock before the first call to the
last ``finished_at`` the server wrote (the same machine's clock):

- **processes**: 50,000 no-op jobs drained by the thread pool (defaults) and
  by the process pool at ``-c 2``; the process pool's share of the threads'.
- **chord**: a chord of 10,000 no-op headers and a body that counts them,
  from the call to the body finished, against 10,000 plain no-op jobs
  enqueued in one ``enqueue_many`` and drained (the goal: at most 1.2x).
- **chain**: 200 steps, each passing n + 1 to the next: the whole chain's
  time divided by its steps (the goal: at most 1.5 ms a step).
- **limits**: 20,000 no-op jobs of a task with a rate limit far above the
  drain (10^6/s: the limit's cost), and with a concurrency limit of 8 (the
  worker's concurrency: never binding, so again its cost), against the same
  jobs without limits; and 10,000 jobs at 5,000/s, whose achieved rate says
  how closely the limit is reached (before 0023 a rate limit started one
  job per claim cycle: 161 a second at 5,000/s).
- **memory**: the worker's resident memory (its process and its children)
  after draining 200,000 no-op jobs.

``--celery`` runs Celery's side of the process pool (prefork, ``-c 2``),
the chord and the chain, in ``benchmarks/.peers/celery`` (installed on first
use, as ``benchmarks.compare`` does), with Redis as broker and result
backend. Prints every repetition, then medians.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime

import psycopg

from benchmarks.peers._common import rss_mb
from benchmarks.stockserver import stock_server
from benchmarks.throughput import Bench, bench_database
from jobqueue import JobQueue
from jobqueue.canvas import chain, chord

WORKLOADS = ("processes", "chord", "chain", "limits", "memory")
Figures = dict[str, float]


class Features:
    def __init__(self, bench: Bench) -> None:
        self.bench = bench

    @contextlib.contextmanager
    def schema(self, name: str, *worker_args: str) -> Iterator[tuple[JobQueue, str]]:
        """A fresh schema with one idle worker ready on it."""
        app, _ = self.bench.schema(name)
        try:
            self.bench.start_worker(name, *worker_args)
            yield app, name
        finally:
            self.bench.discard(app, name)

    def finished_at(self, schema: str, job_id: str, timeout: float) -> datetime:
        """When job ``job_id`` succeeded, once it has (polled every 20 ms)."""
        deadline = time.monotonic() + timeout
        query = f"SELECT finished_at FROM \"{schema}\".jobs WHERE id = %s AND state = 'SUCCESS'"
        with psycopg.connect(self.bench.dsn, autocommit=True) as conn:
            while True:
                row = conn.execute(query, [job_id]).fetchone()
                if row is not None:
                    return row[0]  # type: ignore[no-any-return]
                if time.monotonic() > deadline:
                    raise RuntimeError(f"job {job_id} did not succeed within {timeout:.0f}s")
                if any(p.poll() is not None for p in self.bench.workers):
                    raise RuntimeError("a worker exited")
                time.sleep(0.02)

    def drain(self, schema: str, app: JobQueue, task: str, n: int) -> float:
        """``n`` jobs of ``task`` in one enqueue_many, drained: jobs/s from the
        first start to the last finish (Bench's way)."""
        app.enqueue_many(task, [() for _ in range(n)])
        first, last = self.bench.wait_drained(schema, n, self.bench.workers)
        return n / (last - first).total_seconds()

    # -- workloads ---------------------------------------------------------------------

    def processes(self, tag: str) -> Figures:
        n = 50_000
        with self.schema(f"feat_threads_{tag}") as (app, schema):
            threads = self.drain(schema, app, "noop", n)
        with self.schema(f"feat_procs_{tag}", "--pool", "processes", "-c", "2") as (app, schema):
            procs = self.drain(schema, app, "noop", n)
        return {"threads_jobs_s": threads, "processes_c2_jobs_s": procs, "share": procs / threads}

    def chord(self, tag: str) -> Figures:
        n = 10_000
        with self.schema(f"feat_chord_{tag}") as (app, schema):
            start = time.time()
            app.enqueue_many("noop", [() for _ in range(n)])
            _, last = self.bench.wait_drained(schema, n, self.bench.workers)
            plain = last.timestamp() - start
        with self.schema(f"feat_chord2_{tag}") as (app, schema):
            noop, collect = app.tasks["noop"], app.tasks["collect"]
            start = time.time()
            result = chord([noop.s() for _ in range(n)])(collect.s())
            call = time.time() - start
            done = self.finished_at(schema, result.id, timeout=300).timestamp() - start
        return {"plain_s": plain, "chord_s": done, "chord_call_s": call, "ratio": done / plain}

    def chain(self, tag: str) -> Figures:
        steps = 200
        with self.schema(f"feat_chain_{tag}") as (app, schema):
            step = app.tasks["step"]
            start = time.time()
            result = chain(step.s(0), *[step.s() for _ in range(steps - 1)]).apply_async()
            done = self.finished_at(schema, result.id, timeout=120).timestamp() - start
        return {"chain_s": done, "ms_per_step": done / steps * 1000}

    def limits(self, tag: str) -> Figures:
        n = 20_000
        with self.schema(f"feat_lim_{tag}") as (app, schema):
            plain = self.drain(schema, app, "noop", n)
        with self.schema(f"feat_rate_{tag}") as (app, schema):
            app.control.rate_limit("noop_rated", "1000000/s")
            rated = self.drain(schema, app, "noop_rated", n)
        with self.schema(f"feat_capped_{tag}") as (app, schema):
            capped = self.drain(schema, app, "noop_capped", n)
        with self.schema(f"feat_rate5k_{tag}") as (app, schema):
            app.control.rate_limit("noop_rated", "5000/s")
            held = self.drain(schema, app, "noop_rated", 10_000)
        return {
            "plain_jobs_s": plain,
            "rate_limited_jobs_s": rated,
            "rate_share": rated / plain,
            "concurrency_limited_jobs_s": capped,
            "concurrency_share": capped / plain,
            "at_5000_per_s": held,
        }

    def memory(self, tag: str) -> Figures:
        n = 200_000
        with self.schema(f"feat_mem_{tag}") as (app, schema):
            rate = self.drain(schema, app, "noop", n)
            rss = rss_mb(self.bench.workers[0].pid)
        return {"jobs_s": rate, "rss_mb": rss}


def celery(workload: str) -> Figures:
    """Celery's side, in its own virtualenv (benchmarks/peers/celery_features.py)."""
    from benchmarks.compare import ROOT, ensure_venv

    python = ensure_venv("celery")
    out = subprocess.run(
        [str(python), "-m", "benchmarks.peers.celery_features", "--workload", workload],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.features", description=__doc__)
    parser.add_argument("--dsn", help="a maintenance database (default: a stock server of our own)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", default=",".join(WORKLOADS))
    parser.add_argument("--celery", action="store_true", help="Celery beside jobqueue")
    options = parser.parse_args(argv)
    chosen = [w for w in options.only.split(",") if w]
    unknown = sorted(set(chosen) - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(unknown)}")
    with contextlib.ExitStack() as stack:
        dsn = options.dsn or stack.enter_context(stock_server())
        runs: dict[str, list[Figures]] = {}
        database = stack.enter_context(bench_database(dsn, "features"))
        bench = Bench(database)
        stack.callback(bench.close)
        features = Features(bench)
        for rep in range(options.reps):
            for workload in chosen:
                jobs: list[tuple[str, Callable[[], Figures]]] = [
                    (workload, functools.partial(getattr(features, workload), str(rep)))
                ]
                if options.celery and workload in ("processes", "chord", "chain"):
                    jobs.append((f"celery {workload}", functools.partial(celery, workload)))
                if rep % 2:
                    jobs.reverse()
                for name, run in jobs:
                    figures = run()
                    runs.setdefault(name, []).append(figures)
                    shown = ", ".join(f"{k} {v:,.3f}" for k, v in figures.items())
                    print(f"rep {rep + 1} {name}: {shown}", flush=True)
        print(f"\nmedians of {options.reps} repetition(s)")
        for name, figures_list in runs.items():
            keys = figures_list[0].keys()
            shown = ", ".join(
                f"{k} {statistics.median(f[k] for f in figures_list):,.3f}" for k in keys
            )
            print(f"| {name} | {shown} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
