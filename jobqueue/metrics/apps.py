"""``/metrics`` inside a web application: a WSGI app and an ASGI app over one
registry holding a ``Collector``.

Both answer every request with the metrics (mount them at ``/metrics``), in
Prometheus's text format or OpenMetrics if the scraper asks for it. The ASGI
app reads in a thread of the event loop's executor: a scrape waiting on
PostgreSQL (up to ``timeout`` seconds) never blocks the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any

import prometheus_client
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from .collector import Collector, SqlReader

if TYPE_CHECKING:
    from ..app import JobQueue

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def build_registry(
    app: JobQueue, timeout: float = 5.0, into: CollectorRegistry | None = None
) -> CollectorRegistry:
    """``into`` (a new registry if None) with jobqueue's collector registered:
    every collection reads ``metrics()`` once."""
    target = into if into is not None else CollectorRegistry(auto_describe=False)
    target.register(Collector(SqlReader(app, timeout)))
    return target


def make_wsgi_app(
    app: JobQueue, *, timeout: float = 5.0, registry: CollectorRegistry | None = None
) -> WSGIApp:
    """A WSGI app serving the metrics of ``app``'s schema (e.g. mounted at
    ``/metrics`` with werkzeug's DispatcherMiddleware). ``registry``: serve
    that one, with jobqueue's collector added, instead of a new one."""
    wsgi: WSGIApp = prometheus_client.make_wsgi_app(build_registry(app, timeout, registry))
    return wsgi


def make_asgi_app(
    app: JobQueue, *, timeout: float = 5.0, registry: CollectorRegistry | None = None
) -> ASGIApp:
    """An ASGI app serving the metrics of ``app``'s schema (e.g.
    ``starlette_app.mount("/metrics", make_asgi_app(app))``)."""
    target = build_registry(app, timeout, registry)

    def render(accept: str) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept)
        return encoder(target), content_type

    async def metrics_app(
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":  # served alone, by a server that asks
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            raise ValueError(f"jobqueue's metrics app serves HTTP, not {scope['type']!r}")
        accept = ""
        for name, value in scope.get("headers", ()):
            if name.lower() == b"accept":
                accept = value.decode("latin-1")
        loop = asyncio.get_running_loop()
        body, content_type = await loop.run_in_executor(None, render, accept)
        head = scope.get("method", "GET") == "HEAD"
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", content_type.encode("latin-1")),
                    (b"content-length", str(len(body)).encode("latin-1")),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"" if head else body})

    return metrics_app
