"""The first hour, as a new user lives it: the command line and a real database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict

from jobqueue import JobQueue
from tests.conftest import ROOT


def jobqueue(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobqueue", *args],
        cwd=cwd,
        text=True,
        capture_output=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def sqlalchemy_form(dsn: str) -> str:
    """The DSN as SQLAlchemy writes it: postgresql+psycopg://user@host:port/dbname."""
    p = conninfo_to_dict(dsn)
    host = p.get("host") or ""
    socket = host.startswith("/")  # a unix socket (the embedded server): named by ?host=
    where = "" if socket else f"{host}:{p['port']}" if p.get("port") else host
    url = f"postgresql+psycopg://{p.get('user') or ''}@{where}/{p['dbname']}"
    return f"{url}?host={host}" if socket else url


def test_the_sqlalchemy_form_of_a_dsn_enqueues_and_reads(dsn: str, schema: str) -> None:
    app = JobQueue(sqlalchemy_form(dsn), schema=schema, auto_migrate=False)
    try:

        @app.task(name="fh.add")
        def add(x: int, y: int) -> int:
            return x + y

        result = add.delay(2, 3)
        assert app.store.get_job(result.id) is not None
    finally:
        app.close()


def test_the_sqlalchemy_form_works_on_the_command_line(dsn: str, schema: str) -> None:
    done = jobqueue("--schema", schema, "db", "current", env={"JOBQUEUE_DSN": sqlalchemy_form(dsn)})
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stdout


@pytest.mark.parametrize(
    "args, env",
    [
        (["--dsn", "postgresql://u:se cret@127.0.0.1/x", "db", "current"], {}),
        (["db", "current"], {"JOBQUEUE_DSN": "postgresql://u:se cret@127.0.0.1/x"}),
        (["-A", "tests.apps:app", "stats"], {"JOBQUEUE_DSN": "host='x password=secret"}),
    ],
)
def test_a_malformed_dsn_is_one_line_on_the_command_line(
    args: list[str], env: dict[str, str]
) -> None:
    done = jobqueue(*args, env=env)
    assert done.returncode in (1, 2), done
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "not a valid DSN" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert "secret" not in done.stderr and "se cret" not in done.stderr


def test_global_options_after_the_command_are_taken_as_given_before(dsn: str, schema: str) -> None:
    # Celery 5 refuses `celery worker -A proj`; the order costs new users time,
    # and no command of ours has options of these names.
    done = jobqueue("db", "current", "-A", "tests.apps:app", f"--dsn={dsn}", "--schema", schema)
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stdout
    done = jobqueue("worker", "-Atests.apps:app", "-c", "0")
    assert done.returncode == 2 and "0 is not in the range" in done.stderr  # -A was accepted
    done = jobqueue("stats", "--dsn", "postgresql://u:se cret@h/d")
    assert "--dsn is not a valid DSN" in done.stderr and "se cret" not in done.stderr
    done = jobqueue("db", "current", "--", "-A", "tests.apps:app")  # after --: arguments
    assert done.returncode == 2 and "unexpected extra arguments" in done.stderr


def test_a_task_given_to_dash_a_names_its_app(tmp_path: Path) -> None:
    (tmp_path / "fh_tasks.py").write_text(
        "from jobqueue import JobQueue\n\n"
        "app = JobQueue()\n\n\n"
        "@app.task\n"
        "def add(x, y):\n"
        "    return x + y\n"
    )
    done = jobqueue("-A", "fh_tasks:add", "worker", cwd=tmp_path)
    assert done.returncode == 2, done
    assert "fh_tasks:add is a task (fh_tasks.add), not the app" in done.stderr
    assert "-A fh_tasks:app" in done.stderr


def test_a_bare_module_given_to_dash_a_finds_its_app(dsn: str, schema: str) -> None:
    done = jobqueue("-A", "tests.apps", "--dsn", dsn, "--schema", schema, "stats")
    assert done.returncode == 0, done.stderr


def test_a_bad_queue_in_one_step_writes_no_step(jq: Any, conn: Any, schema: str) -> None:
    from jobqueue import group

    canvas = group(jq.add.s(1, 2), jq.add.s(3, 4).set(queue="emails,default"))
    with pytest.raises(ValueError, match="contains a comma"):
        canvas.apply_async()
    with pytest.raises(ValueError, match="must not be empty"):
        jq.add.apply_async((1, 2), queue="")  # was silently the default queue
    row = conn.execute(f'SELECT count(*) FROM "{schema}".all_jobs').fetchone()
    assert row == (0,)


def test_a_worker_queue_too_long_is_a_usage_error() -> None:
    done = jobqueue("-A", "tests.apps:app", "worker", "-Q", "default," + "q" * 300)
    assert done.returncode == 2, done
    assert "at most 255" in done.stderr and "Traceback" not in done.stderr
