"""Atomic tasks: ``@app.task(atomic=True)`` runs in a transaction that commits
the task's own writes and its job's completion together.

The task reaches the transaction through ``self.connection`` (psycopg) or
``self.session`` (a SQLAlchemy ``Session`` over the same connection). Either
both the writes and the job's SUCCESS commit, or neither does: a worker
killed mid-task leaves no writes and its job is retried; a commit that went
through is never followed by a second run. The worker side (locking the
lease, completing inside the transaction, an unanswered commit) is
``worker/atomic.py``; this module is what the task sees, shared with eager
runs (``apply()``), where the transaction simply commits when the task
succeeds.

Each thread (a pool's slot, a process-pool child) keeps one connection of its
own for its atomic tasks, opened at its first one: a slot running atomic
tasks holds one more connection to the server.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any

import psycopg

from .exceptions import AtomicError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection as SAConnection
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session

    from .app import JobQueue


_COMMIT = (
    "an atomic task's transaction commits with its job when the task returns; "
    "it cannot be committed or rolled back by the task (raise to roll it back, "
    "or use a savepoint: `with self.connection.transaction(): ...`)"
)


class Transaction:
    """An atomic task's transaction: its connection, and a SQLAlchemy session
    over it made on first use."""

    def __init__(self, app: JobQueue, conn: psycopg.Connection[Any]) -> None:
        self.app = app
        self.connection = conn
        self._session: Session | None = None
        self._sa_connection: SAConnection | None = None

    @property
    def session(self) -> Session:
        if self._session is None:
            from sqlalchemy.orm import Session

            _current.conn = self.connection
            try:
                self._sa_connection = _engine(self.app).connect()
            finally:
                _current.conn = None
            self._sa_connection.begin()  # no SQL: the transaction is already open
            # Its commit() releases a savepoint, its rollback() rolls back to it:
            # the transaction itself is the job's.
            self._session = Session(
                bind=self._sa_connection, join_transaction_mode="create_savepoint"
            )
        return self._session

    def finish(self) -> None:
        """The task succeeded: what its session holds is written (its pending
        changes flushed, its savepoint released) before the job completes."""
        if self._session is not None and self._session.is_active:
            self._session.commit()

    def ensure_open(self) -> None:
        """The task did not end the transaction itself (``COMMIT`` as SQL)."""
        if self.connection.info.transaction_status != psycopg.pq.TransactionStatus.INTRANS:
            raise AtomicError(
                f"the task ended its atomic transaction itself ({_COMMIT}); "
                "its writes may have been committed without its job"
            )

    def discard(self) -> None:
        """The task did not succeed: its session let go of its savepoints while
        the transaction is still there to roll back to them (the transaction
        rolls back anyway: a failure here changes nothing)."""
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):
                session.close()

    def close(self) -> None:
        """After the transaction ended: the session and its connection dropped."""
        session, sa_connection = self._session, self._sa_connection
        self._session = self._sa_connection = None
        if session is not None:
            session.close()
        if sa_connection is not None:
            sa_connection.close()  # its rollback is a no-op now (_Borrowed)


# -- the connection of each thread ------------------------------------------------------

_slots = threading.local()


def slot_connection(app: JobQueue) -> psycopg.Connection[Any]:
    """This thread's connection for atomic tasks (one per app), reopened if it broke."""
    conns: dict[int, psycopg.Connection[Any]] = _slots.__dict__.setdefault("conns", {})
    conn = conns.get(id(app))
    if conn is None or conn.closed or conn.broken:
        conn = conns[id(app)] = app.db.task_connect("jobqueue-atomic")
    return conn


def drop_slot_connection(app: JobQueue) -> None:
    """Close this thread's connection (after an error left it in doubt)."""
    conns: dict[int, psycopg.Connection[Any]] = _slots.__dict__.get("conns", {})
    conn = conns.pop(id(app), None)
    if conn is not None:
        conn.close()


# -- SQLAlchemy over the transaction's connection ----------------------------------------

_current = threading.local()  # the connection an engine.connect() in this thread borrows


class _Borrowed:
    """The transaction's psycopg connection as SQLAlchemy's pool sees it:
    closing it does nothing (it is the slot's), and committing or rolling it
    back inside the transaction is refused (the job's completion must share
    its commit)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        object.__setattr__(self, "_conn", conn)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._conn, name, value)

    def close(self) -> None:
        pass

    def commit(self) -> None:
        raise AtomicError(_COMMIT)

    def rollback(self) -> None:
        if self._conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            raise AtomicError(_COMMIT)


_engines: dict[int, Engine] = {}
_engines_lock = threading.Lock()


def _engine(app: JobQueue) -> Engine:
    """One SQLAlchemy engine per app and process, whose connections are the
    calling thread's atomic transaction. Its first connection is a real one
    of its own (SQLAlchemy reads the server's settings on it, then rolls it
    back: not something to do inside the transaction)."""
    engine = _engines.get(id(app))
    if engine is not None:
        return engine
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    def creator() -> Any:
        conn = getattr(_current, "conn", None)
        return app.db.connect(autocommit=True) if conn is None else _Borrowed(conn)

    with _engines_lock:
        engine = _engines.get(id(app))
        if engine is None:
            engine = sqlalchemy.create_engine(
                "postgresql+psycopg://",
                creator=creator,
                poolclass=NullPool,
                pool_reset_on_return=None,
            )
            borrowed, _current.conn = getattr(_current, "conn", None), None
            try:
                engine.connect().close()  # the dialect's first connection, a real one
            finally:
                _current.conn = borrowed
            _engines[id(app)] = engine
    return engine
