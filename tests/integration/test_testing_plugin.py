"""jobqueue.testing as a user meets it, and eager mode against a real worker.

- A small project's test suite run by pytest in a subprocess, with the
  plugin loaded as users load it (``-p jobqueue.testing``, and through the
  pyproject's entry point), against the rig's real PostgreSQL: isolation
  between tests, the fixtures, the assertions, ``drain()``, the per-test
  set-up cost, the schema dropped at the end.
- One set of canvases run both ways, eagerly and by a real worker
  (``TestWorker.drain``), compared job by job: task, state, attempts,
  result, error type.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from jobqueue import GroupResult, JobQueue, chain, chord, group
from jobqueue.testing import TestWorker

ROOT = Path(__file__).resolve().parents[2]

TASKS = """
from jobqueue import JobQueue

app = JobQueue()


@app.task
def add(x, y):
    return x + y


@app.task
def tsum(values):
    return sum(values)


@app.task
def fanout(n):
    for i in range(n):
        add.delay(i, i)
    return n


@app.task(max_retries=0)
def boom():
    raise ValueError("boom")
"""

TESTS = """
import os
import time

import pytest

from jobqueue import chord
from jobqueue.testing import assert_enqueued, assert_not_enqueued, enqueued_jobs
from proj.tasks import add, boom, fanout, tsum


def test_enqueue_then_assert(jobqueue_app):
    add.delay(2, 3)
    add.apply_async((1, 1), queue="other", countdown=60)
    (jobs,) = [assert_enqueued(add, args=(2, 3))]
    assert jobs[0].kwargs == {} and jobs[0].queue == "default"
    assert_enqueued(add, args=[1, 1], queue="other")
    assert_enqueued(add, count=2)
    assert_not_enqueued(add, args=(9, 9))
    wanted = r"expected a job of proj.tasks.add with args=\\[7, 7\\]"
    with pytest.raises(AssertionError, match=wanted):
        assert_enqueued(add, args=(7, 7))
    with pytest.raises(AssertionError, match="found 1"):
        assert_not_enqueued(add, args=(2, 3))
    jobqueue_app.conf.default_queue = "changed"
    with open(os.environ["SCHEMA_FILE"], "w") as f:
        f.write(jobqueue_app.conf.schema)


def test_each_test_starts_empty_with_its_settings_back(jobqueue_app):
    assert enqueued_jobs(add, state=None) == []
    assert jobqueue_app.conf.default_queue == "default"


def test_drain_runs_what_jobs_cause(jobqueue_app, jobqueue_worker):
    result = fanout.delay(3)
    chained = (add.s(1, 2) | add.s(3))()
    joined = chord([add.s(i, i) for i in range(3)], tsum.s())()
    later = add.apply_async((5, 5), countdown=3600)
    drained = jobqueue_worker.drain()
    assert drained.succeeded == 4 + 2 + 4 and drained.failed == 0, drained
    assert result.get(timeout=5) == 3 and chained.get(timeout=5) == 6
    assert joined.get(timeout=5) == 6
    assert_enqueued(add, args=(5, 5))  # due later: left waiting
    assert later.state == "PENDING"
    assert len(enqueued_jobs(add, state="SUCCESS")) == 3 + 2 + 3


def test_drain_with_a_process_pool(jobqueue_worker):
    # The children import proj.tasks:app afresh: they must reach the test schema too.
    result = fanout.delay(2)
    drained = jobqueue_worker.drain(pool="processes", concurrency=2)
    assert drained.succeeded == 3 and result.get(timeout=5) == 2


def test_drain_counts_failures(jobqueue_worker):
    boom.delay()
    drained = jobqueue_worker.drain()
    assert drained.failed == 1 and drained.succeeded == 0


def test_eager_app_needs_no_database(jobqueue_eager_app):
    assert add.delay(1, 1).get() == 2
    assert chord([add.s(1, 1), add.s(2, 2)], tsum.s())().get() == 6


def test_after_eager_the_app_uses_the_database_again(jobqueue_app):
    add.delay(4, 4)
    assert_enqueued(add, args=(4, 4))


@pytest.mark.parametrize("n", range(10))
def test_set_up_cost(jobqueue_app, n):
    add.delay(n, n)
"""


CONFTEST = '''
import os
import time

import pytest


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    """The set-up time of the test_set_up_cost tests, to the nearest microsecond."""
    started = time.perf_counter()
    try:
        return (yield)
    finally:
        if item.name.startswith("test_set_up_cost"):
            with open(os.environ["SETUP_FILE"], "a") as f:
                f.write(f"{time.perf_counter() - started}\\n")
'''


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    (project / "proj").mkdir(parents=True)
    (project / "proj" / "__init__.py").write_text("")
    (project / "proj" / "tasks.py").write_text(TASKS)
    (project / "test_proj.py").write_text(textwrap.dedent(TESTS))
    (project / "conftest.py").write_text(CONFTEST)
    (project / "pytest.ini").write_text("[pytest]\njobqueue_app = proj.tasks:app\n")
    return project


def _pytest(
    project: Path, dsn: str, *args: str, extra_path: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "JOBQUEUE_TEST_DSN": dsn,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), str(project), extra_path) if p),
        "SCHEMA_FILE": str(project / "schema.txt"),
        "SETUP_FILE": str(project / "setup.txt"),
    }
    env.pop("JOBQUEUE_DSN", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_projects_suite_with_the_plugin(server_dsn: str, tmp_path: Path) -> None:
    project = _project(tmp_path)
    run = _pytest(
        project,
        server_dsn,
        "-p",
        "jobqueue.testing",
        f"--basetemp={tmp_path / 'inner'}",
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "17 passed" in run.stdout, run.stdout
    # Per-test set-up of jobqueue_app, once the session's schema exists.
    setups = [float(line) for line in (project / "setup.txt").read_text().split()]
    assert len(setups) == 10, setups
    median = statistics.median(setups)
    print(f"jobqueue_app set-up: median {median * 1000:.1f} ms, max {max(setups) * 1000:.1f} ms")
    assert median < 0.1, run.stdout  # migrating a schema per test costs ~180 ms
    schema = (project / "schema.txt").read_text()
    assert schema.startswith("jobqueue_test_")
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        left = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,))
        assert left.fetchone() == (0,), "the session's schema was not dropped"


def test_the_entry_point_loads_the_plugin_once(server_dsn: str, tmp_path: Path) -> None:
    """pyproject's pytest11 entry point, as an installed distribution declares
    it: the plugin loads with no -p, and with -p jobqueue.testing too (the
    same name: not twice); -p no:jobqueue.testing turns it off."""
    tomllib = pytest.importorskip("tomllib")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())
    points = declared["project"]["entry-points"]["pytest11"]
    site = tmp_path / "site"
    info = site / "jobqueue_plugin_probe-0.dist-info"
    info.mkdir(parents=True)
    metadata = "Metadata-Version: 2.1\nName: jobqueue-plugin-probe\nVersion: 0\n"
    (info / "METADATA").write_text(metadata)
    lines = "".join(f"{name} = {value}\n" for name, value in points.items())
    (info / "entry_points.txt").write_text(f"[pytest11]\n{lines}")
    project = _project(tmp_path)
    (project / "test_proj.py").write_text(
        "def test_fixture(jobqueue_eager_app):\n    assert jobqueue_eager_app.conf.eager\n"
    )
    env_path = str(site)
    auto = _pytest(project, server_dsn, extra_path=env_path)
    assert auto.returncode == 0, auto.stdout + auto.stderr
    both = _pytest(project, server_dsn, "-p", "jobqueue.testing", extra_path=env_path)
    assert both.returncode == 0, both.stdout + both.stderr
    off = _pytest(project, server_dsn, "-p", "no:jobqueue.testing", extra_path=env_path)
    assert off.returncode != 0 and "fixture 'jobqueue_eager_app' not found" in off.stdout


# -- eager mode against a real worker ------------------------------------------------


def _tasks(app: JobQueue) -> Any:
    class T:
        @staticmethod
        @app.task(name="add")
        def add(x: int, y: int) -> int:
            return x + y

        @staticmethod
        @app.task(name="tsum")
        def tsum(values: list[int]) -> int:
            return sum(values)

        @staticmethod
        @app.task(name="boom", max_retries=0)
        def boom(*args: Any) -> None:
            raise ValueError("boom")

        @staticmethod
        @app.task(name="on_error")
        def on_error(failed_id: str) -> str:
            return "handled"

        @staticmethod
        @app.task(name="flaky", bind=True, max_retries=2)
        def flaky(self: Any, succeed_at: int) -> int:
            if self.request.retries < succeed_at:
                raise self.retry(countdown=0)
            return int(self.request.retries)

        @staticmethod
        # Retry delays of 0: a worker leaves a job waiting for its delay (3
        # minutes by default), where eager mode runs the next attempt at once.
        @app.task(
            name="auto", bind=True, autoretry_for=(OSError,), max_retries=1, default_retry_delay=0
        )
        def auto(self: Any) -> None:
            raise OSError(f"attempt {self.request.attempt}")

    return T


def _with_errback(sig: Any, errback: Any) -> Any:
    sig.link_error(errback)
    return sig


CANVASES: dict[str, Callable[[Any], Any]] = {
    "chain": lambda t: t.add.s(1, 2) | t.add.s(3) | t.add.s(4),
    "group": lambda t: group(t.add.s(i, i) for i in range(4)),
    "chord": lambda t: chord([t.add.s(i, i) for i in range(4)], t.tsum.s()),
    "chord, failed header": lambda t: chord(
        [t.add.s(1, 1), t.boom.s()], _with_errback(t.tsum.s(), t.on_error.s())
    ),
    "chain, failed step": lambda t: _with_errback(
        chain(t.add.s(1, 1), t.boom.s(), t.add.s(5)), t.on_error.s()
    ),
    "chain into a group of chains": lambda t: (
        t.add.s(1, 1) | group(t.add.s(1) | t.add.s(2), t.add.s(3)) | t.tsum.s()
    ),
    "chord in a chord": lambda t: chord(
        [chord([t.add.s(1, 1), t.add.s(2, 2)], t.tsum.s()), t.add.s(5, 5)], t.tsum.s()
    ),
    "callbacks": lambda t: t.add.signature((2, 2), link=t.add.s(1), link_error=t.on_error.s()),
    "errback": lambda t: t.boom.signature((), link=t.add.s(1), link_error=t.on_error.s()),
    "retries": lambda t: group(t.flaky.s(1), t.flaky.s(5)),
    "autoretry": lambda t: t.auto.s(),
    "map, starmap, chunks": lambda t: group(
        t.add.starmap([(1, 2), (3, 4)]), t.add.chunks([(i, i) for i in range(3)], 2).group()
    ),
}


def _leaf(result: Any) -> Any:
    return result.leaves()[0] if isinstance(result, GroupResult) else result


def _leaves(result: Any) -> list[Any]:
    return result.leaves() if isinstance(result, GroupResult) else [result]


def _jobs_by_database(conn: psycopg.Connection[Any], schema: str, root: str) -> list[Any]:
    rows = conn.execute(
        f"SELECT task, state, attempts, result, error ->> 'type' FROM \"{schema}\".jobs "
        "WHERE root_id = %s",
        (root,),
    ).fetchall()
    return sorted(rows, key=repr)


def _jobs_run_eagerly(result: Any) -> list[Any]:
    records = _leaf(result)._run.records.values()
    rows = [
        (
            r.row["task"],
            r.row["state"],
            r.row["attempts"],
            r.row["result"],
            (r.row["error"] or {}).get("type"),
        )
        for r in records
    ]
    return sorted(rows, key=repr)


@pytest.mark.parametrize("name", list(CANVASES))
def test_eager_mode_runs_a_canvas_as_a_worker_does(
    name: str, dsn: str, schema: str, conn: psycopg.Connection[Any]
) -> None:
    app = JobQueue(dsn, schema=schema, auto_migrate=False)
    try:
        tasks = _tasks(app)
        app.conf.eager = True
        eager = CANVASES[name](tasks).apply_async()
        app.conf.eager = False
        stored = CANVASES[name](tasks).apply_async()
        drained = TestWorker(app).drain(timeout=60)
        assert drained.outcomes, "the worker ran nothing"
        root = _leaf(stored)._fetch()["root_id"]
        by_worker = _jobs_by_database(conn, schema, str(root))
        assert by_worker, "no job of the canvas in the database"
        assert _jobs_run_eagerly(eager) == by_worker
        assert [r.state for r in _leaves(eager)] == [r.state for r in _leaves(stored)]
        if stored.successful():
            assert eager.get() == stored.get(timeout=5)
        else:
            errors = [type(r.result) for r in _leaves(stored) if r.failed()]
            assert [type(r.result) for r in _leaves(eager) if r.failed()] == errors
    finally:
        app.close()


# -- the reset between tests ------------------------------------------------------------

_KEPT = {"alembic_version", "schema_compat", "history_plan", "history_partitions"}


def _table_rows(conn: psycopg.Connection[Any], schema: str) -> dict[str, int]:
    tables = conn.execute(
        "SELECT c.relname FROM pg_class AS c WHERE c.relnamespace = %s::regnamespace "
        "AND c.relkind IN ('r', 'p') AND NOT c.relispartition",
        (f'"{schema}"',),
    ).fetchall()
    counts = {}
    for (name,) in tables:
        row = conn.execute(f'SELECT count(*) FROM "{schema}"."{name}"').fetchone()
        counts[name] = int(row[0]) if row else 0
    return counts


def test_reset_leaves_the_tables_as_a_fresh_migration_does(
    dsn: str, schema: str, conn: psycopg.Connection[Any]
) -> None:
    """After jobs of every kind ran (and failed, retried, waited, counted...),
    every table the test could have written is empty again, and the schema's
    bookkeeping is as a fresh migration (the rig's ``schema``) leaves it."""
    from jobqueue.testing import TestDatabase

    fresh = _table_rows(conn, schema)
    database = TestDatabase(dsn)
    app = database.attach(JobQueue())
    try:
        t = _tasks(app)

        @app.task(name="limited", rate_limit="100/s", concurrency_limit=2, unique=True)
        def limited(x: int) -> int:
            return x

        chord([t.add.s(1, 1), t.boom.s()], t.tsum.s())()
        (t.add.s(1, 2) | t.add.s(3))()
        t.flaky.delay(1)
        t.add.apply_async((1, 1), countdown=3600)
        limited.delay(1)
        app.enqueue_many(t.add, [(i, i) for i in range(5)])
        app.control.pause_queue("paused")
        TestWorker(app).drain(timeout=60)
        used = _table_rows(conn, database.schema)
        assert sum(n for name, n in used.items() if name not in _KEPT) > 20, used
        database.reset()
        after = _table_rows(conn, database.schema)
    finally:
        database.close()
    assert after.keys() == fresh.keys()
    assert {k: n for k, n in after.items() if k not in _KEPT} == dict.fromkeys(
        set(after) - _KEPT, 0
    )
    assert {k: fresh[k] for k in _KEPT if k != "history_partitions"} == {
        k: after[k] for k in _KEPT if k != "history_partitions"
    }
    with psycopg.connect(dsn, autocommit=True) as c:
        gone = c.execute("SELECT to_regnamespace(%s)", (database.schema,)).fetchone()
        assert gone == (None,), "close() left the session's schema"
