"""Raw PostgreSQL limit of the job life cycle (insert; claim with SKIP LOCKED; complete).

    python -m benchmarks.pgbench.run [--dsn DSN] [--seconds 10] [--clients 4]

Runs each script in ``benchmarks/pgbench/`` on a fresh table in a scratch
database ``bench_pgbench_<pid>`` and prints one ``RESULT {json}`` line of jobs/s
(jobs that went all the way to completion, counted in the table).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

from benchmarks.peers._common import psql, scratch_database

HERE = Path(__file__).resolve().parent
SCRIPTS = ("single_insert", "single_update", "single_delete", "batch_update", "batch_delete")
# The insert-only script runs with as many clients as the single-enqueue workload
# has threads, so the two are held against each other like for like.
ENQUEUE_CLIENTS = 1


def lifecycle(dsn: str, script: str, seconds: float, clients: int) -> dict[str, float]:
    psql(dsn, "DROP TABLE IF EXISTS job; " + (HERE / "schema.sql").read_text())
    out = subprocess.run(
        [
            *("pgbench", "-n", "-f", str(HERE / f"{script}.sql"), "-T", str(int(seconds))),
            *("-c", str(clients), "-j", str(min(clients, 2)), dsn),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1))  # type: ignore[union-attr]
    inserted, unfinished = psql(
        dsn,
        "SELECT (SELECT last_value FROM job_id_seq), "
        "(SELECT count(*) FROM job WHERE state <> 'done')",
    )[0]
    completed = int(inserted) - int(unfinished)
    if script == "single_insert":
        completed = int(inserted)  # nothing claims them: count the commits
    return {"jobs_s": completed / seconds, "script_tps": tps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pgbench.run")
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    options = parser.parse_args(argv)
    results: dict[str, float] = {}
    with scratch_database(options.dsn, "pgbench") as dsn:
        for script in SCRIPTS:
            clients = ENQUEUE_CLIENTS if script == "single_insert" else options.clients
            measured = lifecycle(dsn, script, options.seconds, clients)
            results[script] = measured["jobs_s"]
    version = subprocess.run(["pgbench", "--version"], capture_output=True, text=True).stdout
    line = {
        "system": "pgbench",
        "version": version.strip(),
        "config": (
            f"{options.clients} clients ({ENQUEUE_CLIENTS} for the insert-only script), "
            f"{options.seconds:g} s per script"
        ),
        "workload": "pgbench",
        "metrics": results,
    }
    print("RESULT " + json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
