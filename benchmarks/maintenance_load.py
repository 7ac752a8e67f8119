"""Maintenance load: statements per second that idle workers make on the database.

    .venv/bin/python -m benchmarks.maintenance_load --dsn postgresql://.../postgres \\
        [--workers 50] [--heartbeat 1.0] [--seconds 30]

Starts ``--workers`` idle ``jobqueue worker`` processes (concurrency 1) on a
fresh database, lets them heartbeat for ``--seconds``, and counts the
statements they ran with ``pg_stat_statements`` (the server must preload it:
``shared_preload_libraries = 'pg_stat_statements'``, and allow the
connections: about four per worker). It prints statements per second, in
all and for the maintenance statements (rescue, retention, vacuum checks).
Run it on the code before and after a change to compare.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ROOT = Path(__file__).resolve().parent.parent
MAINTENANCE = ("job_rescue", "job_prune", "meta_prune", "hot_tables_dead", "vacuum_lock")
# A statement of each kind, recognised by a fragment of its text.
KINDS = {
    "job_rescue": "WITH dead AS",
    "job_prune": "WITH doomed AS",
    "meta_prune": "WITH old_groups AS",
    "hot_tables_dead": "FROM pg_stat_user_tables",
    "vacuum_lock": ".vacuum', 0)",
    "heartbeat": "SET heartbeat_at = now()",
    "revocations": "revoked_at IS NOT NULL AND state = 'STARTED'",
    "claim": "FOR UPDATE SKIP LOCKED\n    ) AS c",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", required=True, help="a maintenance database on the server")
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--heartbeat", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    options = parser.parse_args()

    name = f"bench_maintenance_{os.getpid()}"
    with psycopg.connect(options.dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(options.dsn)
    params["dbname"] = name
    dsn = make_conninfo("", **{k: v for k, v in params.items() if v is not None})
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        subprocess.run(
            [sys.executable, "-m", "jobqueue", "--dsn", dsn, "db", "upgrade"],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        for _ in range(options.workers):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "jobqueue", "-A", "benchmarks.peers.jobqueue_app:app",
                     "--dsn", dsn, "worker", "-c", "1", "--heartbeat-interval",
                     str(options.heartbeat), "--lease-ttl", str(max(30.0, options.heartbeat * 6)),
                     "--loglevel", "warning"],
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )  # fmt: skip
        with psycopg.connect(dsn, autocommit=True) as conn:
            deadline = time.monotonic() + 120
            while True:
                row = conn.execute("SELECT count(*) FROM jobqueue.workers").fetchone()
                if row and row[0] >= options.workers:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"only {row[0] if row else 0} workers registered")
                time.sleep(0.2)
            conn.execute("SELECT pg_stat_statements_reset()")
            time.sleep(options.seconds)  # the measurement window
            rows = conn.execute(
                "SELECT query, calls FROM pg_stat_statements s "
                "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()"
            ).fetchall()
        per_kind = {kind: 0 for kind in KINDS}
        total = 0
        for query, calls in rows:
            total += calls
            for kind, fragment in KINDS.items():
                if fragment in query:
                    per_kind[kind] += calls
        maintenance = sum(per_kind[k] for k in MAINTENANCE)
        seconds = options.seconds
        print(
            f"{options.workers} idle workers, heartbeat {options.heartbeat:g}s, "
            f"{seconds:g}s window: {total / seconds:.1f} statements/s in all, "
            f"{maintenance / seconds:.1f} maintenance statements/s"
        )
        for kind, calls in per_kind.items():
            print(f"  {kind:16} {calls / seconds:8.2f}/s")
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        with psycopg.connect(options.dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
