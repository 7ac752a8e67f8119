"""docs/web-frameworks.md's recipes, run as written: each example module under
examples/web is served over real HTTP (uvicorn for FastAPI and Starlette,
werkzeug's server for Flask) with a real worker, and the page's code blocks
must be those files, so the documentation cannot drift from what is tested."""

from __future__ import annotations

import importlib
import json
import re
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
import uvicorn
from psycopg.conninfo import conninfo_to_dict
from werkzeug.serving import make_server

from tests.conftest import ROOT, wait_for
from tests.integration.test_dashboard import free_port

PAGE = ROOT / "docs" / "web-frameworks.md"
TOKEN = "recipe-token-0123456789"
Serve = Callable[[ModuleType], Iterator[str]]


def test_the_page_shows_the_tested_files() -> None:
    """Every block of the page introduced by ``<!-- file: path -->`` is that
    file, whole; and every example module is on the page."""
    text = PAGE.read_text()
    blocks = re.findall(r"<!-- file: (\S+) -->\s*```python\n(.*?)```", text, re.DOTALL)
    shown = {path for path, _ in blocks}
    assert shown == {f"examples/web/{p.name}" for p in (ROOT / "examples/web").glob("*_app.py")}
    for path, body in blocks:
        assert body == (ROOT / path).read_text(), f"{PAGE.name} no longer shows {path} as it is"


def _url(dsn: str, schema: str) -> str:
    """The test database as a URL (the examples' DATABASE_URL), its search_path
    the test's schema, where the examples' ``orders`` table is."""
    p = conninfo_to_dict(dsn)
    auth = quote(str(p.get("user", "postgres")))
    if p.get("password"):
        auth += ":" + quote(str(p["password"]))
    host = f"{p.get('host', '127.0.0.1')}:{p.get('port', 5432)}"
    return f"postgresql://{auth}@{host}/{p['dbname']}?options=-csearch_path%3D{schema}"


@pytest.fixture
def recipe(
    dsn: str, schema: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], ModuleType]]:
    """Import an example module afresh with this test's database and schema."""
    conn.execute(f'CREATE TABLE "{schema}".orders (id int PRIMARY KEY)')
    monkeypatch.setenv("DATABASE_URL", _url(dsn, schema))
    monkeypatch.setenv("JOBQUEUE_SCHEMA", schema)
    monkeypatch.setenv("JOBQUEUE_DASHBOARD_TOKEN", TOKEN)
    loaded: list[ModuleType] = []

    def load(name: str) -> ModuleType:
        sys.modules.pop(name, None)
        module = importlib.import_module(name)
        loaded.append(module)
        return module

    yield load
    for module in loaded:
        module.jobs.close()
        sys.modules.pop(module.__name__, None)


def serve_asgi(module: ModuleType) -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(module.web, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 20, "uvicorn to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)
    # The lifespan's shutdown ran: the loop's async pool is closed.
    assert module.jobs.aio.db._pools == {}


def serve_wsgi(module: ModuleType) -> Iterator[str]:
    port = free_port()
    server = make_server("127.0.0.1", port, module.web, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        thread.join(20)


def request(url: str, method: str = "GET", token: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


RECIPES: dict[str, tuple[Serve, bool]] = {
    # module: (server, whether a failing request is part of the recipe)
    "examples.web.fastapi_app": (serve_asgi, True),
    "examples.web.starlette_app": (serve_asgi, False),
    "examples.web.flask_app": (serve_wsgi, True),
}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe(
    name: str,
    recipe: Callable[[str], ModuleType],
    start_worker: Any,
    conn: psycopg.Connection[Any],
    schema: str,
) -> None:
    serve, fails = RECIPES[name]
    module = recipe(name)
    start_worker(app=f"{name}:jobs")
    served = serve(module)
    base = next(served)
    try:
        status, body = request(f"{base}/orders/7", "POST")
        assert status == 200, body
        job = json.loads(body)["job"]
        if fails:  # the handler fails after enqueueing: the order and the job roll back
            status, body = request(f"{base}/orders/1007", "POST")
            assert status == 422, body
        status, body = request(f"{base}/receipts/{job}")
        assert (status, json.loads(body)) == (200, {"receipt": "receipt for order 7"})
        status, body = request(f"{base}/metrics/")
        assert status == 200 and "jobqueue_queue_due_jobs" in body, body[:500]
        if serve is serve_asgi:
            status, body = request(f"{base}/jobs/", token=TOKEN)
            assert status == 200 and "<html" in body.lower(), body[:500]
    finally:
        for _ in served:  # stop the server (and check its shutdown)
            pass
    orders = [r[0] for r in conn.execute(f'SELECT id FROM "{schema}".orders ORDER BY id')]
    assert orders == [7]
    jobs = conn.execute(f'SELECT task FROM "{schema}".all_jobs').fetchall()
    assert jobs == [(f"{name}.send_receipt",)]
