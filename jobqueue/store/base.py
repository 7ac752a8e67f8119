"""The base of the statements' classes (``jobqueue.store``): a statement by
name, on the app's connections or on one the caller owns, and the two forms
of the statements that report events.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import psycopg

from ..db import Database, Row
from ..sql import PLAIN_CONSTANTS

Params = Mapping[str, Any]

# The optional values job_insert_plain has as NULL (insert_statement).
_NULL_IN_PLAIN = tuple(name for name, value in PLAIN_CONSTANTS.items() if value == "NULL")
VACUUMED = ("job_queue", "job_lease", "jobs")  # the tables a worker keeps clean
LISTENED = "JQ004"  # events_listening(): a statement without events met a listener


class StoreBase:
    def __init__(self, db: Database) -> None:
        self.db = db
        # The claim and the completion come in two forms (events_end in
        # queries.sql): without events, refusing (JQ004, having changed
        # nothing) while a listener is there, and <name>_events. Which one a
        # statement needed last time: a hint shared by threads, since either
        # form is correct and a wrong guess costs one refused statement.
        self._reporting: dict[str, bool] = {}

    @property
    def sql(self) -> dict[str, str]:
        return self.db.sql

    def _on(self, conn: psycopg.Connection[Any], name: str, params: Params) -> list[Row]:
        cursor = conn.execute(self.sql[name], params)
        return cursor.fetchall() if cursor.description is not None else []

    def _with_events(
        self, name: str, run: Callable[[str], list[Row]], rows_changed: Callable[[list[Row]], bool]
    ) -> list[Row]:
        """``run`` a statement of two forms in the one that costs nothing
        while nobody listens, or in ``<name>_events`` while someone does. The
        rows of the latter end with the NOTIFYs sent, NULL when nobody
        listened: the next run goes back to the form without events."""
        events = self._reporting.get(name, False)
        try:
            rows = run(f"{name}_events" if events else name)
        except psycopg.Error as exc:
            if events or exc.sqlstate != LISTENED:
                raise
            events = self._reporting[name] = True  # a listener came: this run is redone
            rows = run(f"{name}_events")
        if events and rows_changed(rows) and rows[0][-1] is None:
            self._reporting[name] = False
        return rows

    def _joined(self, connection: Any) -> Any:
        """The caller's connection, else the transaction the app is set to join
        when none is named (``Database.ambient``), else None: the pool. Only
        writes a caller would want undone with their transaction join it."""
        if connection is None and self.db.ambient is not None:
            return self.db.ambient()
        return connection


def schema_version(conn: psycopg.Connection[Any], sql: Mapping[str, str]) -> str | None:
    """The schema's alembic revision (migrate.current_revision)."""
    row = conn.execute(sql["schema_version"]).fetchone()
    return None if row is None else str(row[0])


def refused_dependencies(exc: psycopg.Error) -> Exception:
    """What depend() refuses (a dependency that does not exist: JQ002; the job
    itself, a bad policy: 22023) as the ValueError a caller expects; any other
    error as it is."""
    if exc.sqlstate in ("JQ002", "22023") and exc.diag.message_primary:
        return ValueError(exc.diag.message_primary.removeprefix("jobqueue: "))
    return exc


def insert_statement(params: Params) -> str:
    """The single enqueue for a job we made the id of: ``job_insert_plain``
    when none of its optional values is set (``PLAIN_CONSTANTS``), else
    ``job_insert``."""
    if params["countdown"]:
        return "job_insert"
    for name in _NULL_IN_PLAIN:
        if params[name] is not None:
            return "job_insert"
    return "job_insert_plain"
