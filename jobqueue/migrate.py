"""Schema migrations: alembic, run programmatically against one schema.

The scripts live in the repository's top-level ``migrations/`` and ship in the
wheel as ``jobqueue/migrations``. Runs on one schema are serialised by an
advisory lock so several processes starting at once (say, against the
embedded server) migrate exactly once.
"""

from __future__ import annotations

import functools
import re
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from .exceptions import ConfigurationError
from .redact import redact
from .sql import queries, validate_schema
from .store import schema_version

# alembic and SQLAlchemy are imported only to migrate: a worker or producer
# whose schema is up to date never loads them (they were 15 MB of a worker's
# 63 MB resident memory).
if TYPE_CHECKING:
    import sqlalchemy as sa
    from alembic.config import Config


def _lock_key(schema: str) -> int:
    """Per schema, so tenants sharing a database migrate independently."""
    return zlib.crc32(f"jobqueue:{schema}:migrate".encode())


def script_location() -> Path:
    package = Path(__file__).resolve().parent
    for candidate in (package / "migrations", package.parent / "migrations"):
        if (candidate / "env.py").exists():
            return candidate
    raise FileNotFoundError("jobqueue migrations not found (expected jobqueue/migrations)")


def _config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(script_location()))
    return config


_REVISION = re.compile(r"^revision\s*=\s*[\"']([^\"']+)[\"']", re.M)
_DOWN = re.compile(r"^down_revision\s*=\s*(?:None|[\"']([^\"']+)[\"'])", re.M)


@functools.cache
def head_revision() -> str:
    """The newest revision this code ships: the schema it was written for. Read
    once per process from the scripts' text (``revision`` and
    ``down_revision``: the one no other script follows), not through alembic,
    which a worker then never loads; tests/unit/test_migrate_head.py checks it
    against alembic's own answer. The scripts loaded with the code cannot
    change under it."""
    revisions: set[str] = set()
    followed: set[str] = set()
    for path in (script_location() / "versions").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        revision, down = _REVISION.search(text), _DOWN.search(text)
        if revision is None or down is None:
            continue
        revisions.add(revision[1])
        if down[1]:
            followed.add(down[1])
    heads = revisions - followed
    if len(heads) != 1:
        raise RuntimeError(f"jobqueue's migrations should have one head, found {sorted(heads)}")
    return heads.pop()


def engine(dsn: str) -> sa.Engine:
    """A SQLAlchemy engine over psycopg for any libpq DSN (URI or key=value)."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    return sa.create_engine(
        "postgresql+psycopg://", creator=lambda: psycopg.connect(dsn), poolclass=NullPool
    )


@contextmanager
def _locked(dsn: str, schema: str) -> Iterator[tuple[Config, sa.Connection]]:
    import sqlalchemy as sa

    validate_schema(schema)
    try:
        connection = engine(dsn).connect()
    except sa.exc.OperationalError as exc:
        raise ConfigurationError(
            f"cannot connect to PostgreSQL at {redact(dsn)}: {exc.orig}"
        ) from exc.orig
    with connection as conn:
        conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _lock_key(schema)})
        conn.commit()
        try:
            config = _config()
            config.attributes["connection"] = conn
            config.attributes["schema"] = schema
            yield config, conn
            conn.commit()
        finally:
            conn.rollback()
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _lock_key(schema)})
            conn.commit()


def upgrade(dsn: str, schema: str, revision: str = "head") -> None:
    if revision == "head" and current_revision(dsn, schema) == head_revision():
        return  # up to date: one read, and alembic is not even loaded
    import sqlalchemy as sa
    from alembic import command

    with _locked(dsn, schema) as (config, conn):
        relations = _upgrade_locks(conn, schema, revision)
        if relations:
            conn.execute(sa.text(_LOCK_LOOP.format(relations=relations)))
        command.upgrade(config, revision)


# The tables a revision alters that claims and enqueues hold while they lock
# others (a revision's LOCK_FIRST): locked before any step of the upgrade
# runs, all at once or not at all, each try waiting at most 50 ms. Locked
# later, after an earlier step of the same upgrade had locked `jobs` (0015
# does), a claim of the release before that held job_queue and waited for
# `jobs` deadlocked with the upgrade.
_LOCK_LOOP = """
DO $$
BEGIN
    LOOP
        BEGIN
            PERFORM set_config('lock_timeout', '50ms', true);
            LOCK TABLE {relations} IN ACCESS EXCLUSIVE MODE;
            EXIT;
        EXCEPTION WHEN lock_not_available THEN
            NULL;  -- everything this try locked is released: try again
        END;
    END LOOP;
    PERFORM set_config('lock_timeout', '0', true);
END
$$
"""


def _upgrade_locks(conn: sa.Connection, schema: str, target: str) -> str:
    """The relations the revisions between the schema's and ``target`` want
    locked first (their LOCK_FIRST), quoted and comma-separated; "" for none."""
    import sqlalchemy as sa
    from alembic.script import ScriptDirectory

    current = None
    if conn.execute(
        sa.text("SELECT to_regclass(:name) IS NOT NULL"), {"name": f'"{schema}".alembic_version'}
    ).scalar():
        current = conn.execute(
            sa.text(f'SELECT version_num FROM "{schema}".alembic_version')  # validated schema
        ).scalar()
    if current is None:
        return ""  # a new schema: nobody uses it yet
    scripts = ScriptDirectory.from_config(_config())
    names: list[str] = []
    for script in scripts.iterate_revisions(target, current):
        for name in getattr(script.module, "LOCK_FIRST", ()):
            if name not in names:
                names.append(name)
    return ", ".join(f'"{schema}".{name}' for name in names)


# What a downgrade locks before any revision's step runs, in the order readers
# lock them (a view's lock takes the tables it reads): a downgrade that copies
# rows out of a table and then alters it (0007's) lost every job committed
# between its two statements. Views first: with job_queue locked alone first,
# a reader of all_jobs held the view while it waited for job_queue, and
# deadlocked with DROP VIEW. Released migrations are never edited, so the lock
# is taken here, for every downgrade, in the transaction all the steps share.
# 0012's downgrade replaces job_history and queue_stats and copies job_attempts.
_DOWNGRADE_LOCKS = (
    "task_stats",
    "workflow_jobs",
    "all_jobs",
    "job_history",
    "queue_stats",
    "job_queue",
    "jobs",
    "job_attempts",
)


def downgrade(dsn: str, schema: str, revision: str) -> None:
    import sqlalchemy as sa
    from alembic import command

    with _locked(dsn, schema) as (config, conn):
        present = [
            name
            for name in _DOWNGRADE_LOCKS
            if conn.execute(
                sa.text("SELECT to_regclass(:name) IS NOT NULL"), {"name": f'"{schema}".{name}'}
            ).scalar()
        ]
        if present:
            relations = ", ".join(f'"{schema}".{name}' for name in present)  # validated schema
            conn.execute(sa.text(f"LOCK TABLE {relations} IN ACCESS EXCLUSIVE MODE"))
        command.downgrade(config, revision)


def current_revision(dsn: str, schema: str) -> str | None:
    validate_schema(schema)
    with psycopg.connect(dsn, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (f'"{schema}".alembic_version',)
        ).fetchone()
        if not exists or not exists[0]:
            return None
        return schema_version(conn, queries(schema))
