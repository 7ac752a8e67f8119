"""When no DSN is configured: the embedded fallback says so, stays put, can be
forbidden, and the CLI does not invent a database to show it empty.

Every command runs in a subprocess, as a user would, from temporary
directories (never the repository's own ``./.jobqueue``). The project under
test is ``<tmp>/project/proj/tasks.py``; each test stops every embedded server
it may have started, including those the code before the fix would have
started elsewhere.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from jobqueue import embedded, migrate

TASKS = """\
from jobqueue import JobQueue

app = JobQueue({arguments})
{extra}

@app.task
def add(x, y):
    return x + y
"""


def make_project(root: Path, arguments: str = "", extra: str = "") -> Path:
    """``root/proj/tasks.py`` with ``app = JobQueue(arguments)``; returns ``root``."""
    package = root / "proj"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "tasks.py").write_text(TASKS.format(arguments=arguments, extra=extra))
    return root


def environment(**extra: str) -> dict[str, str]:
    """The caller's environment with no jobqueue configuration in it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def jobqueue(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobqueue", *args],
        cwd=cwd,
        env=env or environment(),
        text=True,
        capture_output=True,
        timeout=timeout,
    )


def python(
    code: str, *, cwd: Path, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
    )


def notices(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "embedded PostgreSQL" in line]


@pytest.fixture
def tmp() -> Iterator[Path]:
    """A temporary directory; every embedded server started under it is stopped
    at teardown. Not pytest's tmp: a concurrent pytest session makes
    /tmp/pytest-of-<user> private again, and the embedded server, which runs as
    its own user when we are root, then cannot reach its files."""
    root = Path(tempfile.mkdtemp(prefix="jq-fallback-"))
    try:
        yield root
    finally:
        errors = []
        for data_dir in root.rglob(".jobqueue"):
            try:
                embedded.stop(data_dir)
            except Exception as exc:  # stop the others all the same
                errors.append(exc)
        shutil.rmtree(root, ignore_errors=True)
        if errors:
            raise errors[0]


def test_falling_back_to_the_embedded_server_says_so_in_one_line(tmp: Path) -> None:
    project = make_project(tmp / "project")
    data_dir = project / ".jobqueue"
    pgdata = str(data_dir.resolve() / "pgdata")

    # A producer: one WARNING per process, however many apps and statements.
    producer = python(
        "import logging; logging.basicConfig(format='%(levelname)s %(name)s: %(message)s')\n"
        "from proj.tasks import add, app\n"
        "from jobqueue import JobQueue\n"
        "add.delay(1, 2); add.delay(3, 4)\n"
        "JobQueue(data_dir=app.conf.data_dir).db.dsn()\n",
        cwd=project,
        env=environment(),
    )
    assert producer.returncode == 0, producer.stderr
    [line] = notices(producer.stderr)
    assert line.startswith("WARNING"), line
    assert pgdata in line and "$JOBQUEUE_DSN" in line and "-A module:app" in line, line

    # The CLI with an app that configures no DSN.
    with_app = jobqueue("-A", "proj.tasks:app", "stats", cwd=project)
    assert with_app.returncode == 0, with_app.stderr
    [line] = notices(with_app.stderr)
    assert pgdata in line and "--dsn" in line and "$JOBQUEUE_DSN" in line, line

    # The CLI without an app, where that server exists.
    without_app = jobqueue("stats", cwd=project)
    assert without_app.returncode == 0, without_app.stderr
    [line] = notices(without_app.stderr)
    assert pgdata in line and "--dsn" in line and "-A module:app" in line, line
    assert "default" in without_app.stdout  # the producer's two jobs


def test_schema_not_ready_advice_reaches_the_apps_database(dsn: str, tmp: Path) -> None:
    params = conninfo_to_dict(dsn)
    params.setdefault("password", "pw-never-shown")  # ignored by a server that trusts
    secret = str(params["password"])
    app_dsn = make_conninfo("", **{k: v for k, v in params.items() if v is not None})
    project = make_project(tmp / "project", f"{app_dsn!r}, schema='advised'")
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()

    producer = python(
        "from proj.tasks import add\nadd.delay(1, 2)",
        cwd=elsewhere,
        env=environment(PYTHONPATH=str(project)),
    )
    assert producer.returncode == 1
    assert "SchemaNotReadyError" in producer.stderr
    assert "jobqueue --dsn " in producer.stderr and "--schema advised db upgrade" in producer.stderr
    assert "-A module:app" in producer.stderr
    assert secret not in producer.stderr

    worker = jobqueue("-A", "proj.tasks:app", "worker", cwd=project)
    assert worker.returncode == 1, worker.stderr
    assert secret not in worker.stderr
    advice = re.search(r"run `(jobqueue [^`]*db upgrade)`", worker.stderr)
    assert advice is not None, worker.stderr
    assert advice.group(1) == "jobqueue -A proj.tasks:app db upgrade"

    # The advised command, run as a user would, migrates the app's own database.
    done = jobqueue(*shlex.split(advice.group(1))[1:], cwd=project)
    assert done.returncode == 0, done.stderr
    assert migrate.current_revision(dsn, "advised") == migrate.head_revision()
    assert not (project / ".jobqueue").exists()


def test_one_app_reaches_one_database_from_any_directory(tmp: Path) -> None:
    project = make_project(tmp / "project")
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    log = (tmp / "worker.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "jobqueue", "-A", "proj.tasks:app", "worker", "-l", "info"],
        cwd=project,
        env=environment(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        producer = python(
            "from proj.tasks import add\nprint(add.delay(2, 3).get(timeout=60))",
            cwd=elsewhere,
            env=environment(PYTHONPATH=str(project)),
        )
        assert producer.returncode == 0, producer.stderr
        assert producer.stdout.strip() == "5"
        assert (project / ".jobqueue" / "pgdata" / "PG_VERSION").exists()
        assert not (elsewhere / ".jobqueue").exists()
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        log.close()
    output = (tmp / "worker.log").read_text()
    assert worker.returncode == 0, output
    assert len(notices(output)) == 1, output  # the CLI's line, not a second one logged


def test_the_embedded_fallback_can_be_forbidden(tmp: Path) -> None:
    by_env = make_project(tmp / "by_env")
    by_setting = make_project(tmp / "by_setting", extra="app.conf.embedded = False")
    forbidden = environment(JOBQUEUE_EMBEDDED="0")

    for project, env in ((by_env, forbidden), (by_setting, environment())):
        producer = python("from proj.tasks import add\nadd.delay(1, 2)", cwd=project, env=env)
        assert producer.returncode == 1, producer.stderr
        assert "ConfigurationError: no DSN configured" in producer.stderr
        assert "$JOBQUEUE_DSN" in producer.stderr and "JobQueue(" in producer.stderr

    cli = jobqueue("-A", "proj.tasks:app", "stats", cwd=by_env, env=forbidden)
    assert cli.returncode == 1, cli.stderr
    assert "Error: no DSN configured" in cli.stderr and "--dsn" in cli.stderr
    assert "Traceback" not in cli.stderr

    bad = python("import proj.tasks", cwd=by_env, env=environment(JOBQUEUE_EMBEDDED="maybe"))
    assert bad.returncode == 1 and "JOBQUEUE_EMBEDDED" in bad.stderr

    assert not (by_env / ".jobqueue").exists() and not (by_setting / ".jobqueue").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["db", "upgrade"],
        ["db", "current"],
        ["db", "downgrade", "base"],
        ["stats"],
        ["schedule", "list"],
        ["schedule", "pause", "nightly"],
        ["schedule", "resume", "nightly"],
        ["schedule", "remove", "nightly"],
        ["schedule", "add", "nightly", "--task", "proj.tasks.add", "--every", "60"],
        ["beat"],
    ],
)
def test_cli_without_a_database_refuses_to_create_one(command: list[str], tmp: Path) -> None:
    done = jobqueue(*command, cwd=tmp, timeout=30)
    assert done.returncode == 2, done
    assert "no database configured" in done.stderr
    assert "-A module:app" in done.stderr and "--dsn" in done.stderr
    assert "--embedded" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp / ".jobqueue").exists()


def test_cli_creates_the_embedded_server_when_asked(tmp: Path) -> None:
    created = jobqueue("--embedded", "db", "upgrade", cwd=tmp)
    assert created.returncode == 0, created.stderr
    assert len(notices(created.stderr)) == 1
    assert (tmp / ".jobqueue" / "pgdata" / "PG_VERSION").exists()
    current = jobqueue("db", "current", cwd=tmp)  # it exists now: no flag needed
    assert current.returncode == 0, current.stderr
    assert "up to date" in current.stdout
