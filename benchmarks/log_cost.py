"""What per-job log lines cost the drain: one worker drains ``--jobs`` no-op
jobs (``Bench.drain``'s way: idle worker, one enqueue_many commit, first
start to last finish) with each variant of its logging, the variants
interleaved run by run and their order rotated, so a noisy minute on a
shared machine lands on all of them.

    python -m benchmarks.log_cost --dsn postgresql://postgres@127.0.0.1:5448/postgres \\
        [--before /work/ab-before] [--runs 4] [--jobs 20000]

Variants: ``default`` (no ``--loglevel``: info, but no line for a job that
succeeds), ``info`` (a "succeeded" line per job), ``warning``, ``info-json``
(``--log-format json``), and with ``--before``, ``before-default``: a worker
of another checkout (``cwd`` and ``PYTHONPATH`` set to it) at its default
level (info before the per-job lines were made optional). A worker's log goes to a
file, as it would to journald or a container's log. Prints every run, then
per variant the median, the min-max spread and the ratio to ``info``'s median.
Use a server with default settings (autovacuum on), not one tuned for tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from benchmarks.throughput import ROOT, Bench, bench_database


def drain(bench: Bench, tag: str, tree: Path, args: list[str], n: int, log: Path) -> float:
    schema = f"bench_log_{tag}"
    app, noop = bench.schema(schema)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(tree)}
    env.pop("JOBQUEUE_DSN", None)
    env.pop("JOBQUEUE_LOG_FORMAT", None)
    command = [sys.executable, "-m", "jobqueue", "-A", "benchmarks.tasks:app", "--dsn"]
    command += [bench.dsn, "--schema", schema, "worker", *args]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=tree, env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 30
        while not bench.sql(f'SELECT count(*) FROM "{schema}".workers WHERE pid = %s', proc.pid)[0]:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        app.enqueue_many(noop, [() for _ in range(n)])
        return bench.drained(schema, n, [proc])
    finally:
        proc.terminate()
        proc.wait(30)
        with psycopg.connect(bench.dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--before", type=Path, default=None, help="another checkout")
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=20_000)
    options = parser.parse_args()
    variants: list[tuple[str, Path, list[str]]] = [
        ("default", ROOT, []),
        ("info", ROOT, ["--loglevel", "info"]),
        ("warning", ROOT, ["--loglevel", "warning"]),
        ("info-json", ROOT, ["--loglevel", "info", "--log-format", "json"]),
    ]
    if options.before is not None:
        variants.append(("before-default", options.before.resolve(), []))
    rates: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    with tempfile.TemporaryDirectory() as logs, bench_database(options.dsn, "logcost") as dsn:
        for run in range(options.runs):
            shift = run % len(variants)
            for index, (name, tree, args) in enumerate(variants[shift:] + variants[:shift]):
                bench = Bench(dsn)
                try:
                    tag = f"{run}_{index}"
                    rate = drain(bench, tag, tree, args, options.jobs, Path(logs, f"{tag}.log"))
                finally:
                    bench.close()
                rates[name].append(rate)
                print(f"run {run + 1} {name}: {rate:,.0f} jobs/s", flush=True)
    print(
        f"\n{options.jobs:,} jobs, 1 worker, {options.runs} runs: median (min-max); "
        "median of the runs' ratios to info (same run, so a noisy minute cancels)"
    )
    for name, values in rates.items():
        ratios = [v / i for v, i in zip(values, rates["info"], strict=True)]
        print(
            f"  {name:14} {statistics.median(values):8,.0f} "
            f"({min(values):,.0f}-{max(values):,.0f})  {statistics.median(ratios):.2f}"
        )


if __name__ == "__main__":
    main()
