"""``jobqueue metrics``: the standalone Prometheus exporter.

This module imports only click, so the CLI loads without prometheus_client;
the command says how to install it when it is missing.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import TYPE_CHECKING

import click

from .. import interrupts
from . import INSTALL_HINT

if TYPE_CHECKING:
    from ..cli import Context


@click.command()
@click.option("--port", type=click.IntRange(0, 65535), default=9808, show_default=True)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0: every interface).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1, max=300),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="How long a scrape waits for PostgreSQL before it answers jobqueue_up 0.",
)
@click.option(
    "-l",
    "--loglevel",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
)
@click.pass_obj
def metrics(obj: Context, port: int, host: str, timeout: float, loglevel: str) -> None:
    """Serve Prometheus metrics of every queue, worker and schedule at
    http://HOST:PORT/metrics, read from SQL at each scrape (docs/operations.md,
    "Metrics"). Needs prometheus_client: pip install 'jobqueue[metrics]'."""
    try:
        import prometheus_client
        from prometheus_client import CollectorRegistry

        from .collector import Collector, SqlReader
    except ImportError as exc:
        raise click.ClickException(
            f"jobqueue metrics needs prometheus_client, which is not installed ({exc}): "
            f"{INSTALL_HINT}"
        ) from exc
    from .. import logs

    chosen = logs.env_format()  # $JOBQUEUE_LOG_FORMAT, as workers and beats
    logs.configure(loglevel.upper(), chosen if chosen in logs.LOG_FORMATS else "text")
    app = obj.app()
    reader = SqlReader(app, timeout)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(reader))
    try:
        server, thread = prometheus_client.start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from exc
    bound = server.server_address[1]
    stop = threading.Event()

    interrupts.handle((signal.SIGTERM, signal.SIGINT), lambda signum: stop.set(), "jobqueue-signal")
    logging.getLogger("jobqueue.metrics").info(
        "serving metrics of schema %r at http://%s:%d/metrics", app.conf.schema, host, bound
    )
    while not stop.wait(3600):
        pass
    server.shutdown()
    server.server_close()
    thread.join(5)
    reader.close()
