"""The test database: one schema per pytest session, as fresh for every test.

Migrating a schema costs about 180 ms, and creating a database from a
migrated template about 220 ms (both measured on PostgreSQL 15, 2 cores):
per test, either would dominate a suite of short tests. So the session
migrates one schema of its own (``jobqueue_test_<pid>_<random>``: parallel
sessions, xdist workers among them, never share one), and before each test
``reset()`` empties its tables in one statement (``testing_reset`` in
sql/queries.sql), about 1 ms. The schema is dropped when the session ends.

An app is pointed at it by ``attach`` (once per session, its settings and
connections restored at the end), whatever it was configured with.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from ..sql import queries

if TYPE_CHECKING:
    from ..app import JobQueue

#: Where the DSN comes from, before the ini option ``jobqueue_dsn``.
DSN_ENV = "JOBQUEUE_TEST_DSN"

#: What ``attach`` changes on an app, restored at the end of the session.
_REPOINTED = ("dsn", "schema", "embedded", "auto_migrate")


def session_schema() -> str:
    """A schema name of this session's own (validate_schema's rules)."""
    return f"jobqueue_test_{os.getpid()}_{secrets.token_hex(3)}"


class TestDatabase:
    """One migrated schema for a session; ``reset()`` before each test."""

    __test__ = False  # not a test class, for pytest's collector

    def __init__(self, dsn: str) -> None:
        from ..migrate import upgrade

        self.dsn = dsn
        # Always a new schema of its own: reset() empties every table of it.
        self.schema = session_schema()
        self._sql = queries(self.schema)
        upgrade(dsn, self.schema)
        self._conn: psycopg.Connection[Any] | None = psycopg.connect(dsn, autocommit=True)
        self._attached: dict[int, tuple[JobQueue, dict[str, Any], tuple[Any, ...]]] = {}

    def reset(self) -> None:
        """Every table as a fresh migration leaves it (``testing_reset``)."""
        assert self._conn is not None, "the test database is closed"
        self._conn.execute(self._sql["testing_reset"])

    def attach(self, app: JobQueue) -> JobQueue:
        """Point ``app`` at this schema (once; ``close`` restores it). Its
        pools and result listener are closed first: they belong to its old
        database."""
        from ..db import Database
        from ..result import ResultWaiter
        from ..store import Store

        if id(app) in self._attached:
            return app
        before = {name: getattr(app.conf, name) for name in _REPOINTED}
        parts = (app.db, app.store, app.results)
        app.close()
        app.conf.dsn, app.conf.schema = self.dsn, self.schema
        app.conf.embedded, app.conf.auto_migrate = False, False
        app.conf.validate()
        # New connections' owners, for the new settings (the old ones cache
        # their DSN); Control and Events read these from the app when used.
        app.db = Database(app.conf)
        app.store = Store(app.db)
        app.results = ResultWaiter(app)
        self._attached[id(app)] = (app, before, parts)
        return app

    def close(self) -> None:
        """Give the attached apps their settings back, drop the schema."""
        for app, before, (db, store, results) in self._attached.values():
            app.close()
            for name, value in before.items():
                setattr(app.conf, name, value)
            app.db, app.store, app.results = db, store, results
        self._attached.clear()
        if self._conn is not None:
            with self._conn:
                self._conn.execute(self._sql["testing_schema_drop"])
            self._conn = None


def resolve_dsn(ini_value: str | None, root: Path) -> tuple[str, Path | None]:
    """The server to test against: ``$JOBQUEUE_TEST_DSN``, else the ini option
    ``jobqueue_dsn``, else an embedded server under ``<rootdir>/.jobqueue/test``
    (its data directory is returned too: the session stops it at the end)."""
    dsn = os.environ.get(DSN_ENV) or ini_value
    if dsn:
        return dsn, None
    from .. import embedded

    data_dir = root / ".jobqueue" / "test"
    return embedded.start(data_dir), data_dir
