"""The dashboard mounted inside someone else's ASGI application, as
docs/dashboard.md shows: ``outer.mount("/ops/jobs", create_app(...))``.
Served by uvicorn over real HTTP; links, static files, the session and an
action all have to work under the prefix, and the outer app's own routes
stay the outer app's."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from jobqueue import JobQueue
from jobqueue.dashboard import Auth, create_app
from tests.apps import build
from tests.conftest import wait_for
from tests.integration.test_dashboard import Client, free_port

PREFIX = "/ops/jobs"
TOKEN = "mount-token-0123456789"


@pytest.fixture
def mounted(dsn: str, schema: str) -> Iterator[str]:
    app = JobQueue(dsn, schema=schema, auto_migrate=False)
    build(app)
    dashboard = create_app(app, auth=Auth(token=TOKEN))

    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("the outer app")

    outer = Starlette(routes=[Route("/", home), Mount(PREFIX, app=dashboard)])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(outer, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 20, "uvicorn to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        dashboard.state.dashboard.sampler.stop()
        app.close()


def test_a_mounted_dashboard_works_under_its_prefix(
    jq: Any, schema: str, conn: Any, mounted: str
) -> None:
    later = jq.add.apply_async((1, 2), countdown=600)  # waits: an action can revoke it
    anonymous = Client(mounted)
    assert anonymous.page("/") == "the outer app"
    # The dashboard's own authentication holds when mounted: curl gets 401, a
    # browser the login form, under the prefix.
    assert anonymous.get(PREFIX + "/jobs")[0] == 401
    status, headers, _ = anonymous.get(PREFIX + "/jobs", accept="text/html")
    assert status == 303 and headers["location"] == PREFIX + "/login?next=%2Fjobs"

    client = Client(mounted)
    client.page(PREFIX + "/login")  # the login form's CSRF token, as a browser gets it
    # `next` is a path of the dashboard (what its login redirect puts there).
    status, headers, _ = client.post(PREFIX + "/login", {"token": TOKEN, "next": "/jobs"})
    assert status in (302, 303), status
    assert headers["location"] == PREFIX + "/jobs"
    page = client.page(PREFIX + f"/jobs/{later.id}")
    # Every link, form and asset of the page stays under the prefix.
    targets = re.findall(r'(?:href|src|action)="(/[^"]*)"', page)
    assert targets, page[:500]
    outside = [t for t in targets if not t.startswith(PREFIX + "/")]
    assert not outside, outside
    stylesheet = next(t for t in targets if t.endswith(".css"))
    assert client.get(stylesheet)[0] == 200
    # An action under the prefix, with the session and CSRF token it set.
    status, _, _ = client.post(PREFIX + f"/jobs/{later.id}/cancel")
    assert status in (200, 302, 303), status
    row = conn.execute(f'SELECT state FROM "{schema}".jobs WHERE id = %s', (later.id,)).fetchone()
    assert row is not None and row[0] == "REVOKED"
