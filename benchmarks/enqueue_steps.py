"""Where one ``delay()``'s Python time goes, step by step (issue 25, item 3).

    python -m benchmarks.enqueue_steps [--dsn DSN] [--calls 20000] [--reps 5]

Two views of the same call, a no-op task's ``delay()`` with no options:

- **Each step alone, hot**: every step of the call run in a tight loop with
  the inputs ``delay()`` gives it (best of ``--reps`` loops, µs a call): what
  the code costs when the interpreter's caches hold it. The whole call with
  its statement not sent comes last, beside the steps' sum.
- **In a real producer**: one thread sending one job per transaction, as the
  single-enqueue target measures it, for ``--calls`` calls: the wall time and
  the process's own CPU (user and system, from ``getrusage``) a call, for
  ``delay()`` and for the floor of any Python enqueue (``job_insert_plain``,
  the statement ``delay()`` sends here, through libpq with its values ready:
  only the id is new). Their difference is what ``delay()``'s Python costs
  between two round trips, where the server ran in between and the caches
  are cold; the blocks alternate, medians of ``--reps``.

Without ``--dsn`` it starts a stock server of its own
(``benchmarks/stockserver.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import time
from collections.abc import Callable

import psycopg

from benchmarks.peers._common import scratch_database
from benchmarks.stockserver import stock_server
from benchmarks.tasks import register
from jobqueue import JobQueue, direct, migrate
from jobqueue.ids import new_id
from jobqueue.options import priority_for, queue_for, resolve, timing
from jobqueue.result import AsyncResult
from jobqueue.serialization import dump_arguments


def hot(call: Callable[[], object], calls: int, reps: int) -> float:
    """Best µs a call over ``reps`` loops of ``calls``."""
    best = float("inf")
    for _ in range(reps):
        started = time.perf_counter()
        for _ in range(calls):
            call()
        best = min(best, time.perf_counter() - started)
    return best / calls * 1e6


def in_context(call: Callable[[], object], calls: int) -> tuple[float, float, float]:
    """(wall, user CPU, system CPU) µs a call."""
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(calls):
        call()
    wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
    return (
        wall / calls * 1e6,
        (after.ru_utime - before.ru_utime) / calls * 1e6,
        (after.ru_stime - before.ru_stime) / calls * 1e6,
    )


def measure(dsn: str, calls: int, reps: int) -> None:
    migrate.upgrade(dsn, "jobqueue")
    app = JobQueue(dsn, schema="jobqueue", auto_migrate=False)
    noop = register(app)
    for _ in range(500):
        noop.delay()  # prepares the statement, fills the lane
    statement = direct.compile_statement(app.db.sql["job_insert_plain"])
    spec = resolve(app, "noop", noop, (), {}, {})
    params = spec.params()
    encoded = [direct.encode(params[name]) for name in statement.params]
    conn = psycopg.connect(dsn, autocommit=True)
    conn.pgconn.prepare(statement.name, statement.text)

    def floor() -> None:
        values = [new_id().encode(), *encoded[1:]]
        conn.pgconn.exec_prepared(statement.name, values)  # type: ignore[arg-type]

    def encode_all() -> object:
        return direct.encode_all(params, statement.params)

    def lane() -> None:
        with app.db.direct_connection(1.0):
            pass

    steps: list[tuple[str, Callable[[], object]]] = [
        (
            "call options, argument check, resolve: the job",
            lambda: noop._job((), {}, None, None, {}),
        ),
        ("  of which: arguments as JSON", lambda: dump_arguments("noop", (), {})),
        ("  of which: the id (UUIDv7 as text)", new_id),
        ("  of which: stored options", lambda: noop.stored_options(None, None, (), {})),
        ("  of which: timing", lambda: timing(None, None, None)),
        (
            "  of which: queue and priority",
            lambda: (queue_for(app, "noop", None, (), {}, noop), priority_for(app, None, noop)),
        ),
        (
            "publish (signals, hooks) and the insert's parameters",
            lambda: app._job_params(spec, noop, (), {}),
        ),
        ("a connection from the producer's lane, and back", lane),
        ("parameters in text format, NUL check", encode_all),
        ("the result (AsyncResult)", lambda: AsyncResult.trusted(spec.id, app)),
    ]
    print(f"\nEach step alone, hot (best of {reps} loops of {calls:,}):\n")
    print("| step | µs a call |")
    print("|---|---:|")
    total = 0.0
    for name, call in steps:
        cost = hot(call, calls, reps)
        total += 0 if name.startswith("  ") else cost
        print(f"| {name} | {cost:.2f} |")
    real = direct.execute
    direct.execute = lambda *_: True
    try:
        whole = hot(noop.delay, calls, reps)
    finally:
        direct.execute = real
    print(f"| the steps' sum | {total:.2f} |")
    print(f"| the whole `delay()`, its statement not sent | {whole:.2f} |")

    runs: dict[str, list[tuple[float, float, float]]] = {"floor": [], "delay": []}
    for _ in range(reps):
        runs["floor"].append(in_context(floor, calls))
        runs["delay"].append(in_context(noop.delay, calls))
    conn.close()
    app.close()
    print(f"\nIn a real producer (one thread, {calls:,} calls a block, medians of {reps}):\n")
    print("| one job per transaction | wall µs | user CPU µs | system CPU µs |")
    print("|---|---:|---:|---:|")
    medians: dict[str, list[float]] = {}
    for name, label in (
        ("floor", "`job_insert_plain` through libpq, values ready"),
        ("delay", "`delay()`"),
    ):
        medians[name] = [statistics.median(run[i] for run in runs[name]) for i in range(3)]
        wall, user, system = medians[name]
        print(f"| {label} | {wall:.1f} | {user:.1f} | {system:.1f} |")
    extra = [d - f for d, f in zip(medians["delay"], medians["floor"], strict=True)]
    print(f"| `delay()` less the floor | {extra[0]:.1f} | {extra[1]:.1f} | {extra[2]:.1f} |")
    print(
        f"\nIn a real producer delay()'s Python costs {extra[1] + extra[2]:.1f} µs of CPU a call, "
        f"{(extra[1] + extra[2]) / whole:.1f}x its {whole:.1f} µs hot."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.enqueue_steps")
    parser.add_argument("--dsn", help="a server to use (default: start a stock one)")
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--reps", type=int, default=5)
    options = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        server = options.dsn or stack.enter_context(stock_server())
        with scratch_database(server, "steps") as dsn:
            measure(dsn, options.calls, options.reps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
