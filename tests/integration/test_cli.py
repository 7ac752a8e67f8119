"""The command line as a user runs it: usage errors, db commands, worker shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import pytest

from jobqueue import migrate, states
from tests.conftest import ROOT, wait_for


def jobqueue(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobqueue", *args],
        cwd=ROOT,
        text=True,
        capture_output=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["-A", "tests.apps:app", "worker", "--concurrency", "many"],
            "'many' is not a valid integer",
        ),
        (["-A", "tests.apps:app", "worker", "--concurrency", "0"], "0 is not in the range"),
        (["-A", "tests.apps:app", "worker", "--poll-interval", "-1"], "--poll-interval"),
        (["-A", "tests.apps:app", "worker", "--queues", ","], "at least one queue"),
        (["-A", "no_such_module:app", "worker"], "cannot import 'no_such_module'"),
        (["-A", "tests.apps:nothing", "worker"], "has no attribute 'nothing'"),
        (["worker"], "needs an app"),
        (["--schema", "Bad-Name", "db", "current"], "invalid schema name"),
        (["frobnicate"], "No such command"),
        (["-A", "tests.apps:app", "worker", "--max-tasks-per-child", "5"], "--pool processes"),
    ],
)
def test_bad_arguments_get_a_usage_error_not_a_traceback(args: list[str], message: str) -> None:
    done = jobqueue(*args, env={"JOBQUEUE_DSN": "postgresql://nobody@127.0.0.1:1/none"})
    assert done.returncode in (1, 2), done
    assert message in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "command", [["-A", "tests.apps:app", "worker"], ["db", "current"], ["db", "upgrade"], ["stats"]]
)
def test_unreachable_database_is_a_clear_error(command: list[str]) -> None:
    done = jobqueue("--dsn", "postgresql://nobody:secret@127.0.0.1:1/none", *command)
    assert done.returncode == 1, done
    assert "cannot connect to PostgreSQL" in done.stderr
    assert "secret" not in done.stderr  # credentials never reach logs
    assert "Traceback" not in done.stderr


def test_db_commands(dsn: str) -> None:
    env = {"JOBQUEUE_DSN": dsn}
    head = migrate.head_revision()
    assert "none" in jobqueue("--schema", "cli_db", "db", "current", env=env).stdout
    upgraded = jobqueue("--schema", "cli_db", "db", "upgrade", env=env)
    assert upgraded.returncode == 0 and head in upgraded.stdout
    assert "up to date" in jobqueue("--schema", "cli_db", "db", "current", env=env).stdout
    down = jobqueue("--schema", "cli_db", "db", "downgrade", "base", env=env)
    assert down.returncode == 0 and "base" in down.stdout


def test_worker_refuses_an_unmigrated_schema(dsn: str) -> None:
    done = jobqueue("--dsn", dsn, "--schema", "never_migrated", "-A", "tests.apps:app", "worker")
    assert done.returncode == 1
    # The advice names a command that reaches this database: the app plus the CLI's overrides.
    assert "`jobqueue -A tests.apps:app --dsn " in done.stderr
    assert " --schema never_migrated db upgrade`" in done.stderr


def test_stats_command(jq: Any, dsn: str, schema: str) -> None:
    jq.add.delay(1, 2)
    done = jobqueue("--dsn", dsn, "--schema", schema, "stats")
    assert done.returncode == 0, done.stderr
    assert "default" in done.stdout and "pending" in done.stdout


def test_sigterm_finishes_running_jobs_then_exits_zero(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    worker = start_worker("--concurrency", "2")
    running = [jq.sleep.delay(1.5) for _ in range(2)]
    wait_for(lambda: all(r.state == states.STARTED for r in running), 10, "jobs to start")
    assert worker.terminate() == 0
    assert [r.state for r in running] == [states.SUCCESS, states.SUCCESS]
    left = conn.execute(
        f'SELECT (SELECT count(*) FROM "{schema}".workers), '
        f'(SELECT count(*) FROM "{schema}".job_lease)'
    ).fetchone()
    assert left == (0, 0)
    assert "warm shutdown" in worker.log


def test_second_signal_releases_running_jobs_to_another_worker(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    first = start_worker("--concurrency", "2")
    running = [jq.sleep.delay(2) for _ in range(2)]
    wait_for(lambda: all(r.state == states.STARTED for r in running), 10, "jobs to start")
    first.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "warm shutdown" in first.log, 10, "the warm shutdown to begin")
    first.proc.send_signal(signal.SIGTERM)
    first.proc.wait(10)
    states_now = {r.state for r in running}
    assert states_now == {states.PENDING}, states_now
    start_worker()
    assert [r.get(timeout=20) for r in running] == [2, 2]
    attempts = conn.execute(f'SELECT attempts FROM "{schema}".jobs').fetchall()
    assert attempts == [(1,), (1,)]  # released jobs were not counted as attempts
