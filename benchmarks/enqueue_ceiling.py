"""Where single enqueue's time goes: the raw insert that ``compare`` holds it
against, next to what jobqueue writes and the client it is sent from.

    .venv/bin/python -m benchmarks.enqueue_ceiling [--dsn DSN] [--seconds 5] [--reps 3]
        [--clients 1]

Every row is one job per transaction from ``--clients`` clients (pgbench) or
as many threads (Python; default 1: one sequential producer, the target's
setting), on the same scratch database, the rows alternating in each
repetition. Medians, and each as a share of the first row:

- pgbench, raw one-row insert: the reference of the single-enqueue target;
- pgbench, jobqueue's ``job_insert`` statement, prepared: the server's share
  (one row into ``job_queue``, the record is written at claim time), first with
  constants, then with the values ``delay()`` sends as bound parameters (the
  NULL ones stay constants: pgbench cannot bind a NULL);
- pgbench, ``job_insert_recorded``, prepared: the same job written as two rows
  (record and queue entry), as for a caller-chosen id; the design before 0007;
- pgbench, the job record alone (one row into ``jobs``);
- Python threads, the raw insert through psycopg's cursors, then through
  libpq (``psycopg.pq``): what the client library costs;
- Python threads, ``job_insert_plain`` (``job_insert`` with its optional
  values as constants, which ``delay()`` sends for a job with none set)
  through libpq with its parameters encoded beforehand (only the id is new):
  the floor for any Python enqueue of it;
- Python threads, jobqueue's ``delay()`` (after a warm-up).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import psycopg

from benchmarks.peers._common import in_threads, psql, scratch_database
from benchmarks.tasks import register
from jobqueue import JobQueue, direct, migrate
from jobqueue.ids import new_id
from jobqueue.options import resolve
from jobqueue.sql import queries

HERE = Path(__file__).resolve().parent
CLIENTS = 1  # --clients
RAW_INSERT = "INSERT INTO job DEFAULT VALUES"
# Constants for job_insert's parameters: a no-op job, due now, no limits.
LITERALS = {
    "id": "gen_random_uuid()",
    "task": "'noop'",
    "queue": "'default'",
    "priority": "0",
    "args": "'[]'",
    "kwargs": "'{}'",
    "options": """'{"max_retries": 3}'""",
    "countdown": "0",
}
# The same values as pgbench variables, bound at execution (-M prepared).
BOUND = {
    "task": "noop",
    "queue": "default",
    "priority": "0",
    "args": "[]",
    "kwargs": "{}",
    "options": '{"max_retries":3}',
    "countdown": "0",
}
RECORD_ONLY = (
    'INSERT INTO "jobqueue".jobs (id, task, queue, priority, args, kwargs, options, run_at) '
    """VALUES (gen_random_uuid(), 'noop', 'default', 0, '[]', '{}', '{"max_retries": 3}', now())"""
)


def pgbench(
    dsn: str, sql: str, seconds: float, prepared: bool, variables: dict[str, str] | None = None
) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as script:
        script.write(" ".join(sql.split()) + ";\n")
        script.flush()
        mode = ("-M", "prepared") if prepared else ()
        command = ["pgbench", "-n", *mode, "-f", script.name, "-T", str(int(seconds))]
        command += [f"--define={name}={value}" for name, value in (variables or {}).items()]
        out = subprocess.run(
            [*command, "-c", str(CLIENTS), "-j", str(min(CLIENTS, 2)), dsn],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    return float(re.search(r"tps = ([\d.]+)", out).group(1))  # type: ignore[union-attr]


def threads(seconds: float, call: Callable[[int], object]) -> float:
    return in_threads(seconds, CLIENTS, call)


def python_insert(dsn: str, seconds: float, through_libpq: bool) -> float:
    conns = [psycopg.connect(dsn, autocommit=True) for _ in range(CLIENTS)]
    try:
        if through_libpq:
            command = RAW_INSERT.encode()
            return threads(seconds, lambda i: conns[i].pgconn.exec_(command))
        return threads(seconds, lambda i: conns[i].execute(RAW_INSERT))
    finally:
        for conn in conns:
            conn.close()


def python_job_insert(dsn: str, app: JobQueue, seconds: float) -> float:
    statement = direct.compile_statement(app.db.sql["job_insert_plain"])
    params = resolve(app, "noop", app.tasks.get("noop"), (), {}, {}).params()
    encoded = [direct.encode(params[name]) for name in statement.params]
    conns = [psycopg.connect(dsn, autocommit=True) for _ in range(CLIENTS)]
    try:
        for conn in conns:
            conn.pgconn.prepare(statement.name, statement.text)

        def insert(index: int) -> None:
            values = [new_id().encode(), *encoded[1:]]
            conns[index].pgconn.exec_prepared(statement.name, values)  # type: ignore[arg-type]

        return threads(seconds, insert)
    finally:
        for conn in conns:
            conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.enqueue_ceiling")
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--clients", type=int, default=1, help="pgbench clients, Python threads")
    options = parser.parse_args(argv)
    global CLIENTS
    CLIENTS = options.clients
    seconds = options.seconds
    job_insert = queries("jobqueue")["job_insert"]
    statement, recorded = (
        re.sub(r"%\((\w+)\)s", lambda m: LITERALS.get(m.group(1), "NULL"), text)
        for text in (job_insert, queries("jobqueue")["job_insert_recorded"])
    )
    bound = re.sub(
        r"%\((\w+)\)s",
        lambda m: f":{m.group(1)}" if m.group(1) in BOUND else LITERALS.get(m.group(1), "NULL"),
        job_insert,
    )
    with scratch_database(options.dsn, "ceiling") as dsn:
        migrate.upgrade(dsn, "jobqueue")
        psql(dsn, (HERE / "pgbench" / "schema.sql").read_text())
        app = JobQueue(dsn, schema="jobqueue", auto_migrate=False)
        noop = register(app)
        threads(1.0, lambda i: noop.delay())  # the warm-up (see compare's single)
        rows: dict[str, Callable[[], float]] = {
            "pgbench: raw one-row insert": lambda: pgbench(dsn, RAW_INSERT, seconds, False),
            "pgbench: job_insert (prepared)": lambda: pgbench(dsn, statement, seconds, True),
            "pgbench: job_insert, values bound": lambda: pgbench(dsn, bound, seconds, True, BOUND),
            "pgbench: job_insert_recorded (two rows)": lambda: pgbench(
                dsn, recorded, seconds, True
            ),
            "pgbench: the job record alone": lambda: pgbench(dsn, RECORD_ONLY, seconds, True),
            "Python threads: raw insert, psycopg": lambda: python_insert(dsn, seconds, False),
            "Python threads: raw insert, libpq": lambda: python_insert(dsn, seconds, True),
            "Python threads: job_insert_plain, libpq, values ready": lambda: python_job_insert(
                dsn, app, seconds
            ),
            "Python threads: delay()": lambda: threads(seconds, lambda i: noop.delay()),
        }
        measured: dict[str, list[float]] = {name: [] for name in rows}
        for rep in range(options.reps):
            for name, measure in rows.items():
                measured[name].append(measure())
                print(f"  rep {rep + 1} {name}: {measured[name][-1]:,.0f}/s", flush=True)
        app.close()
    medians = {name: statistics.median(values) for name, values in measured.items()}
    reference = medians["pgbench: raw one-row insert"]
    print(f"\n| {CLIENTS} clients or threads, one job per transaction | jobs/s | of raw |")
    print("|---|---:|---:|")
    for name, value in medians.items():
        print(f"| {name} | {value:,.0f} | {value / reference:.0%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
