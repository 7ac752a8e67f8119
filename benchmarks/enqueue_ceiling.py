"""Where single enqueue's time goes: the raw insert that ``compare`` holds it
against, next to what jobqueue writes and the client it is sent from.

    .venv/bin/python -m benchmarks.enqueue_ceiling [--dsn DSN] [--seconds 5] [--reps 3]

Every row is one job per transaction from 4 clients (pgbench) or 4 threads
(Python), on the same scratch database, the rows alternating in each
repetition. Medians, and each as a share of the first row:

- pgbench, raw one-row insert: the reference of the single-enqueue target;
- pgbench, jobqueue's ``job_insert`` statement, prepared: the server's share;
- pgbench, the job record alone (one row into ``jobs``);
- pgbench, a one-row enqueue sketched: the job with its payload into a copy of
  ``job_queue`` (primary key and claim index), plus the wake check; what the
  redesign that writes the record at claim time would send;
- Python threads, the raw insert through psycopg's cursors, then through
  libpq (``psycopg.pq``): what the client library costs;
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
from jobqueue import JobQueue, migrate
from jobqueue.sql import queries

HERE = Path(__file__).resolve().parent
CLIENTS = 4
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
RECORD_ONLY = (
    'INSERT INTO "jobqueue".jobs (id, task, queue, priority, args, kwargs, options, run_at) '
    """VALUES (gen_random_uuid(), 'noop', 'default', 0, '[]', '{}', '{"max_retries": 3}', now())"""
)

# The sketch's table: job_queue's columns and indexes plus the job's payload.
SKETCH_TABLE = """
CREATE TABLE one_row_sketch (
    job_id uuid PRIMARY KEY, queue text NOT NULL, priority integer NOT NULL,
    run_at timestamptz NOT NULL, task text NOT NULL, rate_key text, concurrency_key text,
    args jsonb NOT NULL, kwargs jsonb NOT NULL, options jsonb NOT NULL,
    expires_at timestamptz, root_id uuid, parent_id uuid,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX one_row_sketch_claim_idx ON one_row_sketch (queue, priority DESC, run_at, job_id);
"""


def one_row_sketch(wake_wanted: str) -> str:
    """job_insert's wake check on a one-row insert into the sketch table."""
    return (
        "WITH waiting AS (INSERT INTO one_row_sketch (job_id, queue, priority, run_at, task, "
        "args, kwargs, options) VALUES (gen_random_uuid(), 'default', 0, now(), 'noop', "
        """'[]', '{}', '{"max_retries": 3}') RETURNING queue) """
        f"SELECT pg_notify('jobqueue_sketch', queue) FROM waiting WHERE {wake_wanted}"
    )


def pgbench(dsn: str, sql: str, seconds: float, prepared: bool) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as script:
        script.write(" ".join(sql.split()) + ";\n")
        script.flush()
        mode = ("-M", "prepared") if prepared else ()
        command = ["pgbench", "-n", *mode, "-f", script.name, "-T", str(int(seconds))]
        out = subprocess.run(
            [*command, "-c", str(CLIENTS), "-j", "2", dsn],
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.enqueue_ceiling")
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--reps", type=int, default=3)
    options = parser.parse_args(argv)
    seconds = options.seconds
    job_insert = queries("jobqueue")["job_insert"]
    statement = re.sub(r"%\((\w+)\)s", lambda m: LITERALS.get(m.group(1), "NULL"), job_insert)
    with scratch_database(options.dsn, "ceiling") as dsn:
        migrate.upgrade(dsn, "jobqueue")
        psql(dsn, (HERE / "pgbench" / "schema.sql").read_text())
        psql(dsn, SKETCH_TABLE)
        sketch = one_row_sketch(queries("jobqueue")["wake_wanted"])
        app = JobQueue(dsn, schema="jobqueue", auto_migrate=False)
        noop = register(app)
        threads(1.0, lambda i: noop.delay())  # the warm-up (see compare's single)
        rows: dict[str, Callable[[], float]] = {
            "pgbench: raw one-row insert": lambda: pgbench(dsn, RAW_INSERT, seconds, False),
            "pgbench: job_insert (prepared)": lambda: pgbench(dsn, statement, seconds, True),
            "pgbench: the job record alone": lambda: pgbench(dsn, RECORD_ONLY, seconds, True),
            "pgbench: a one-row enqueue (sketch)": lambda: pgbench(dsn, sketch, seconds, True),
            "Python threads: raw insert, psycopg": lambda: python_insert(dsn, seconds, False),
            "Python threads: raw insert, libpq": lambda: python_insert(dsn, seconds, True),
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
