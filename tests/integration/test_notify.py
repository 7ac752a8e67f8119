"""Failure notifications from real workers to a real SMTP server (aiosmtpd)
and a real HTTP server: what they say, how a storm becomes a digest, what
the filters let through, and that a server that is down costs no job."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest
from aiosmtpd.controller import Controller

from jobqueue import JobQueue
from jobqueue.notify import WebhookNotifier, signature
from jobqueue.worker import Worker
from tests.apps import build
from tests.conftest import WorkerProcess, wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class SmtpSink:
    """A local SMTP server keeping every message it receives."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.port = _free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 OK"


class HookSink:
    """A local HTTP server keeping every request (headers, JSON body); it
    answers ``status``."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.status = 200
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                sink.requests.append((self.path, dict(self.headers), body))
                self.send_response(sink.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, _, body in self.requests]


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.controller.start()
    yield sink
    sink.controller.stop()


@pytest.fixture
def hook() -> Iterator[HookSink]:
    sink = HookSink()
    yield sink
    sink.server.shutdown()
    sink.server.server_close()


@pytest.fixture
def notify_worker(
    start_worker: Callable[..., WorkerProcess], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., WorkerProcess]:
    """A worker of tests.apps_notify:app with these app.conf settings."""

    def start(settings: dict[str, Any], *args: str, ready: bool = True) -> WorkerProcess:
        monkeypatch.setenv("JQ_TEST_NOTIFY", json.dumps(settings))
        return start_worker(*args, app="tests.apps_notify:app", ready=ready)

    return start


@pytest.fixture
def app(dsn: str, schema: str) -> Iterator[JobQueue]:
    app = JobQueue(dsn, schema=schema, auto_migrate=False)
    build(app)
    app.task(name="notify.keyerror")(lambda key: None)  # only its name matters here
    yield app
    app.close()


def _states(conn: psycopg.Connection[Any], schema: str) -> dict[str, int]:
    rows = conn.execute(f'SELECT state, count(*) FROM "{schema}".jobs GROUP BY state').fetchall()
    return {state: count for state, count in rows}


def test_a_failure_is_mailed_and_posted_once_recorded_and_its_retries_are_not(
    notify_worker: Callable[..., WorkerProcess], smtp: SmtpSink, hook: HookSink, app: JobQueue
) -> None:
    worker = notify_worker(
        {
            "notify_admins": ["ops@example.com", ["On Call", "oncall@example.com"]],
            "notify_email_host": "127.0.0.1",
            "notify_email_port": smtp.port,
            "notify_email_sender": "jobqueue@example.com",
            "notify_webhook_url": f"{hook.url}/services/T0/B0/token",
            "notify_webhook_secret": "hook-secret",
            "notify_webhook_headers": {"Authorization": "Bearer abc"},
            "notify_window": 60,
        }
    )
    result = app.tasks["hopeless"].delay()  # two retries, then FAILURE
    wait_for(lambda: smtp.messages and hook.requests, 30, "a message by e-mail and webhook")
    assert result.state == "FAILURE"  # notified once recorded

    (mail,) = smtp.messages
    assert mail["Subject"] == "[jobqueue] hopeless failed: ValueError"
    assert mail["From"] == "jobqueue@example.com"
    assert mail["To"] == "ops@example.com, On Call <oncall@example.com>"
    body = mail.get_content()
    assert f"Task hopeless[{result.id}] failed on " in body
    assert "ValueError: never works" in body and "attempt 3" in body
    assert "Traceback" in body  # a failure notified alone carries its traceback

    ((path, headers, raw),) = hook.requests
    assert path == "/services/T0/B0/token"
    assert headers["Authorization"] == "Bearer abc"
    assert headers["Content-Type"].startswith("application/json")
    timestamp = headers["X-Jobqueue-Timestamp"]
    assert headers["X-Jobqueue-Signature"] == signature("hook-secret", timestamp, raw)
    message = json.loads(raw)
    assert message["kind"] == "failure" and message["count"] == 1
    assert message["text"].startswith(f"Task hopeless[{result.id}] failed on ")
    assert message["groups"] == [
        {
            "task": "hopeless",
            "exception": "ValueError",
            "state": "FAILURE",
            "count": 1,
            "job_ids": [result.id],
        }
    ]
    (example,) = message["examples"]
    assert example["job_id"] == result.id and example["attempt"] == 3
    assert example["queue"] == "default" and example["message"] == "never works"
    assert "never works" in example["traceback"]

    assert worker.terminate() == 0  # nothing was pending: nothing more is sent
    assert len(smtp.messages) == 1 and len(hook.requests) == 1
    assert "hook-secret" not in worker.log and "token" not in worker.log


def test_a_storm_of_200_failures_makes_a_few_digests_with_every_failure_counted(
    notify_worker: Callable[..., WorkerProcess],
    smtp: SmtpSink,
    hook: HookSink,
    app: JobQueue,
    conn: psycopg.Connection[Any],
    schema: str,
) -> None:
    settings = {
        "notify_admins": ["ops@example.com"],
        "notify_email_host": "127.0.0.1",
        "notify_email_port": smtp.port,
        "notify_webhook_url": hook.url,
        "notify_window": 120,
    }
    workers = [notify_worker(settings, "-c", "4") for _ in range(2)]
    app.enqueue_many("boom", [(f"storm {i}",) for i in range(150)])
    app.enqueue_many("notify.keyerror", [(f"k{i}",) for i in range(50)])
    app.enqueue_many("add", [(i, i) for i in range(50)])
    wait_for(lambda: _states(conn, schema) == {"FAILURE": 200, "SUCCESS": 50}, 60, "the storm")
    wait_for(lambda: hook.requests, 30, "the first message")  # at once, not after the window
    for worker in workers:
        assert worker.terminate() == 0  # each flushes its pending digest

    bodies = hook.bodies()
    assert 1 <= len(bodies) <= 4  # per worker: the first failure(s), then one digest
    assert sum(b["count"] for b in bodies) == 200
    counts: dict[tuple[str, str], int] = {}
    for body in bodies:
        assert sum(g["count"] for g in body["groups"]) == body["count"]
        assert len(body["examples"]) <= 5
        for group in body["groups"]:
            key = (group["task"], group["exception"])
            counts[key] = counts.get(key, 0) + group["count"]
            assert 1 <= len(group["job_ids"]) <= 3
    assert counts == {("boom", "CustomError"): 150, ("notify.keyerror", "KeyError"): 50}
    digest = max(bodies, key=lambda b: b["count"])
    assert digest["kind"] == "digest"
    assert f"{digest['count']} job failures on " in digest["text"]

    assert 1 <= len(smtp.messages) <= 4
    subjects = [m["Subject"] for m in smtp.messages]
    assert any(s.endswith(" more failures)") for s in subjects), subjects


def test_filters_and_retries(
    notify_worker: Callable[..., WorkerProcess],
    hook: HookSink,
    app: JobQueue,
    conn: psycopg.Connection[Any],
    schema: str,
) -> None:
    worker = notify_worker(
        {
            "notify_webhook_url": hook.url,
            "notify_window": 120,
            "notify_on_retry": True,
            "notify_tasks": ["hope*", "notify.*"],  # not boom
            "notify_exclude_exceptions": ["builtins.KeyError"],  # not notify.keyerror
        }
    )
    app.tasks["boom"].delay("filtered by task")
    app.send_task("notify.keyerror", ("filtered by exception",))
    hopeless = app.tasks["hopeless"].delay()
    wait_for(lambda: _states(conn, schema) == {"FAILURE": 3}, 30, "three failures")
    assert worker.terminate() == 0
    groups = [g for body in hook.bodies() for g in body["groups"]]
    counts: dict[tuple[str, str], int] = {}
    for g in groups:
        counts[g["task"], g["state"]] = counts.get((g["task"], g["state"]), 0) + g["count"]
    assert counts == {("hopeless", "RETRY"): 2, ("hopeless", "FAILURE"): 1}
    assert all(g["job_ids"] == [hopeless.id] * min(g["count"], 3) for g in groups)


def test_servers_that_are_down_lose_no_job_and_are_logged_without_credentials(
    notify_worker: Callable[..., WorkerProcess],
    hook: HookSink,
    app: JobQueue,
    conn: psycopg.Connection[Any],
    schema: str,
) -> None:
    hook.status = 500
    worker = notify_worker(
        {
            "notify_admins": ["ops@example.com"],
            "notify_email_host": "127.0.0.1",
            "notify_email_port": _free_port(),  # nobody listens there
            "notify_email_user": "jobqueue",
            "notify_email_password": "smtp-password-x9",
            "notify_webhook_url": f"{hook.url}/hooks/secret-path-q7",
            "notify_webhook_secret": "hook-secret-k2",
            "notify_retries": 1,
            "notify_window": 120,
        },
        "-c",
        "4",
    )
    app.enqueue_many("boom", [(f"down {i}",) for i in range(30)])
    app.enqueue_many("add", [(i, i) for i in range(30)])
    wait_for(lambda: _states(conn, schema) == {"FAILURE": 30, "SUCCESS": 30}, 60, "every job")

    def dropped() -> bool:
        log = worker.log
        return "e-mail to 1 admin(s) via 127.0.0.1" in log and log.count("; dropped") >= 2

    wait_for(dropped, 30, "both notifiers to give up their first message")
    assert worker.terminate() == 0
    log = worker.log
    assert "could not send a notification of" in log and "will retry" in log
    assert "HTTP 500" in log
    for secret in ("smtp-password-x9", "hook-secret-k2", "secret-path-q7"):
        assert secret not in log
    assert len(hook.requests) >= 2  # the first message and its retry (then the flush)
    assert _states(conn, schema) == {"FAILURE": 30, "SUCCESS": 30}


def test_a_bad_setting_stops_the_worker_at_start(
    notify_worker: Callable[..., WorkerProcess],
) -> None:
    worker = notify_worker(
        {"notify_admins": ["ops@example.com"], "notify_email_security": "tls"}, ready=False
    )
    assert worker.proc.wait(30) == 2
    assert (
        "app.conf.notify_email_security must be one of none, starttls, ssl, got 'tls'" in worker.log
    )


def test_the_python_api_in_a_worker_thread(jq: Any, hook: HookSink) -> None:
    notifier = WebhookNotifier(hook.url, window=0).install(jq.app)
    worker = Worker(jq.app, concurrency=2)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    results = [jq.boom.delay(f"api {i}") for i in range(3)]
    wait_for(lambda: all(r.state == "FAILURE" for r in results), 30, "three failures")
    wait_for(lambda: sum(b["count"] for b in hook.bodies()) == 3, 30, "three notified")
    worker.stop()
    thread.join(30)
    assert notifier.sent == len(hook.requests)  # window 0: no rate limit
    ids = {e["job_id"] for b in hook.bodies() for e in b["examples"]}
    assert ids == {r.id for r in results}
