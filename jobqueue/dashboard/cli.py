"""``jobqueue dashboard``: serve the web dashboard with uvicorn.

This module imports only click, so the CLI loads without the dashboard's
dependencies; the command says how to install them when they are missing.
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import click

from . import INSTALL_HINT

if TYPE_CHECKING:
    from ..cli import Context

log = logging.getLogger("jobqueue.dashboard")


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the dashboard on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=5555, show_default=True)
@click.option(
    "--read-only",
    is_flag=True,
    help="Show everything, change nothing: no action is shown or accepted "
    "(a role with SELECT only is enough: jobqueue db grant --monitor).",
)
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="user:password lines: HTTP basic and the login form accept them "
    "($JOBQUEUE_DASHBOARD_TOKEN: a token, accepted too).",
)
@click.option(
    "--insecure-no-auth",
    is_flag=True,
    help="Serve a non-local address without authentication (behind a proxy "
    "that authenticates, or on a trusted network).",
)
@click.option(
    "--stale-after",
    type=click.FloatRange(min=1),
    default=300.0,
    show_default=True,
    metavar="SECONDS",
    help="Warn on the overview when a queue's oldest due job has waited this long.",
)
@click.option(
    "-l",
    "--loglevel",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
)
@click.pass_obj
def dashboard(
    obj: Context,
    host: str,
    port: int,
    read_only: bool,
    password_file: Path | None,
    insecure_no_auth: bool,
    stale_after: float,
    loglevel: str,
) -> None:
    """Serve the web dashboard at http://HOST:PORT/ (docs/dashboard.md).

    Binds 127.0.0.1 unless told otherwise; any other address needs
    authentication ($JOBQUEUE_DASHBOARD_TOKEN or --password-file) or
    --insecure-no-auth. Needs pip install 'jobqueue[dashboard]'.
    """
    try:
        import uvicorn

        from .app import create_app
        from .auth import TOKEN_ENV, Auth
    except ImportError as exc:
        raise click.ClickException(
            f"jobqueue dashboard needs {exc.name}, which is not installed: {INSTALL_HINT}"
        ) from exc
    try:
        auth = Auth.from_env(password_file)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if auth is None and not is_loopback(host) and not insecure_no_auth:
        raise click.UsageError(
            f"--host {host} serves the dashboard beyond this machine: set ${TOKEN_ENV} or "
            "--password-file to require a login, or pass --insecure-no-auth if something in "
            "front of it authenticates"
        )
    from .. import logs

    chosen = logs.env_format()
    logs.configure(loglevel.upper(), chosen if chosen in logs.LOG_FORMATS else "text")
    app = obj.app()
    web = create_app(app, read_only=read_only, auth=auth, stale_after=stale_after)
    how = "no authentication" if auth is None else "login: " + " or ".join(auth.kinds)
    log.info(
        "serving the dashboard of schema %r at http://%s:%d/ (%s%s)",
        app.conf.schema,
        host,
        port,
        how,
        ", read-only" if read_only else "",
    )
    uvicorn.run(web, host=host, port=port, log_level=loglevel.lower(), access_log=False)
