"""The test rig: one real PostgreSQL for the session, a schema per test.

Server: ``$JOBQUEUE_TEST_DSN`` if set; else a testcontainers PostgreSQL when a
Docker engine answers; else the embedded server (under ``.jobqueue/test``).
The rig creates its own database on that server, gives every test a fresh,
migrated schema, and drops the database at the end: it never touches data it
did not create.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from jobqueue import JobQueue, migrate
from tests.apps import build

ROOT = Path(__file__).resolve().parent.parent
SERVER_VERSIONS: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SERVER_VERSIONS:
        terminalreporter.write_line(f"PostgreSQL server under test: {SERVER_VERSIONS[0]}")


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    """A DSN for a maintenance database on the server under test."""
    env = os.environ.get("JOBQUEUE_TEST_DSN")
    if env:
        yield env
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as pg:
            yield pg.get_connection_url()
        return
    from jobqueue import embedded

    data_dir = ROOT / ".jobqueue" / "test"
    yield embedded.start(data_dir)
    embedded.stop(data_dir)


@pytest.fixture(scope="session")
def database_dsn(server_dsn: str) -> Iterator[str]:
    """A database of our own for this session, dropped at the end."""
    name = f"jobqueue_test_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        SERVER_VERSIONS.append(str(version[0]) if version else "?")
        conn.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(server_dsn)
    params["dbname"] = name
    try:
        yield make_conninfo("", **{k: v for k, v in params.items() if v is not None})
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_counter = iter(range(1_000_000))


@pytest.fixture
def schema(database_dsn: str) -> str:
    """A fresh, migrated schema name for one test."""
    name = f"t{next(_counter)}_{secrets.token_hex(3)}"
    migrate.upgrade(database_dsn, name)
    return name


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An embedded server of this test's own, to stop and restart at will."""
    from jobqueue import embedded

    data_dir = tmp_path / "pg"
    dsn = embedded.start(data_dir)
    try:
        yield dsn, data_dir
    finally:
        embedded.stop(data_dir)


@pytest.fixture
def dsn(database_dsn: str) -> str:
    return database_dsn


@pytest.fixture
def jq(dsn: str, schema: str) -> Iterator[SimpleNamespace]:
    """The test tasks bound to an app on this test's schema."""
    app = JobQueue(dsn, schema=schema, auto_migrate=False)
    tasks = build(app)
    yield tasks
    app.close()


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection for assertions."""
    with psycopg.connect(dsn, autocommit=True) as c:
        yield c


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class WorkerHung(subprocess.TimeoutExpired):
    """A worker that did not stop after SIGTERM: its stacks and sessions."""

    def __init__(self, cmd: Any, timeout: float, report: str) -> None:
        super().__init__(cmd, timeout)
        self.report = report

    def __str__(self) -> str:
        return f"the worker did not stop within {self.timeout:.0f}s of SIGTERM\n{self.report}"


class WorkerProcess:
    """``jobqueue worker`` in a subprocess, as a user would run it."""

    def __init__(
        self,
        dsn: str,
        schema: str,
        args: list[str],
        log_path: Path,
        command: str = "worker",
        app: str = "tests.apps:app",
    ) -> None:
        self.dsn, self.schema, self.log_path = dsn, schema, log_path
        self.log_file = log_path.open("wb")
        # faulthandler: a worker that does not stop in time is sent SIGABRT
        # (terminate), which makes it write every thread's stack to its log.
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}
        env.pop("JOBQUEUE_DSN", None)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jobqueue",
                "-A",
                app,
                "--dsn",
                dsn,
                "--schema",
                schema,
                command,
                "--loglevel",
                "info",
                *args,
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, conn: psycopg.Connection[Any], timeout: float = 30.0) -> None:
        def registered() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.log}")
            row = conn.execute(
                f'SELECT count(*) FROM "{self.schema}".workers WHERE pid = %s', (self.proc.pid,)
            ).fetchone()
            return bool(row and row[0])

        wait_for(registered, timeout, "the worker to register")

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, and its exit code. A worker still running after ``timeout``
        raises WorkerHung, with every thread's stack and the server's sessions:
        what it was waiting for."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise WorkerHung(exc.cmd, exc.timeout, self._hung_report()) from exc
        finally:
            self.log_file.close()

    def _hung_report(self) -> str:
        sessions = "(the server could not be asked)"
        with (
            suppress(psycopg.Error),
            psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn,
        ):
            rows = conn.execute(
                "SELECT pid, application_name, state, wait_event_type, wait_event, "
                "now() - xact_start, left(query, 160) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
            sessions = "\n".join(" | ".join(str(v) for v in row) for row in rows)
        with suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGABRT)  # faulthandler: every thread's stack
        with suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        return f"server sessions:\n{sessions}\nworker log (end):\n{self.log[-12000:]}"

    def kill(self) -> None:
        with suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait(10)
        self.log_file.close()


@pytest.fixture
def start_worker(
    dsn: str, schema: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers on this test's schema; all are stopped at teardown."""
    workers: list[WorkerProcess] = []

    def start(
        *args: str, ready: bool = True, command: str = "worker", app: str = "tests.apps:app"
    ) -> WorkerProcess:
        log_path = tmp_path / f"{command}{len(workers)}.log"
        worker = WorkerProcess(dsn, schema, list(args), log_path, command, app)
        workers.append(worker)
        if ready and command == "worker":
            worker.wait_ready(conn)
        return worker

    yield start
    for worker in workers:
        if worker.proc.poll() is None:
            try:
                worker.terminate(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()


@pytest.fixture
def ja(dsn: str, schema: str, conn: psycopg.Connection[Any]) -> Iterator[SimpleNamespace]:
    """The atomic tasks (tests.apps_atomic) on an app of this test's schema,
    with the table they write: effects (job, n)."""
    from tests.apps_atomic import build as build_atomic

    conn.execute(f'CREATE TABLE "{schema}".effects (job uuid, n int)')
    app = JobQueue(dsn, schema=schema, auto_migrate=False)
    yield build_atomic(app)
    app.close()


def unsettled(conn: psycopg.Connection[Any], schema: str) -> int:
    """Jobs of ``schema`` not finished yet (waiting ones included)."""
    row = conn.execute(
        f'SELECT count(*) FROM "{schema}".all_jobs '
        "WHERE state NOT IN ('SUCCESS', 'FAILURE', 'REVOKED')"
    ).fetchone()
    return int(row[0]) if row else 0
