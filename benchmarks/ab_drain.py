"""A/B of the drain between two checkouts, interleaved: ``benchmarks.throughput``'s drain.

    git worktree add --detach /work/ab-before <commit>
    git worktree add --detach /work/ab-after HEAD
    .venv/bin/python -m benchmarks.ab_drain --dsn postgresql://postgres@127.0.0.1:5435/postgres \\
        /work/ab-before /work/ab-after [--runs 5] [--jobs 50000] [--workers 1,2]

Each run of each checkout is a new process started in that checkout (``cwd`` and
``PYTHONPATH`` set to it, so its own ``jobqueue`` and ``benchmarks.throughput``
are imported, and its worker subprocesses inherit both); it drains ``--jobs``
no-op jobs with each worker count on a database of its own (``Bench.drain``:
idle workers, one ``enqueue_many`` commit, first start to last finish). The
checkouts alternate run by run, and the first one goes first in odd runs and
second in even ones, so a noisy minute on a shared machine lands on both. It
prints every run, then per checkout and worker count the median, the min-max
spread and the ratio of medians (second ÷ first). Use a server with default
settings (autovacuum on), not one tuned for a test suite.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

# Run inside the checkout: its own Bench, its own workers.
_CHILD = """
import sys
from benchmarks.throughput import Bench, bench_database
import jobqueue
print("jobqueue from", jobqueue.__file__, flush=True)
with bench_database(sys.argv[1]) as dsn:
    bench = Bench(dsn)
    try:
        for workers in map(int, sys.argv[3].split(",")):
            bench.drain(int(sys.argv[2]), workers=workers)
    finally:
        bench.close()
"""
_RATE = re.compile(r"drain, (\d+) worker\(s\) \([\d,]+ jobs\): ([\d,]+) jobs/s")


def run_once(tree: Path, dsn: str, jobs: int, workers: str) -> dict[int, float]:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONUNBUFFERED": "1"}
    env.pop("JOBQUEUE_DSN", None)
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, dsn, str(jobs), workers],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{tree}: exit {out.returncode}\n{out.stdout}\n{out.stderr}")
    return {int(m[1]): float(m[2].replace(",", "")) for m in _RATE.finditer(out.stdout)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab_drain", description=__doc__)
    parser.add_argument("trees", nargs=2, type=Path, help="the two checkouts: before, after")
    parser.add_argument("--dsn", required=True, help="a maintenance database on the server")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    options = parser.parse_args(argv)
    trees: list[Path] = [tree.resolve() for tree in options.trees]
    counts = [int(c) for c in options.workers.split(",")]
    rates: dict[tuple[Path, int], list[float]] = {(t, c): [] for t in trees for c in counts}
    for run in range(options.runs):
        order = trees if run % 2 == 0 else trees[::-1]
        for tree in order:
            got = run_once(tree, options.dsn, options.jobs, options.workers)
            for count in counts:
                rates[tree, count].append(got[count])
            shown = ", ".join(f"{c} worker(s) {got[c]:,.0f}" for c in counts)
            print(f"run {run + 1} {tree.name}: {shown} jobs/s", flush=True)

    print(f"\n{options.jobs:,} no-op jobs, {options.runs} runs each, interleaved; jobs/s")
    print("| workers | checkout | median | min | max | every run |\n|---|---|---:|---:|---:|---|")
    for count in counts:
        for tree in trees:
            values = rates[tree, count]
            every = ", ".join(f"{v:,.0f}" for v in values)
            print(
                f"| {count} | {tree.name} | {statistics.median(values):,.0f} | "
                f"{min(values):,.0f} | {max(values):,.0f} | {every} |"
            )
    for count in counts:
        before, after = (statistics.median(rates[tree, count]) for tree in trees)
        print(f"{count} worker(s): {trees[1].name} / {trees[0].name} = {after / before:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
