"""jobqueue's pytest plugin: an app on a fresh schema per test, a worker that
drains the queues, and assertions over the real tables (docs/testing.md).

Registered with pytest by the entry point ``jobqueue.testing`` (``pytest11``);
where plugins are not loaded automatically (``PYTEST_DISABLE_PLUGIN_AUTOLOAD``),
``-p jobqueue.testing`` or ``pytest_plugins = ["jobqueue.testing"]``. Loading
it only declares its fixtures and ini options: nothing connects, starts or
migrates until a test asks for a ``jobqueue_*`` fixture (``-p
no:jobqueue.testing`` turns it off).

Fixtures:

- ``jobqueue_app``: the app under test on this session's schema, emptied
  before the test; its settings as they were after it;
- ``jobqueue_worker``: ``.drain()`` runs the due jobs in a real worker in this
  process until none is left (``TestWorker``);
- ``jobqueue_eager_app``: the app with ``conf.eager`` on, for tests that need
  no database at all;
- ``jobqueue_session_app``: which app: the ini option ``jobqueue_app``
  (``proj.tasks:app``), else a new ``JobQueue()``; override it to build your own;
- ``jobqueue_dsn``, ``jobqueue_database``: the server (``$JOBQUEUE_TEST_DSN``,
  the ini option ``jobqueue_dsn``, else an embedded server) and the session's
  schema (``TestDatabase``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from .assertions import assert_enqueued, assert_not_enqueued, enqueued_jobs
from .database import TestDatabase, resolve_dsn
from .worker import Drained, TestWorker

if TYPE_CHECKING:
    from ..app import JobQueue

__all__ = [
    "Drained",
    "TestDatabase",
    "TestWorker",
    "assert_enqueued",
    "assert_not_enqueued",
    "enqueued_jobs",
    "jobqueue_app",
    "jobqueue_database",
    "jobqueue_dsn",
    "jobqueue_eager_app",
    "jobqueue_session_app",
    "jobqueue_worker",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "jobqueue_app",
        "jobqueue.testing: the app under test, as package.module:attribute "
        "(default: a new JobQueue())",
    )
    parser.addini(
        "jobqueue_dsn",
        "jobqueue.testing: the PostgreSQL server to test against, after "
        "$JOBQUEUE_TEST_DSN (default: an embedded server in .jobqueue/test)",
    )


@pytest.fixture(scope="session")
def jobqueue_dsn(pytestconfig: pytest.Config) -> Iterator[str]:
    """The server the session's schema lives on."""
    from .. import embedded

    dsn, data_dir = resolve_dsn(pytestconfig.getini("jobqueue_dsn") or None, pytestconfig.rootpath)
    yield dsn
    if data_dir is not None:
        embedded.stop(data_dir)


@pytest.fixture(scope="session")
def jobqueue_database(jobqueue_dsn: str) -> Iterator[TestDatabase]:
    """This session's schema, migrated once, dropped at the end."""
    database = TestDatabase(jobqueue_dsn)
    yield database
    database.close()


@pytest.fixture(scope="session")
def jobqueue_session_app(pytestconfig: pytest.Config) -> JobQueue:
    """The app under test (override this fixture to build your own)."""
    from ..app import JobQueue
    from ..loader import load_app

    spec = pytestconfig.getini("jobqueue_app")
    return load_app(spec) if spec else JobQueue()


@pytest.fixture
def jobqueue_app(
    jobqueue_session_app: JobQueue, jobqueue_database: TestDatabase
) -> Iterator[JobQueue]:
    """The app on the session's schema, every table empty, eager mode off."""
    app = jobqueue_database.attach(jobqueue_session_app)
    jobqueue_database.reset()
    with _restored(app):
        app.conf.eager = False  # for this test: a conftest may turn it on for the others
        yield app


@pytest.fixture
def jobqueue_worker(jobqueue_app: JobQueue) -> Iterator[TestWorker]:
    """``jobqueue_worker.drain()``: run what is due, in a real worker, until none is left."""
    worker = TestWorker(jobqueue_app)
    yield worker
    worker.close()


@pytest.fixture
def jobqueue_eager_app(jobqueue_session_app: JobQueue) -> Iterator[JobQueue]:
    """The app with ``conf.eager`` on: jobs run at the call, with no database."""
    app = jobqueue_session_app
    with _restored(app):
        app.conf.eager = True
        yield app


class _restored:
    """The app's settings as they were, after the test. Not its tasks: a module
    a test imports registers its tasks once, and later tests need them."""

    def __init__(self, app: JobQueue) -> None:
        self.app = app

    def __enter__(self) -> None:
        # A shallow copy of each setting, one level down: a test that fills
        # beat_schedule or task_routes in place leaves the next one unchanged.
        self.conf = {k: copy.copy(v) for k, v in vars(self.app.conf).items()}

    def __exit__(self, *exc: Any) -> None:
        vars(self.app.conf).update(self.conf)
