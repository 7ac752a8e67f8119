"""A real pgbouncer of the test's own, in front of the server under test.

``PgBouncers(database_dsn, directory)(mode, pool_size)`` runs Debian's ``pgbouncer``
in the foreground on a free port of 127.0.0.1, with a stock install's reset
query (``DISCARD ALL``, which transaction mode never runs), trust
authentication for clients, and one wildcard database that reaches the
server the way ``database_dsn`` does (TCP or a unix socket directory). Its
configuration and log live in the test's ``tmp_path``; it is stopped at the
end of the test, failed or not. pgbouncer refuses to run as root: as root it
is started with ``-u`` as the owner of the server's socket directory, else
``postgres`` (it reads its configuration before it drops root, and logs to
the stderr we hold).

Without a ``pgbouncer`` binary the tests that use it are skipped
(``.ci/run`` installs the package).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

POOL_MODES = ("transaction", "session")
_START_TIMEOUT = 15.0


def pgbouncer_binary() -> str | None:
    found = shutil.which("pgbouncer")
    if found is None and os.access("/usr/sbin/pgbouncer", os.X_OK):
        found = "/usr/sbin/pgbouncer"
    return found


def pgbouncer_version() -> tuple[int, int] | None:
    """(major, minor) of the installed pgbouncer, None if there is none."""
    binary = pgbouncer_binary()
    if binary is None:
        return None
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    match = re.search(r"PgBouncer (\d+)\.(\d+)", out.stdout + out.stderr)
    return (int(match[1]), int(match[2])) if match else None


@dataclass(frozen=True)
class Server:
    """Where the server under test listens, as pgbouncer must reach it."""

    host: str  # an address, or a unix socket directory
    port: int
    user: str
    password: str | None

    @classmethod
    def of(cls, dsn: str) -> Server:
        # Asked of a live connection: libpq has filled in every default.
        with psycopg.connect(dsn, autocommit=True) as conn:
            info = conn.info
            return cls(info.host, info.port, info.user, info.password or None)


@dataclass
class PgBouncer:
    """One running pgbouncer; ``dsn(dbname)`` reaches a database through it."""

    mode: str
    pool_size: int
    port: int
    user: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def dsn(self, dbname: str) -> str:
        return make_conninfo("", host="127.0.0.1", port=self.port, dbname=dbname, user=self.user)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def admin(self) -> psycopg.Connection[Any]:
        """A connection to the admin console (simple query protocol only)."""
        return psycopg.connect(
            self.dsn("pgbouncer"), autocommit=True, cursor_factory=psycopg.ClientCursor
        )

    def show(self, what: str, dbname: str) -> list[dict[str, Any]]:
        """``SHOW CLIENTS`` or ``SHOW SERVERS``: the rows for ``dbname``."""
        assert what in ("CLIENTS", "SERVERS"), what
        with self.admin() as admin:
            cur = admin.execute(f"SHOW {what}")
            names = [column.name for column in cur.description or ()]
            rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        return [row for row in rows if row["database"] == dbname]

    def server_pids(self, dbname: str) -> set[int]:
        """The backend pids of the server connections it holds for ``dbname``."""
        return {int(row["remote_pid"]) for row in self.show("SERVERS", dbname)}

    def quiet(self, dbname: str) -> bool:
        """No client connected to ``dbname``, and every server connection idle
        (in session mode: reset by ``server_reset_query``)."""
        if self.show("CLIENTS", dbname):
            return False
        return all(row["state"] == "idle" for row in self.show("SERVERS", dbname))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # fast shutdown: drops every client
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_as(server: Server) -> list[str]:
    """``-u USER`` when we are root (pgbouncer refuses root): a user that can
    reach the server's unix socket directory, or ``postgres``."""
    if os.geteuid() != 0:
        return []
    if server.host.startswith("/"):
        owner = os.stat(server.host).st_uid
        if owner != 0:
            return ["-u", pwd.getpwuid(owner).pw_name]
    for name in ("postgres", "nobody"):
        with suppress(KeyError):
            pwd.getpwnam(name)
            return ["-u", name]
    raise RuntimeError("running as root, and no user to run pgbouncer as")


def _config(
    server: Server,
    directory: Path,
    port: int,
    mode: str,
    pool_size: int,
    max_prepared_statements: int,
) -> str:
    target = f"host={server.host} port={server.port} user={server.user}"
    if server.password:
        target += f" password={server.password}"
    lines = [
        "[databases]",
        f"* = {target}",
        "[pgbouncer]",
        "listen_addr = 127.0.0.1",
        f"listen_port = {port}",
        "unix_socket_dir =",  # no socket in /tmp to collide with anything
        "auth_type = trust",
        f"auth_file = {directory / 'userlist.txt'}",
        f"admin_users = {server.user}",
        f"pool_mode = {mode}",
        f"default_pool_size = {pool_size}",
        "max_client_conn = 500",
        # As a stock install: run between clients in session mode only.
        "server_reset_query = DISCARD ALL",
        "server_reset_query_always = 0",
        "logfile =",  # log to stderr, which we hold (we may not write tmp_path once -u)
        "pidfile =",
    ]
    if max_prepared_statements:
        lines.append(f"max_prepared_statements = {max_prepared_statements}")
    return "\n".join(lines) + "\n"


def start(
    database_dsn: str,
    directory: Path,
    mode: str,
    pool_size: int,
    max_prepared_statements: int = 0,
) -> PgBouncer:
    """Start pgbouncer in front of ``database_dsn``'s server; return once it answers."""
    binary = pgbouncer_binary()
    if binary is None:
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer; .ci/run installs it)")
    assert mode in POOL_MODES, mode
    server = Server.of(database_dsn)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "userlist.txt").write_text(f'"{server.user}" ""\n')
    last_error = ""
    for _attempt in range(3):  # another process may take the free port before us
        port = _free_port()
        config = directory / f"pgbouncer-{mode}-{port}.ini"
        config.write_text(
            _config(server, directory, port, mode, pool_size, max_prepared_statements)
        )
        log_path = directory / f"pgbouncer-{mode}-{port}.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [binary, *_run_as(server), str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        (directory / f"pgbouncer-{mode}-{port}.pid").write_text(f"{proc.pid}\n")
        bouncer = PgBouncer(mode, pool_size, port, server.user, proc, log_path)
        if _wait_up(bouncer):
            return bouncer
        bouncer.stop()
        last_error = bouncer.log
    raise RuntimeError(f"pgbouncer did not start:\n{last_error}")


def _wait_up(bouncer: PgBouncer) -> bool:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if bouncer.proc.poll() is not None:
            return False
        try:
            with bouncer.admin() as admin:
                admin.execute("SHOW VERSION")
            return True
        except psycopg.OperationalError:
            time.sleep(0.02)
    return False


class PgBouncers:
    """Starts pgbouncers in front of one server; ``stop_all()`` stops them all
    (the ``start_pgbouncer`` fixture of a test module calls it at teardown)."""

    def __init__(self, database_dsn: str, directory: Path) -> None:
        self.database_dsn, self.directory = database_dsn, directory
        self.started: list[PgBouncer] = []

    def __call__(
        self, mode: str, pool_size: int = 3, max_prepared_statements: int = 0
    ) -> PgBouncer:
        bouncer = start(self.database_dsn, self.directory, mode, pool_size, max_prepared_statements)
        self.started.append(bouncer)
        return bouncer

    def stop_all(self) -> None:
        for bouncer in self.started:
            bouncer.stop()
