"""Prometheus metrics of a whole jobqueue cluster, computed from SQL.

Every figure is a row of ``metrics()`` in the schema (revision 0015): what
waits and runs now, workers, schedules, and counters and histograms that
statement triggers keep as jobs finish. So one exporter, anywhere, sees every
queue and worker, several exporters agree, and a scrape reads no history.

- ``jobqueue metrics --port 9808``: a standalone exporter (jobqueue/metrics/cli.py);
- ``make_wsgi_app(app)`` / ``make_asgi_app(app)``: ``/metrics`` mounted in
  your web application;
- ``Collector(SqlReader(app))``: to register in a registry of your own.

Needs ``prometheus_client`` (``pip install 'jobqueue[metrics]'``). The core
never imports this package. docs/operations.md ("Metrics") lists every metric.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

INSTALL_HINT = "pip install 'jobqueue[metrics]'"

if TYPE_CHECKING:
    from .apps import build_registry, make_asgi_app, make_wsgi_app
    from .collector import FAMILIES, Collector, ReadError, SqlReader, families

_EXPORTS = {
    "build_registry": "apps",
    "make_asgi_app": "apps",
    "make_wsgi_app": "apps",
    "FAMILIES": "collector",
    "Collector": "collector",
    "ReadError": "collector",
    "SqlReader": "collector",
    "families": "collector",
}


def __getattr__(name: str) -> Any:
    # Imported on first use, so that `jobqueue metrics` (metrics/cli.py, in
    # this package) loads with the CLI and says what to install when
    # prometheus_client is missing, instead of the CLI failing to start.
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"jobqueue.metrics needs prometheus_client: {INSTALL_HINT}") from exc
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{module}"), name)


__all__ = [
    "FAMILIES",
    "INSTALL_HINT",
    "Collector",
    "ReadError",
    "SqlReader",
    "build_registry",
    "families",
    "make_asgi_app",
    "make_wsgi_app",
]
