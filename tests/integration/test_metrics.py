"""The Prometheus exporter as users run it: ``jobqueue metrics`` in a
subprocess, scraped over HTTP while real workers run jobs; the WSGI app
served by wsgiref and the ASGI app driven per the ASGI spec; and the
exporter while PostgreSQL stops answering and comes back."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from jobqueue import JobQueue
from jobqueue.metrics import make_asgi_app, make_wsgi_app
from tests.conftest import WorkerProcess, wait_for

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, parsed by prometheus_client's own parser."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def get(url: str, timeout: float = 10.0) -> Samples:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        assert response.status == 200
        return parse(response.read().decode())


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over the series whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def exporter(dsn: str, schema: str, tmp_path: Path, *args: str) -> tuple[WorkerProcess, str]:
    """``jobqueue metrics --port 0`` and the URL it says it serves."""
    proc = WorkerProcess(
        dsn, schema, ["--port", "0", *args], tmp_path / "metrics.log", command="metrics"
    )

    def url() -> str | None:
        if proc.proc.poll() is not None:
            raise AssertionError(f"the exporter exited:\n{proc.log}")
        found = re.search(r"at (http://127\.0\.0\.1:\d+/metrics)", proc.log)
        return found.group(1) if found else None

    return proc, wait_for(url, 30, "the exporter to listen")


def test_the_exporter_follows_real_workers(
    jq: Any, dsn: str, schema: str, start_worker: Any, tmp_path: Path
) -> None:
    for i in range(20):
        jq.add.delay(i, i)
    for _ in range(5):
        jq.boom.delay("no")
    for _ in range(3):
        jq.flaky.delay(2)  # two retries, then success
    jq.app.store.pause_queue("held")
    proc, url = exporter(dsn, schema, tmp_path)
    try:
        before = get(url)
        assert total(before, "jobqueue_up") == 1
        assert total(before, "jobqueue_queue_due_jobs", queue="default") == 28
        assert total(before, "jobqueue_queue_paused", queue="held") == 1
        assert total(before, "jobqueue_queue_paused", queue="default") == 0
        assert total(before, "jobqueue_jobs_succeeded_total") == 0

        # The first attempts wait more than 0.5 s before the worker starts
        # (a fast machine started the exporter and the worker within it).
        with psycopg.connect(dsn, autocommit=True) as conn:
            waited = (
                f"SELECT min(now() - created_at) > interval '0.6 seconds' "
                f'FROM "{schema}".job_queue'
            )
            wait_for(lambda: conn.execute(waited).fetchone()[0], 10, "the jobs to wait 0.6 s")
        start_worker("--concurrency", "4")

        def drained() -> Samples | None:
            now = get(url)
            done = (
                total(now, "jobqueue_jobs_succeeded_total") == 23
                and total(now, "jobqueue_jobs_failed_total") == 5
                and total(now, "jobqueue_queue_due_jobs", queue="default") == 0
                and total(now, "jobqueue_queue_scheduled_jobs", queue="default") == 0
            )
            return now if done else None

        after = wait_for(drained, 60, "the exporter to see every job run")
        assert total(after, "jobqueue_jobs_retried_total", task="flaky") == 6
        assert total(after, "jobqueue_jobs_succeeded_total", task="add", queue="default") == 20
        assert total(after, "jobqueue_jobs_failed_total", task="boom") == 5
        assert total(after, "jobqueue_queue_running_jobs", queue="default") == 0
        assert total(after, "jobqueue_queue_paused", queue="held") == 1
        assert total(after, "jobqueue_queue_workers", queue="default") == 1
        assert total(after, "jobqueue_workers") == 1
        assert any(n == "jobqueue_workers" and dict(ls)["hostname"] for (n, ls) in after)
        # Every attempt that ran: 20 + 5 + 3 x 3, in both histograms, per task.
        for kind in ("wait", "run"):
            name = f"jobqueue_job_{kind}_seconds"
            assert total(after, f"{name}_count") == 34
            assert total(after, f"{name}_count", task="flaky") == 9
            assert total(after, f"{name}_bucket", le="+Inf") == 34
            assert total(after, f"{name}_sum") > 0
            for task in ("add", "boom", "flaky"):
                buckets = sorted(
                    (float(dict(ls)["le"]), v)
                    for (n, ls), v in after.items()
                    if n == f"{name}_bucket" and dict(ls)["task"] == task
                )
                assert len(buckets) == 21
                counts = [v for _, v in buckets]
                assert counts == sorted(counts), f"{name} of {task} is not cumulative"
        # The 28 first attempts had waited 0.6 s before the worker started, so
        # only the 6 retries (due after their backoff, a worker waiting for
        # them) can sit in the buckets up to 0.5 s.
        assert total(after, "jobqueue_job_wait_seconds_bucket", le="0.5") <= 6
        again = get(url)  # counters never go back between scrapes
        for name in ("succeeded", "failed", "retried"):
            series = f"jobqueue_jobs_{name}_total"
            assert total(again, series) == total(after, series)
        assert 0 < total(again, "jobqueue_scrape_duration_seconds") < 5
    finally:
        assert proc.terminate() == 0, proc.log


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_the_wsgi_and_asgi_apps_serve_the_same_metrics(
    jq: Any, dsn: str, schema: str, start_worker: Any
) -> None:
    start_worker("--concurrency", "2")
    assert jq.add.delay(1, 2).get(timeout=30) == 3
    jq.app.store.pause_queue("held")
    server = make_server("127.0.0.1", 0, make_wsgi_app(jq.app), handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        served = get(f"http://127.0.0.1:{server.server_address[1]}/metrics")
    finally:
        server.shutdown()
        server.server_close()
    assert total(served, "jobqueue_up") == 1
    assert total(served, "jobqueue_jobs_succeeded_total", task="add") == 1
    assert total(served, "jobqueue_job_run_seconds_count", task="add") == 1
    assert total(served, "jobqueue_queue_paused", queue="held") == 1

    asgi = make_asgi_app(jq.app)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/metrics",
        "raw_path": b"/metrics",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost"), (b"accept", b"text/plain")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(asgi(scope, receive, send))
    start, body = sent
    assert start["type"] == "http.response.start" and start["status"] == 200
    headers = dict(start["headers"])
    assert headers[b"content-type"].startswith(b"text/plain")
    assert int(headers[b"content-length"]) == len(body["body"])
    text = parse(body["body"].decode())
    assert total(text, "jobqueue_up") == 1
    assert total(text, "jobqueue_jobs_succeeded_total", task="add") == 1
    assert total(text, "jobqueue_queue_paused", queue="held") == 1


class Relay:
    """A TCP relay to PostgreSQL that can go silent: while silent it accepts
    connections and reads what comes but forwards nothing, as a hung server
    or a cut network looks from the client. ``restore`` closes every
    connection it carried and forwards again."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.forwarding = threading.Event()
        self.forwarding.set()
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.sockets.append(client)
            if not self.forwarding.is_set():
                continue  # held open, never answered
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.sockets.append(upstream)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self.forwarding.wait()
                dst.sendall(data)
        except OSError:
            pass

    def go_silent(self) -> None:
        self.forwarding.clear()

    def restore(self) -> None:
        with self.lock:
            gone, self.sockets = self.sockets, []
        for sock in gone:
            sock.close()
        self.forwarding.set()

    def close(self) -> None:
        self.listener.close()
        self.restore()


@pytest.fixture
def relay(dsn: str) -> Iterator[Relay]:
    params = conninfo_to_dict(dsn)
    host = str(params.get("host") or "127.0.0.1")
    if host.startswith("/"):
        pytest.skip("the test server is reached through a unix socket")
    relay = Relay(host, int(params.get("port") or 5432))
    yield relay
    relay.close()


def test_the_exporter_answers_while_postgresql_does_not(
    dsn: str, schema: str, relay: Relay, tmp_path: Path
) -> None:
    params = conninfo_to_dict(dsn)
    params.update(host="127.0.0.1", port=str(relay.port))
    through = make_conninfo("", **{k: v for k, v in params.items() if v is not None})
    proc, url = exporter(through, schema, tmp_path, "--timeout", "1")
    try:
        assert total(get(url), "jobqueue_up") == 1

        relay.go_silent()  # the next read hangs: the scrape answers at its deadline
        for _ in range(2):  # the second joins the read still stuck, opens nothing new
            started = time.monotonic()
            down = get(url)
            assert time.monotonic() - started < 3.0
            assert total(down, "jobqueue_up") == 0
            assert not any(n.startswith("jobqueue_queue_") for n, _ in down)
        assert total(down, "jobqueue_scrape_errors_total") >= 2

        relay.restore()  # its connections are gone: the exporter connects again
        wait_for(lambda: total(get(url), "jobqueue_up") == 1, 30, "the exporter to reconnect")
        assert "cannot read from PostgreSQL" in proc.log
        assert "reading from PostgreSQL again" in proc.log

        relay.listener.close()  # refused outright: answered at once
        relay.restore()
        started = time.monotonic()
        assert total(get(url), "jobqueue_up") == 0
        assert time.monotonic() - started < 3.0
    finally:
        assert proc.terminate() == 0, proc.log


def test_a_schema_before_0015_says_what_to_do(dsn: str, schema: str, tmp_path: Path) -> None:
    from jobqueue import migrate

    migrate.downgrade(dsn, schema, "0014")
    app = JobQueue(dsn, schema=schema, auto_migrate=False)
    try:
        from jobqueue.metrics import Collector, SqlReader

        collector = Collector(SqlReader(app, timeout=5))
        families = {f.name: f for f in collector.collect()}
        assert families["jobqueue_up"].samples[0].value == 0
        with pytest.raises(Exception, match="jobqueue db upgrade"):
            collector.reader.read()
    finally:
        app.close()
