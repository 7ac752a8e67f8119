"""Connections: DSN resolution, the producer pool, and running our statements
on a connection the caller owns (psycopg, SQLAlchemy Core or ORM Session).

Every statement is sent with bound parameters; only our own named SQL text is
ever executed.
"""

from __future__ import annotations

import logging
import os
import shlex
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool

from . import direct, embedded
from .config import DSN_ENV, Settings
from .dsn import normalize
from .exceptions import ConfigurationError, DuplicateJobError, SchemaNotReadyError
from .joined import fetch, run_on
from .redact import redact
from .sql import queries

log = logging.getLogger(__name__)

Params = Mapping[str, Any]
Row = tuple[Any, ...]
_T = TypeVar("_T")

# A connection attempt the server refused for reasons that do not pass by
# themselves: retrying would only delay the error.
_PERMANENT = (
    "password authentication failed",
    "no pg_hba.conf entry",
    "does not exist",
    "authentication method",
    "invalid dsn",
    "invalid connection option",
    "invalid integer value",
)


def _operational(error: BaseException) -> bool:
    """A connection-level failure, from psycopg or from SQLAlchemy over it (a
    migration's); SQLAlchemy's class is looked up only if it was loaded (it
    is imported to migrate, not by a worker whose schema is up to date)."""
    if isinstance(error, psycopg.OperationalError):
        return True
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
    return sqlalchemy_exc is not None and isinstance(error, sqlalchemy_exc.OperationalError)


def _unreachable(exc: BaseException) -> bool:
    """Whether a failed connection attempt may succeed later (the server down,
    starting, shutting down, or out of connection slots)."""
    if not isinstance(exc, psycopg.OperationalError):
        return False
    text = str(exc).lower()
    return transient(exc) and not any(marker in text for marker in _PERMANENT)


# What retrying can cure: the connection (class 08 and the server shutting
# down or starting up), the server's resources (class 53: too many
# connections, disk full, out of memory), and losing a race with another
# transaction. psycopg files many other errors under OperationalError too
# (54000 "string too long" among them): retrying those repeats the same refusal
# forever, so they are the statement's own failure.
_TRANSIENT_STATES = frozenset({"57P01", "57P02", "57P03", "40001", "40P01", "55P03"})


def transient(exc: BaseException) -> bool:
    """Whether the statement that raised ``exc`` may succeed if run again later."""
    if not isinstance(exc, psycopg.Error):
        return False
    state = exc.sqlstate
    if state is None:  # raised by the client: the connection broke or could not be made
        return isinstance(exc, psycopg.OperationalError)
    return state[:2] in ("08", "53") or state in _TRANSIENT_STATES


class Database:
    """Owns the DSN, the producer pool and schema readiness for one app."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._dsn: str | None = None
        self._pool: ConnectionPool | None = None
        # Pooled connections set aside for direct statements (single enqueues):
        # from 4 threads, taking each from psycopg_pool and giving it back cost
        # about a tenth of the enqueue rate. list.pop/append are atomic.
        self._lane: list[psycopg.Connection[Any]] = []
        self._ready = False
        # Set at the first connection (see _detect_pooler).
        self.pooler: str | None = None
        # A worker process: the pool only serves its tasks (see for_worker).
        self._worker = False
        self._abortive_close = False
        #: The transaction an enqueue joins when it names no connection: a
        #: function returning the caller's open connection, or None for the
        #: pool (jobqueue.contrib.django: Django's, inside ``atomic()``).
        self.ambient: Callable[[], Any] | None = None

    @property
    def schema(self) -> str:
        return self.settings.schema

    @property
    def sql(self) -> dict[str, str]:
        return queries(self.settings.schema)

    def dsn(self) -> str:
        """The DSN to use, starting the embedded server if none is configured."""
        if self._dsn is None:
            with self._lock:
                if self._dsn is None:
                    self.settings.validate()
                    configured = self.settings.resolved_dsn()
                    if configured:
                        if self.settings.dsn:
                            source = "app.conf.dsn"
                        elif configured == os.environ.get(DSN_ENV):
                            source = f"${DSN_ENV}"
                        else:  # an integration's (Django's DATABASES)
                            source = "the app's DSN"
                        self._dsn = normalize(configured, source)
                    elif not self.settings.embedded:
                        raise ConfigurationError(
                            "no DSN configured, and the embedded PostgreSQL fallback is off "
                            "(app.conf.embedded is False; $JOBQUEUE_EMBEDDED=0 turns it off): "
                            'pass one to JobQueue("postgresql://user:password@host/dbname"), '
                            "set $JOBQUEUE_DSN, or on the command line pass --dsn"
                        )
                    else:
                        self._dsn = embedded.start(self.settings.data_dir)
                        if self.settings.auto_migrate is None:
                            self.settings.auto_migrate = True
        return self._dsn

    def connect(self, *, autocommit: bool = True, **kwargs: Any) -> psycopg.Connection[Row]:
        """A new dedicated connection (workers, the beat)."""
        self.ensure_schema()
        return psycopg.connect(self.dsn(), autocommit=autocommit, **self._options(kwargs))

    def task_connect(self, application_name: str) -> psycopg.Connection[Row]:
        """A dedicated autocommit connection for a task's own work (an atomic
        task's transaction), set up as the tasks' pool sets up its own: in a
        worker, with its socket options (and reset when a fenced child dies)."""
        options: dict[str, Any] = {"application_name": application_name}
        if self._worker:
            options.update(self.worker_socket_options())
        conn = self.connect(autocommit=True, **options)
        if self._abortive_close:
            _abort_on_close(conn)
        return conn

    def listen_connect(self, **kwargs: Any) -> psycopg.Connection[Row] | None:
        """A connection that may LISTEN: the DSN itself unless it goes through a
        transaction pooler (where a LISTEN lands on a server session that
        moves on to other clients), else ``listen_dsn``; None: poll instead."""
        self.ensure_schema()
        if not self.transaction_pooled:
            return psycopg.connect(self.dsn(), autocommit=True, **kwargs)
        if self.settings.listen_dsn:
            listen_dsn = normalize(self.settings.listen_dsn, "app.conf.listen_dsn")
            return psycopg.connect(listen_dsn, autocommit=True, **kwargs)
        return None

    @property
    def transaction_pooled(self) -> bool:
        """Behind a transaction pooler: no session state may outlive a statement
        (no SET, no session advisory lock, no LISTEN, no prepared statement
        unless the pooler tracks them)."""
        self.ensure_schema()
        return self.pooler == "transaction"

    @property
    def session_state(self) -> bool:
        """Whether a connection keeps session settings and locks between statements."""
        return not self.transaction_pooled

    @property
    def prepared(self) -> bool:
        """Whether statements may be prepared on the server."""
        choice = self.settings.prepared_statements
        return (not self.transaction_pooled) if choice is None else choice

    def _options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        if not self.prepared:
            kwargs.setdefault("prepare_threshold", None)  # psycopg's automatic ones
        return kwargs

    def for_worker(self, *, killable: bool = False) -> None:
        """This process is a worker (or a pool child): its own work has
        connections of its own, so the pool only serves tasks that enqueue or
        report progress. Keep it small and let it empty when idle: every
        worker process's pool counts against the server's max_connections."""
        self._worker = True
        # A process-pool child is killed when its worker is fenced: what its
        # task was sending must die with it, not linger in the kernel and
        # reach the server once a partition heals (after the job's rescue).
        self._abortive_close = killable

    def worker_socket_options(self) -> dict[str, Any]:
        """For a worker's connections, its tasks' among them: a statement sent
        into a cut network must fail while the lease still holds, not be
        retransmitted for 15 minutes and land (or hang the session) long after
        the jobs were rescued. Unacknowledged data gives up after a third of
        the lease (at least a second), and keepalives find a dead peer about
        as fast. Without it, a killed child's last INSERT, left in its
        socket's send queue, reached the server when a partition healed,
        after its job had been rescued and run again (tests/system/
        test_partition.py). The DSN's own settings win; Unix sockets ignore
        these."""
        dsn = self.dsn()
        third = max(int(self.settings.lease_ttl * 1000 / 3), 1000)
        options: dict[str, Any] = {}
        if "tcp_user_timeout" not in dsn:
            options["tcp_user_timeout"] = third
        if "connect_timeout" not in dsn:  # a reconnect into a cut network gives up too
            options["connect_timeout"] = max(third // 1000, 2)
        if "keepalives_idle" not in dsn:
            options.update(
                keepalives=1,
                keepalives_idle=max(third // 2000, 1),
                keepalives_interval=max(third // 4000, 1),
                keepalives_count=3,
            )
        return options

    def pool(self) -> ConnectionPool:
        if self._pool is None:
            self.ensure_schema()
            with self._lock:
                if self._pool is None:
                    worker = self._worker
                    pool = ConnectionPool(
                        self.dsn(),
                        min_size=0 if worker else 1,
                        max_size=(
                            self.settings.task_pool_max_size
                            if worker
                            else self.settings.pool_max_size
                        ),
                        max_idle=60.0 if worker else 600.0,
                        kwargs=self._options(
                            {
                                "autocommit": True,
                                "application_name": "jobqueue-tasks" if worker else "jobqueue",
                                **(self.worker_socket_options() if worker else {}),
                            }
                        ),
                        open=False,
                        configure=_abort_on_close if self._abortive_close else None,
                        name="jobqueue-tasks" if worker else "jobqueue",
                    )
                    pool.open(wait=True, timeout=30)
                    self._pool = pool
        return self._pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._return_lane()
                self._pool.close()
                self._pool = None

    @property
    def _lane_size(self) -> int:
        """How many connections may be set aside: none in a worker, whose task
        pool is a couple of connections (set aside, they starved the tasks
        waiting on the pool: PoolTimeout at concurrency 4 and more)."""
        return 0 if self._worker else max(1, self.settings.pool_max_size // 2)

    def _pool_wanted(self) -> bool:
        """Whether a thread waits on the pool: a connection set aside then
        would leave it waiting while one sits idle."""
        pool = self._pool
        if pool is None:
            return False
        # The pool's queue of waiting clients, read directly: get_stats() builds
        # two dicts to report its length: taking a connection from the lane and
        # putting it back cost a delay() 2.3 us with it, 0.8 without (timeit,
        # benchmarks/enqueue_steps.py). The public call stands in should
        # a release of psycopg_pool rename it.
        waiting = getattr(pool, "_waiting", None)
        if waiting is None:
            return pool.get_stats().get("requests_waiting", 0) > 0
        return len(waiting) > 0

    def _return_lane(self) -> None:
        """Give the set-aside connections back (the pool discards broken ones)."""
        pool = self._pool
        while self._lane:
            try:
                conn = self._lane.pop()
            except IndexError:
                break
            if pool is not None:
                pool.putconn(conn)

    def direct_connection(self, timeout: float = 30.0) -> _SetAside:
        """A pooled connection from those set aside for direct statements
        (a context manager)."""
        return _SetAside(self, timeout)

    def ensure_schema(self) -> None:
        """Check (or, when auto_migrate is on, bring) the schema up to date, once;
        and see whether a connection pooler sits in between."""
        if self._ready:
            return
        dsn = self.dsn()
        from .migrate import current_revision, head_revision, upgrade

        def check() -> tuple[str | None, str | None]:
            if self.settings.auto_migrate:
                upgrade(dsn, self.schema)
                return None, None
            return current_revision(dsn, self.schema), head_revision()

        current, head = self.first_contact(check, dsn)
        if current != head:
            state = "has no jobqueue schema" if current is None else f"is at revision {current}"
            # A command that reaches this database: the app's own options if it
            # came from -A (plus what the CLI replaced), else the DSN itself.
            options = self.settings.cli_options
            advice = ""
            if not options:
                options = f"--dsn {shlex.quote(redact(dsn))}"
                if self.schema != Settings.schema:
                    options += f" --schema {self.schema}"
                advice = (
                    "; or `jobqueue -A module:app db upgrade`, which uses your app's own "
                    "DSN and schema"
                )
            if "***" in options:
                advice = " with the password in place of ***" + advice
            raise SchemaNotReadyError(
                f"database {redact(dsn)} {state} (schema {self.schema!r}); this jobqueue "
                f"needs revision {head}: run `jobqueue {options} db upgrade`{advice}"
            )
        self.pooler = self.first_contact(lambda: self._detect_pooler(dsn), dsn)
        self._ready = True

    def first_contact(self, attempt: Callable[[], _T], dsn: str | None = None) -> _T:
        """``attempt()``, retried while the server cannot be reached (down,
        starting, out of connection slots) for up to ``db_retry_seconds``:
        a worker or producer started with its database, or while it restarts,
        waits for it rather than failing at once."""
        dsn = dsn or self.dsn()
        deadline = time.monotonic() + self.settings.db_retry_seconds
        delay = 0.1
        while True:
            try:
                return attempt()
            except Exception as error:
                if not _operational(error):
                    raise
                exc = getattr(error, "orig", None) or error
                left = deadline - time.monotonic()
                if not _unreachable(exc) or left <= 0:
                    raise ConfigurationError(
                        f"cannot connect to PostgreSQL at {redact(dsn)}: {exc}"
                    ) from error
                log.warning(
                    "cannot reach PostgreSQL at %s (%s); retrying for up to %.0fs more "
                    "(db_retry_seconds)",
                    redact(dsn),
                    str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__,
                    left,
                )
                time.sleep(min(delay, max(left, 0.01)))
                delay = min(delay * 2, 2.0)

    def _detect_pooler(self, dsn: str) -> str:
        """What ``pooler`` says, or for "auto" what the first connection shows:
        a pooler answers the startup with a backend pid of its own making
        (PgBouncer does), so it differs from the server's pg_backend_pid()."""
        choice = self.settings.pooler
        if choice != "auto":
            found = choice
        else:
            with psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as conn:
                row = conn.execute("SELECT pg_backend_pid()").fetchone()
                pooled = row is not None and row[0] != conn.info.backend_pid
            found = "transaction" if pooled else "none"
            if pooled:
                log.info(
                    "connected to %s through a connection pooler (pooler='auto'; taken as "
                    "transaction mode, set app.conf.pooler='session' if it is not): no "
                    "session state, prepared statements %s, LISTEN %s",
                    redact(dsn),
                    "on" if self.settings.prepared_statements else "off",
                    "on listen_dsn" if self.settings.listen_dsn else "off (poll-only)",
                )
        return found

    # -- running our statements ------------------------------------------------

    def execute(
        self,
        name: str,
        params: Params,
        connection: Any = None,
        *,
        may_wait: bool = False,
        direct_path: bool = False,
        idempotent: bool = False,
        retry_as: str | None = None,
    ) -> list[Row]:
        """Run named statement ``name`` (the store says which): on the caller's
        connection (inside their transaction, which is theirs to retry) if
        given, else on a pooled autocommit connection, retrying transient
        failures for a while.

        ``may_wait``: the statement can wait on another transaction's lock, so it
        stays on psycopg's path, where Ctrl-C cancels it (libpq's blocking call,
        the direct path, cannot be interrupted). ``direct_path``: its rows are
        not read, so it may go through libpq (``direct``), where psycopg's own
        overhead was most of a single enqueue's cost. ``idempotent``: an
        insert of ids chosen before the first try, so a duplicate key on a
        retry means the first try committed (and on the first, that the id is
        taken: DuplicateJobError). ``retry_as``: the statement to send on a
        retry instead."""
        statement = self.sql[name]
        if connection is not None:
            return run_on(connection, statement, params)
        deadline = time.monotonic() + self.settings.db_retry_seconds
        delay = 0.05
        attempt = 0
        while True:
            attempt += 1
            if attempt == 2 and retry_as is not None:
                name, may_wait = retry_as, True
                statement = self.sql[name]
            try:
                wait = max(deadline - time.monotonic(), 0.1)
                if direct_path and not may_wait and self.prepared:
                    with self.direct_connection(wait) as conn:
                        if direct.execute(conn, statement, params):
                            return []
                with self.pool().connection(timeout=wait) as conn:
                    return fetch(conn.execute(statement, params))
            except psycopg.errors.UniqueViolation as exc:
                if committed_before(exc, attempt, idempotent):
                    return []
                raise
            except psycopg.OperationalError as exc:
                if not may_retry(exc, name, delay, deadline):
                    raise
                if self._pool is not None:
                    self._return_lane()
                    self._pool.check()  # drop every broken idle connection at once
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    @contextmanager
    def transaction(self, connection: Any = None) -> Iterator[Any]:
        """Several statements as one: in the caller's transaction when given a
        connection, else in a transaction on a pooled connection."""
        if connection is not None:
            yield connection
            return
        with self.pool().connection() as conn, conn.transaction():
            yield conn

    def run(self, connection: Any, name: str, params: Params) -> list[Row]:
        """Run named statement ``name`` on a connection from ``transaction()``."""
        return run_on(connection, self.sql[name], params)


def _abort_on_close(conn: psycopg.Connection[Any]) -> None:
    """SO_LINGER 0: when the process dies, its sockets are reset and whatever
    they still hold unsent is dropped, instead of the kernel retransmitting it
    (a task's INSERT stuck in a partition) until the network returns. A clean
    close then resets too, which the server may log."""
    sock = socket.socket(fileno=os.dup(conn.fileno()))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        sock.close()


def committed_before(exc: psycopg.errors.UniqueViolation, attempt: int, idempotent: bool) -> bool:
    """What a duplicate key means to ``execute`` (sync and async): for an
    ``idempotent`` insert on a retry, that the earlier try committed before its
    connection dropped (True: nothing to do); on the first try, that the id
    chosen by the caller is taken (DuplicateJobError). Else False: re-raise."""
    if not idempotent:
        return False
    if attempt > 1:
        return True
    raise DuplicateJobError(
        f"a job with this id already exists ({exc.diag.message_detail})"
    ) from exc


def may_retry(exc: psycopg.OperationalError, name: str, delay: float, deadline: float) -> bool:
    """Whether ``execute`` (sync and async) tries statement ``name`` again after
    ``exc`` in ``delay`` seconds: a transient failure with time left before
    ``deadline``. Says so in the log when it does."""
    if not transient(exc) or time.monotonic() + delay > deadline:
        return False
    log.warning(
        "%s failed (%s: %s); retrying in %.2fs", name, type(exc).__name__, str(exc).strip(), delay
    )
    return True


class _SetAside:
    """``direct_connection()``: a class rather than a generator-based context
    manager, since it runs once per ``delay()`` and costs a third as much."""

    __slots__ = ("conn", "db", "timeout")

    def __init__(self, db: Database, timeout: float) -> None:
        self.db, self.timeout = db, timeout

    def __enter__(self) -> psycopg.Connection[Any]:
        try:
            self.conn = self.db._lane.pop()
        except IndexError:
            self.conn = self.db.pool().getconn(timeout=self.timeout)
        return self.conn

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        db = self.db
        if kind is not None:
            # A lost connection: the others set aside are likely lost too.
            db.pool().putconn(self.conn)
            db._return_lane()
        elif len(db._lane) < db._lane_size and not db._pool_wanted():
            db._lane.append(self.conn)
        else:
            db.pool().putconn(self.conn)
