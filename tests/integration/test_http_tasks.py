"""HTTP tasks (jobqueue.http) against an HTTP server of the test's own, run by
real workers: results, retries, failures, and the address checks."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from jobqueue import JobQueue, http
from jobqueue.http import HTTPStatusError, URLNotAllowed
from tests.conftest import WorkerProcess

APP = "tests.apps_http:app"


class Web:
    """A local HTTP server that records what it is sent."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        self.flaky_failures = 1
        web = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                with web.lock:
                    web.seen.append((self.command, self.path, dict(self.headers), body))
                    fail = self.path == "/flaky" and web.flaky_failures > 0
                    if fail:
                        web.flaky_failures -= 1
                if self.path == "/echo":
                    self._send(200, "application/json", json.dumps({
                        "method": self.command,
                        "json": json.loads(body) if body else None,
                        "token": self.headers.get("x-token"),
                    }))  # fmt: skip
                elif self.path == "/flaky":
                    self._send(500 if fail else 200, "text/plain", "down" if fail else "up")
                elif self.path == "/redirect-private":
                    port = self.server.server_address[1]
                    self.send_response(302)
                    self.send_header("Location", f"http://127.0.0.2:{port}/echo")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif self.path == "/big":
                    self._send(200, "text/plain", "x" * 100_000)
                else:
                    self._send(404, "text/plain", "no such page")

            def _send(self, status: int, content_type: str, text: str) -> None:
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def paths(self) -> list[str]:
        with self.lock:
            return [path for _, path, _, _ in self.seen]


@pytest.fixture
def web() -> Iterator[Web]:
    server = Web()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def app(dsn: str, schema: str) -> Iterator[JobQueue]:
    """The producer: made last, so it is the app jobqueue.http.request binds to."""
    producer = JobQueue(dsn, schema=schema, auto_migrate=False)
    yield producer
    producer.close()


@pytest.fixture
def http_worker(
    start_worker: Callable[..., WorkerProcess], monkeypatch: pytest.MonkeyPatch
) -> Callable[[Any], WorkerProcess]:
    """A worker whose app.conf.http_allow_private is ``allow``."""

    def start(allow: Any) -> WorkerProcess:
        monkeypatch.setenv("JOBQUEUE_TEST_HTTP_ALLOW_PRIVATE", json.dumps(allow))
        return start_worker("--poll-interval", "0.2", app=APP)

    return start


def test_a_response_is_the_result(web: Web, app: JobQueue, http_worker: Any) -> None:
    http_worker(["127.0.0.1"])
    result = http.request.delay(
        "POST", web.url("/echo"), json={"order": 7}, headers={"X-Token": "t"}, timeout=5
    )
    response = result.get(timeout=30)
    assert response["status"] == 200
    assert response["body"] == {"method": "POST", "json": {"order": 7}, "token": "t"}
    assert response["headers"]["content-type"] == "application/json"
    assert response["url"] == web.url("/echo") and response["truncated"] is False


def test_a_5xx_is_retried_until_it_succeeds(web: Web, app: JobQueue, http_worker: Any) -> None:
    http_worker(True)
    result = http.request.delay("GET", web.url("/flaky"))
    response = result.get(timeout=30)
    assert (response["status"], response["body"]) == (200, "up")
    assert web.paths() == ["/flaky", "/flaky"]
    assert result.retries == 1


def test_a_4xx_fails_without_retry(web: Web, app: JobQueue, http_worker: Any) -> None:
    http_worker(True)
    result = http.request.delay("GET", web.url("/missing"))
    with pytest.raises(HTTPStatusError, match="answered 404 Not Found: 'no such page'") as failed:
        result.get(timeout=30)
    assert failed.value.status == 404
    assert web.paths() == ["/missing"]
    assert result.state == "FAILURE" and result.retries == 0


def test_loopback_is_refused_by_default(web: Web, app: JobQueue, http_worker: Any) -> None:
    http_worker(False)
    result = http.request.delay("POST", web.url("/echo"), json={})
    with pytest.raises(URLNotAllowed, match=r"127\.0\.0\.1 is a loopback address"):
        result.get(timeout=30)
    assert web.paths() == []  # no connection was made
    assert result.retries == 0


def test_a_redirect_to_an_address_not_allowed_is_refused(
    web: Web, app: JobQueue, http_worker: Any
) -> None:
    http_worker(["127.0.0.1/32"])  # 127.0.0.2 is loopback too, but not allowed
    result = http.request.delay("GET", web.url("/redirect-private"))
    with pytest.raises(URLNotAllowed, match=r"127\.0\.0\.2 is a loopback address"):
        result.get(timeout=30)
    assert web.paths() == ["/redirect-private"]


def test_a_body_past_the_limit_is_truncated(web: Web, dsn: str) -> None:
    app = JobQueue(dsn, http_allow_private=True, http_max_body_bytes=1000)
    try:
        response = http.task(app)("GET", web.url("/big"))  # in this process, no worker
    finally:
        app.close()
    assert response["truncated"] is True and response["body"] == "x" * 1000


def test_a_malformed_call_is_never_enqueued(app: JobQueue, conn: Any, schema: str) -> None:
    for args, kwargs, words in [
        (("GET", "file:///etc/passwd"), {}, "must be http:// or https://"),
        (("FETCH", "https://example.com/"), {}, "method must be one of"),
        (("GET", "https://user:secret@example.com/"), {}, "must not carry credentials"),
        (("GET", "https://example.com/"), {"timeout": 0}, "timeout must be in"),
        (("GET", "https://example.com/"), {"headers": {"X": "a\nb"}}, "on one line"),
    ]:
        with pytest.raises(ValueError, match=words):
            http.request.delay(*args, **kwargs)
    row = conn.execute(f'SELECT count(*) FROM "{schema}".all_jobs').fetchone()
    assert row == (0,)
