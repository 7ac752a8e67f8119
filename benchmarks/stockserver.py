"""A PostgreSQL server with stock settings, started for one benchmark run.

    with stock_server() as dsn: ...          # from Python
    python -m benchmarks.stockserver          # start one, print its DSN, stop on Ctrl-C

A benchmark that compares systems must run them on a server as their users
run it: the machine's own server may be tuned for a test suite (this project's
CI server runs with ``autovacuum=off``, under which a peer that relies on
autovacuum slows down by 5x within minutes). So the server is made here with
``initdb`` and started with ``pg_ctl``, changing nothing but where it listens:
127.0.0.1 on a free port and a socket directory of its own. Everything else is
what ``initdb`` chose (autovacuum on, ``synchronous_commit`` on, 128 MB of
shared buffers...); ``report.conditions`` records it with the figures.

Run as root, the server runs as the OS user ``postgres`` (PostgreSQL refuses
root), which the Debian packages create. The data directory is removed when
the block ends, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

VERSION = "15"  # the version the figures are quoted for (the harness ran 15)
_BIN_DIRS = (f"/usr/lib/postgresql/{VERSION}/bin", "/usr/local/pgsql/bin")
_STARTUP_TIMEOUT = 60.0
_INITDB = ("--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8")
_WAIT = ("-w", "-t", str(int(_STARTUP_TIMEOUT)))


def binaries() -> Path:
    """Where ``initdb`` and ``pg_ctl`` are (PostgreSQL's server binaries)."""
    for candidate in _BIN_DIRS:
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    if found is None:
        raise RuntimeError(
            f"no initdb found in {', '.join(_BIN_DIRS)} or on PATH: install PostgreSQL "
            f"{VERSION}'s server package, or pass --dsn for a server you started"
        )
    return Path(found).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _as_server_user(command: list[str]) -> list[str]:
    """``command`` run as ``postgres`` when we are root, else as ourselves."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@contextlib.contextmanager
def stock_server(port: int | None = None) -> Iterator[str]:
    """Start a fresh server with initdb's settings; yield a DSN of its
    ``postgres`` database (user postgres, trust on 127.0.0.1 only)."""
    bindir = binaries()
    port = port or free_port()
    root = Path(tempfile.mkdtemp(prefix="jobqueue-stock-pg-"))
    data, sockets, log = root / "data", root / "sockets", root / "server.log"
    sockets.mkdir()
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        for path in (root, sockets):
            os.chown(path, user.pw_uid, user.pw_gid)
    started = False
    try:
        subprocess.run(
            _as_server_user([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", *_INITDB]),
            check=True,
            capture_output=True,
        )
        # Where it listens is all that differs from initdb's postgresql.conf:
        # given on the command line, so the file stays as initdb wrote it.
        options = f"-c listen_addresses=127.0.0.1 -c port={port} "
        options += f"-c unix_socket_directories={sockets}"
        pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data)]
        subprocess.run(
            _as_server_user([*pg_ctl, "-l", str(log), "-o", options, *_WAIT, "start"]),
            check=True,
            capture_output=True,
        )
        started = True  # pg_ctl -w returned once the server accepts connections
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        if started:
            subprocess.run(
                _as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]),
                capture_output=True,
            )
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    with stock_server() as dsn:
        print(dsn, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
