"""A caller's own connection, joined: ``connection=`` may be a psycopg 3
connection, a SQLAlchemy Connection or ORM Session over psycopg, or a Django
connection; statements run in whatever transaction it has open, and nothing
here commits. Recognised by their modules, without importing SQLAlchemy or
Django."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg

if TYPE_CHECKING:
    from .db import Params, Row


def psycopg_connection(connection: Any) -> psycopg.Connection[Any] | None:
    """The psycopg 3 connection behind a caller's connection, if there is one."""
    if isinstance(connection, psycopg.Connection):
        return connection
    module = type(connection).__module__
    if module.startswith("django."):
        return django_driver(connection)
    if module.startswith("sqlalchemy.") and not module.startswith("sqlalchemy.ext.asyncio"):
        core = (
            connection.connection()
            if hasattr(connection, "commit") and not hasattr(connection, "exec_driver_sql")
            else connection
        )
        driver = getattr(core.connection, "driver_connection", None)
        if isinstance(driver, psycopg.Connection):
            return driver
    return None


def django_driver(connection: Any) -> psycopg.Connection[Any]:
    """The psycopg 3 connection a Django connection (``django.db.connection``,
    ``connections[alias]``) wraps, connecting it if it is not yet: statements
    sent on it are in whatever transaction Django has open (``atomic()``), or
    commit at once in its autocommit mode. Recognised without importing Django."""
    vendor = getattr(connection, "vendor", None)
    if vendor != "postgresql":
        raise TypeError(
            f"connection= is a Django connection to {vendor or 'an unknown database'!r}, "
            f"not PostgreSQL (alias {getattr(connection, 'alias', '?')!r})"
        )
    connection.ensure_connection()
    driver = connection.connection
    if not isinstance(driver, psycopg.Connection):
        raise TypeError(
            "connection= is a Django connection on "
            f"{type(driver).__module__.partition('.')[0]}; jobqueue joins only psycopg 3 "
            "connections (Django 4.2+ uses psycopg 3 whenever it is installed)"
        )
    return driver


def fetch(cursor: Any) -> list[Row]:
    """A psycopg cursor's rows ([] for a statement that returns none)."""
    return list(cursor.fetchall()) if cursor.description is not None else []


def _fetch_sqlalchemy(result: Any) -> list[Row]:
    return [tuple(row) for row in result.fetchall()] if result.returns_rows else []


def run_on(connection: Any, statement: str, params: Params) -> list[Row]:
    """Execute on a caller-owned connection without committing anything.

    Accepts a psycopg ``Connection``, a SQLAlchemy ``Connection`` or an ORM
    ``Session``; SQLAlchemy objects are recognised without importing it.
    """
    if isinstance(connection, psycopg.Connection):
        return fetch(connection.execute(statement, params))
    module = type(connection).__module__
    if module.startswith("django."):
        return fetch(django_driver(connection).execute(statement, params))
    if module.startswith("sqlalchemy.") and not module.startswith("sqlalchemy.ext.asyncio"):
        if hasattr(connection, "exec_driver_sql"):  # Core Connection
            return _fetch_sqlalchemy(connection.exec_driver_sql(statement, dict(params)))
        if hasattr(connection, "connection") and hasattr(connection, "commit"):  # ORM Session
            core = connection.connection()
            return _fetch_sqlalchemy(core.exec_driver_sql(statement, dict(params)))
    hint = ""
    if isinstance(connection, psycopg.AsyncConnection) or module.startswith(
        "sqlalchemy.ext.asyncio"
    ):
        hint = " (an async connection goes to the async API: await task.aapply_async(...))"
    raise TypeError(
        "connection= must be a psycopg Connection, a SQLAlchemy Connection or ORM "
        "Session, or a Django connection, got "
        f"{type(connection).__module__}.{type(connection).__name__}{hint}"
    )
