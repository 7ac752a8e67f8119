"""Celery's side of benchmarks/features.py (runs in benchmarks/.peers/celery;
Redis as broker and result backend, as benchmarks.compare runs it).

    .peers/celery/bin/python -m benchmarks.peers.celery_features --workload chord

Prints one JSON object: the figures of that workload.

- processes: 20,000 no-op jobs (Celery enqueues about 1,400 a second: more
  would be mostly enqueueing) drained by one worker with the prefork pool at
  ``-c 2``: first start to last finish.
- chord: 10,000 no-op headers and a body that counts them, from the call to
  the body's result.
- chain: 200 steps, each passing n + 1 to the next: the chain's time divided
  by its steps.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from celery import chain, chord  # type: ignore[import-not-found]

from benchmarks.peers import _common
from benchmarks.peers.celery import CelerySystem
from benchmarks.peers.celery_app import app, collect, noop, step


def start_worker(workers: _common.Workers, *options: str) -> None:
    CelerySystem(workers).start_worker(*options)


def processes(workers: _common.Workers) -> dict[str, float]:
    system = CelerySystem(workers)
    system.setup("")
    try:
        figures = _common.drain(system, workers, 20_000, 1)  # prefork, -c os.cpu_count()
    finally:
        system.close()
    return {"prefork_c2_jobs_s": figures["jobs_s"]}


def chord_run(workers: _common.Workers) -> dict[str, float]:
    app.backend.client.flushdb()
    start_worker(workers, "-P", "threads", "-c", "8")
    start = time.time()
    result = chord([noop.s() for _ in range(10_000)])(collect.s())
    call = time.time() - start
    counted = result.get(timeout=900)
    done = time.time() - start
    assert counted == 10_000, counted
    return {"chord_s": done, "chord_call_s": call}


def chain_run(workers: _common.Workers) -> dict[str, float]:
    app.backend.client.flushdb()
    start_worker(workers, "-P", "threads", "-c", "8")
    steps = 200
    start = time.time()
    result = chain(step.s(0), *[step.s() for _ in range(steps - 1)]).apply_async()
    assert result.get(timeout=300) == steps
    done = time.time() - start
    return {"chain_s": done, "ms_per_step": done / steps * 1000}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workload", required=True, choices=("processes", "chord", "chain"))
    options = parser.parse_args()
    workers = _common.Workers()
    try:
        run = {"processes": processes, "chord": chord_run, "chain": chain_run}[options.workload]
        figures = run(workers)
    finally:
        workers.stop()
        app.backend.client.flushdb()
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
