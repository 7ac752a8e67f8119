"""jobqueue.contrib.django against real Django and real PostgreSQL.

In this process (Django configured once, on the rig's database): the DSN
from DATABASES, enqueue inside ``transaction.atomic()`` with and without
``connection=``, refusals. In subprocesses, the project under
tests/django_project as a user runs it: ``manage.py jobqueue worker`` runs
what committed and never what rolled back, autodiscovery and ``@shared_task``
in the worker, a worker started by ``jobqueue -A`` with a process pool (Django
set up in its children), ``manage.py jobqueue db upgrade``.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django
import psycopg
import pytest
from django.db import connection, connections, transaction
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from jobqueue import ConfigurationError, JobQueue, chain, discovery, signals, states
from jobqueue.contrib.django import django_dsn, use_django
from tests.conftest import ROOT, wait_for

PROJECT = ROOT / "tests" / "django_project"


class Rollback(Exception):
    """Raised to leave an atomic block by rolling it back."""


@pytest.fixture(scope="module")
def django_settings(database_dsn: str) -> Iterator[None]:
    """Django in this process, on the rig's database (once: Django cannot be
    set up twice), with a second database that is not PostgreSQL. Afterwards
    what use_django connected process-wide is disconnected, so the tests that
    follow in this process see jobqueue as they would without Django."""
    from django.conf import settings

    if not settings.configured:
        params = conninfo_to_dict(database_dsn)
        settings.configure(
            USE_TZ=True,
            INSTALLED_APPS=["jobqueue.contrib.django"],
            DATABASES={
                "default": {
                    "ENGINE": "django.db.backends.postgresql",
                    "NAME": params.get("dbname", ""),
                    "USER": params.get("user", ""),
                    "PASSWORD": params.get("password", ""),
                    "HOST": params.get("host", ""),
                    "PORT": params.get("port", ""),
                },
                "other": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
            },
        )
        django.setup()
    yield
    for signal in (
        signals.worker_init,
        signals.worker_process_init,
        signals.beat_init,
        signals.task_prerun,
        signals.task_postrun,
    ):
        signal.disconnect(dispatch_uid="jobqueue.contrib.django")
    discovery._source = None


def _register(app: JobQueue) -> Any:
    @app.task(name="shop.tasks.add")
    def add(x: int, y: int) -> int:
        return x + y

    return add


@pytest.fixture
def django_app(django_settings: None, schema: str) -> Iterator[JobQueue]:
    """An app of this test's schema, made a Django project's app."""
    app = use_django(JobQueue(schema=schema, auto_migrate=False))
    yield app
    app.close()
    connections.close_all()


def _jobs(conn: psycopg.Connection[Any], schema: str, ids: list[str]) -> int:
    row = conn.execute(
        f'SELECT count(*) FROM "{schema}".all_jobs WHERE id = ANY(%s::uuid[])', (ids,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def _jobs_on_django(schema: str, job_id: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT count(*) FROM "{schema}".all_jobs WHERE id = %s', [job_id])
        row = cursor.fetchone()
    return int(row[0])


# -- in this process -----------------------------------------------------------


def test_the_dsn_is_databases_default(django_app: JobQueue, database_dsn: str) -> None:
    ours = conninfo_to_dict(django_app.db.dsn())
    rig = conninfo_to_dict(database_dsn)
    for key in ("dbname", "user", "host", "port"):
        assert ours.get(key) == rig.get(key), key
    assert django_app.db.dsn() == django_dsn("default")
    # Django's own parameters (cursor_factory...) are not in it: libpq accepts it.
    with psycopg.connect(django_app.db.dsn()) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_rolled_back_atomic_block_leaves_no_job(
    django_app: JobQueue, conn: psycopg.Connection[Any], schema: str
) -> None:
    add = _register(django_app)
    with pytest.raises(Rollback), transaction.atomic():
        result = add.delay(1, 2)
        # Written in Django's transaction: there, and only there.
        assert _jobs_on_django(schema, result.id) == 1
        assert _jobs(conn, schema, [result.id]) == 0
        group = django_app.enqueue_many(add, [(1, 1), (2, 2)])
        canvas = chain(add.s(1, 1), add.s(3)).apply_async()
        raise Rollback
    ids = [result.id, *(r.id for r in group), canvas.id]
    assert _jobs(conn, schema, ids) == 0  # never existed: no worker can run them
    assert result.state == states.PENDING


def test_enqueue_many_first_in_atomic_is_rolled_back_with_it(
    django_app: JobQueue, conn: psycopg.Connection[Any], schema: str
) -> None:
    """The COPY of enqueue_many as the block's first statement (it used to
    commit on its own: see tests/integration/test_transactional.py)."""
    add = _register(django_app)
    with pytest.raises(Rollback), transaction.atomic():
        lost = django_app.enqueue_many(add, [(1, 1), (2, 2)])
        raise Rollback
    assert _jobs(conn, schema, [r.id for r in lost]) == 0


def test_committed_atomic_block_writes_the_job_at_commit(
    django_app: JobQueue, conn: psycopg.Connection[Any], schema: str
) -> None:
    add = _register(django_app)
    with transaction.atomic():
        result = add.delay(2, 3)
        with transaction.atomic():  # a savepoint: rolled back alone
            try:
                with transaction.atomic():
                    inner = add.delay(0, 0)
                    raise Rollback
            except Rollback:
                pass
        assert _jobs(conn, schema, [result.id]) == 0  # not before the commit
    assert _jobs(conn, schema, [result.id]) == 1
    assert _jobs(conn, schema, [inner.id]) == 0


def test_autocommit_off_is_a_transaction_too(
    django_app: JobQueue, conn: psycopg.Connection[Any], schema: str
) -> None:
    add = _register(django_app)
    transaction.set_autocommit(False)
    try:
        lost = add.delay(1, 1)
        transaction.rollback()
        kept = add.delay(2, 2)
        transaction.commit()
    finally:
        transaction.set_autocommit(True)
    assert _jobs(conn, schema, [lost.id]) == 0
    assert _jobs(conn, schema, [kept.id]) == 1


def test_outside_atomic_the_job_commits_at_once(
    django_app: JobQueue, conn: psycopg.Connection[Any], schema: str
) -> None:
    add = _register(django_app)
    assert not connection.in_atomic_block
    result = add.delay(1, 1)
    assert _jobs(conn, schema, [result.id]) == 1


def test_connection_django_db_connection_is_transactional(
    django_settings: None, dsn: str, schema: str, conn: psycopg.Connection[Any]
) -> None:
    """Any app (its own DSN, no use_django) joins Django's transaction when
    given ``connection=django.db.connection``: before, a TypeError."""
    app = JobQueue(dsn, schema=schema, auto_migrate=False)
    try:
        add = _register(app)
        with pytest.raises(Rollback), transaction.atomic():
            lost = add.apply_async((1, 2), connection=connection)
            many = app.enqueue_many(add, [(1, 1)], connection=connection)
            assert _jobs_on_django(schema, lost.id) == 1
            raise Rollback
        with transaction.atomic():
            kept = add.apply_async((1, 2), connection=connection)
            assert _jobs(conn, schema, [kept.id]) == 0
        assert _jobs(conn, schema, [lost.id, many[0].id]) == 0
        assert _jobs(conn, schema, [kept.id]) == 1
        # Without atomic() Django is in autocommit: the job is there at once.
        now = add.apply_async((1, 2), connection=connections["default"])
        assert _jobs(conn, schema, [now.id]) == 1
        # An enqueue with no connection= does not join: this app does not share.
        with pytest.raises(Rollback), transaction.atomic():
            alone = add.delay(5, 5)
            raise Rollback
        assert _jobs(conn, schema, [alone.id]) == 1
    finally:
        app.close()
        connections.close_all()


def test_share_connection_false_uses_the_pool(
    django_settings: None, schema: str, conn: psycopg.Connection[Any]
) -> None:
    app = use_django(JobQueue(schema=schema, auto_migrate=False), share_connection=False)
    try:
        add = _register(app)
        with pytest.raises(Rollback), transaction.atomic():
            result = add.delay(1, 1)
            raise Rollback
        assert _jobs(conn, schema, [result.id]) == 1
    finally:
        app.close()
        connections.close_all()


def test_not_postgresql_is_refused(
    django_app: JobQueue, conn: psycopg.Connection[Any], schema: str
) -> None:
    add = _register(django_app)
    with pytest.raises(ConfigurationError, match=r"needs PostgreSQL.*sqlite3"):
        django_dsn("other")
    with pytest.raises(TypeError, match="'sqlite', not PostgreSQL"):
        add.apply_async((1, 1), connection=connections["other"])
    with pytest.raises(ConfigurationError, match="no database 'missing'"):
        django_dsn("missing")
    other = use_django(JobQueue(schema=schema, auto_migrate=False), alias="other")
    try:
        with pytest.raises(ConfigurationError, match="needs PostgreSQL"):
            other.db.dsn()
    finally:
        other.close()
    row = conn.execute(f'SELECT count(*) FROM "{schema}".all_jobs').fetchone()
    assert row == (0,)


def test_a_dsn_of_another_database_is_refused_inside_atomic(
    django_settings: None, server_dsn: str, schema: str
) -> None:
    """Jobs written on Django's connection land in Django's database: an app
    whose own DSN names another must not silently write there."""
    elsewhere = make_conninfo(server_dsn, dbname="template1")
    app = use_django(JobQueue(elsewhere, schema=schema, auto_migrate=False))
    try:
        add = _register(app)
        refused = pytest.raises(ConfigurationError, match="is not Django's database")
        with refused, transaction.atomic():
            add.delay(1, 1)
    finally:
        app.close()
        connections.close_all()


# -- the project, as a user runs it ---------------------------------------------


def _env(dsn: str, schema: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "JQ_DJANGO_DSN": dsn, "JQ_DJANGO_SCHEMA": schema}
    for name in ("JOBQUEUE_DSN", "JOBQUEUE_APP", "DJANGO_SETTINGS_MODULE"):
        env.pop(name, None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return {**env, **extra}


def _manage(dsn: str, schema: str, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT,
        env=_env(dsn, schema, **extra),
        capture_output=True,
        text=True,
        timeout=120,
    )


class _Worker:
    """A worker of the test project, in a subprocess."""

    def __init__(
        self, command: list[str], dsn: str, schema: str, log: Path, env: dict[str, str]
    ) -> None:
        self.schema, self.log_path = schema, log
        self.log_file = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, *command, "--loglevel", "info"],
            cwd=PROJECT,
            env=_env(dsn, schema, **env),
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, conn: psycopg.Connection[Any]) -> None:
        def registered() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.log_path.read_text()}")
            row = conn.execute(
                f'SELECT count(*) FROM "{self.schema}".workers WHERE pid = %s', (self.proc.pid,)
            ).fetchone()
            return bool(row and row[0])

        wait_for(registered, 60, "the worker to register")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log_file.close()


@pytest.fixture
def project_worker(
    dsn: str, schema: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> Iterator[Any]:
    workers: list[_Worker] = []

    def start(*command: str, **env: str) -> _Worker:
        log = tmp_path / f"worker{len(workers)}.log"
        worker = _Worker(list(command), dsn, schema, log, env)
        workers.append(worker)
        worker.wait_ready(conn)
        return worker

    yield start
    for worker in workers:
        worker.stop()


def test_manage_py_worker_runs_what_committed_only(
    django_app: JobQueue,
    project_worker: Any,
    dsn: str,
    schema: str,
    conn: psycopg.Connection[Any],
) -> None:
    project_worker("manage.py", "jobqueue", "worker", "-c", "2")
    add = _register(django_app)
    with pytest.raises(Rollback), transaction.atomic():
        lost = add.delay(1, 2)
        raise Rollback
    with transaction.atomic():
        kept = add.delay(40, 2)
    assert kept.get(timeout=30) == 42
    assert _jobs(conn, schema, [lost.id]) == 0
    # Tasks found by autodiscovery in the worker: the project's, which use the
    # ORM (Django is set up there), and a reusable app's @shared_task.
    database = django_app.send_task("shop.tasks.database")
    assert database.get(timeout=30) == conninfo_to_dict(dsn)["dbname"]
    assert django_app.send_task("reusable.tasks.shout", ("hi",)).get(timeout=30) == "HI!"
    # In the worker, a task's enqueue inside atomic() follows its transaction.
    declined = django_app.send_task("shop.tasks.place_order", (True,))
    assert declined.get(timeout=30) is None
    placed = django_app.send_task("shop.tasks.place_order", (False,))
    placed_id = placed.get(timeout=30)
    assert django_app.AsyncResult(placed_id).get(timeout=30) == 42
    adds = conn.execute(
        f"SELECT count(*) FROM \"{schema}\".all_jobs WHERE task = 'shop.tasks.add'"
    ).fetchone()
    assert adds == (2,)  # kept and the placed order's: not the declined one's
    # A Django process that is not a worker: @shared_task enqueues through the
    # project's app (JOBQUEUE_APP, loaded when Django is set up).
    shell = _manage(
        dsn,
        schema,
        "shell",
        "-c",
        "from reusable.tasks import shout; print(shout.delay('there').get(timeout=30))",
    )
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.strip().splitlines()[-1] == "THERE!"


def test_a_broken_django_connection_fails_one_task_not_every_later_one(
    django_app: JobQueue, project_worker: Any, conn: psycopg.Connection[Any]
) -> None:
    """Django closes a broken connection at the end of a request; a worker
    does it around each task, or one database restart would fail every task
    of a thread from then on (persistent connections: CONN_MAX_AGE=None)."""
    name = f"djproj_{secrets.token_hex(3)}"
    project_worker(
        "manage.py",
        "jobqueue",
        "worker",
        "-c",
        "1",
        JQ_DJANGO_PERSISTENT="1",
        JQ_DJANGO_APP_NAME=name,
    )
    database = django_app.send_task("shop.tasks.database").get(timeout=30)
    killed = conn.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
        (name,),
    ).fetchone()
    assert killed == (1,)  # the worker thread's Django connection, kept between tasks
    with pytest.raises(Exception, match=r"terminat|closed|connection"):
        django_app.send_task("shop.tasks.database").get(timeout=30)
    assert django_app.send_task("shop.tasks.database").get(timeout=30) == database


def test_jobqueue_cli_worker_with_processes_sets_django_up(
    django_app: JobQueue, project_worker: Any, dsn: str
) -> None:
    """``jobqueue -A djproj.jobs:app worker``: no manage.py, so the worker sets
    Django up itself, and so does each process-pool child (a fresh interpreter)."""
    cli = ["-m", "jobqueue", "-A", "djproj.jobs:app"]
    project_worker(*cli, "worker", "-P", "processes", "-c", "1")
    assert (
        django_app.send_task("shop.tasks.database").get(timeout=60)
        == (conninfo_to_dict(dsn)["dbname"])
    )
    assert django_app.send_task("reusable.tasks.shout", ("x",)).get(timeout=30) == "X!"


def test_beat_outside_manage_py_sees_schedules_of_discovered_modules(
    django_settings: None, dsn: str, schema: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """``jobqueue -A djproj.jobs:app beat``: Django is set up at beat_init and
    the installed apps' tasks modules imported before the beat reads its
    schedules (shop.tasks declares one)."""
    log = tmp_path / "beat.log"
    with log.open("wb") as out:
        beat = subprocess.Popen(
            [sys.executable, "-m", "jobqueue", "-A", "djproj.jobs:app", "beat"],
            cwd=PROJECT,
            env=_env(dsn, schema),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:

            def declared() -> bool:
                if beat.poll() is not None:
                    raise AssertionError(f"beat exited:\n{log.read_text()}")
                row = conn.execute(
                    f'SELECT task FROM "{schema}".schedules WHERE name = %s', ("shop.hourly",)
                ).fetchone()
                return row == ("shop.tasks.hourly",)

            wait_for(declared, 60, "the beat to declare shop.hourly")
        finally:
            beat.terminate()
            beat.wait(30)


def test_a_worker_whose_discovery_waits_for_django_refuses_to_start(
    dsn: str, schema: str, tmp_path: Path
) -> None:
    """autodiscover_tasks() without packages and no Django: the worker says
    so in one line instead of running without the tasks."""
    (tmp_path / "plainjobs.py").write_text(
        "from jobqueue import JobQueue\napp = JobQueue()\napp.autodiscover_tasks()\n"
    )
    env = _env(dsn, schema)
    env["PYTHONPATH"] = os.pathsep.join((str(tmp_path), env["PYTHONPATH"]))
    cli = ["--dsn", dsn, "--schema", schema]
    done = subprocess.run(
        [sys.executable, "-m", "jobqueue", "-A", "plainjobs:app", *cli, "worker"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert "Django was never set up" in done.stderr
    assert "Traceback" not in done.stderr


def test_manage_py_jobqueue_db_upgrade_on_djangos_database(
    django_settings: None, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    fresh = f"dj_{secrets.token_hex(4)}"
    before = _manage(dsn, fresh, "jobqueue", "db", "current")
    assert before.returncode != 0 or "up to date" not in before.stdout
    upgraded = _manage(dsn, fresh, "jobqueue", "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    # Django's own --settings is applied by Django, not handed to the CLI.
    current = _manage(dsn, fresh, "jobqueue", "--settings", "djproj.settings", "db", "current")
    assert current.returncode == 0, current.stderr
    assert "up to date" in current.stdout
    helped = _manage(dsn, fresh, "help", "jobqueue")
    assert helped.returncode == 0, helped.stderr
    assert "Usage: manage.py jobqueue [OPTIONS] COMMAND" in helped.stdout
    assert "worker" in helped.stdout
    row = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", (fresh,)
    ).fetchone()
    assert row is not None and row[0] > 0  # made in Django's database
    # Without JOBQUEUE_APP: the app the project package imported (Celery's layout).
    found = _manage(dsn, fresh, "jobqueue", "db", "current", JQ_DJANGO_NO_APP="1")
    assert found.returncode == 0, found.stderr
    assert "up to date" in found.stdout
    # With neither, the command says what to set, in one line.
    missing = _manage(dsn, fresh, "jobqueue", "worker", JQ_DJANGO_NO_APP="1", JQ_DJANGO_LAZY="1")
    assert missing.returncode != 0
    assert "set JOBQUEUE_APP in Django's settings" in missing.stderr
    assert "Traceback" not in missing.stderr
