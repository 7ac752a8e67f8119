"""The dashboard (issue 22) over real HTTP: uvicorn serving create_app in a
thread (or ``jobqueue dashboard`` in a subprocess) against the test's
schema, real worker processes where an action needs one."""

from __future__ import annotations

import base64
import html
import json
import logging
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.cookiejar import CookieJar
from typing import Any

import psycopg
import pytest
import uvicorn

from jobqueue import JobQueue, chain, group
from jobqueue.dashboard import Auth, create_app
from jobqueue.roles import grant
from tests.apps import build
from tests.conftest import ROOT, wait_for

TOKEN = "t0ken-" + secrets.token_hex(12)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Client:
    """A browser-like client: cookies kept, redirects not followed (each
    response is looked at), the last page's CSRF token remembered."""

    def __init__(self, base: str, headers: dict[str, str] | None = None) -> None:
        self.base = base
        self.headers = headers or {}
        self.jar = CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), NoRedirect()
        )
        self.csrf: str | None = None

    def request(
        self, method: str, path: str, data: dict[str, str] | None = None, **headers: str
    ) -> tuple[int, dict[str, str], str]:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(
            self.base + path, data=body, method=method, headers={**self.headers, **headers}
        )
        try:
            with self.opener.open(req, timeout=30) as resp:
                status, hdrs, text = resp.status, dict(resp.headers), resp.read().decode()
        except urllib.error.HTTPError as exc:
            status, hdrs, text = exc.code, dict(exc.headers), exc.read().decode()
        found = re.search(r'name="csrf" value="([^"]+)"', text)
        if found:
            self.csrf = found.group(1)
        return status, {k.lower(): v for k, v in hdrs.items()}, text

    def get(self, path: str, **headers: str) -> tuple[int, dict[str, str], str]:
        return self.request("GET", path, **headers)

    def page(self, path: str) -> str:
        status, _, text = self.get(path)
        assert status == 200, (path, status, text[:500])
        return text

    def post(
        self, path: str, data: dict[str, str] | None = None, csrf: bool = True, **headers: str
    ) -> tuple[int, dict[str, str], str]:
        fields = dict(data or {})
        if csrf:
            if self.csrf is None:
                self.get("/")
            fields["csrf"] = self.csrf or ""
        return self.request("POST", path, fields, **headers)


@pytest.fixture
def serve(dsn: str, schema: str) -> Iterator[Callable[..., str]]:
    """Serve create_app(app on this schema, **options) with uvicorn; its base URL."""
    servers: list[tuple[uvicorn.Server, threading.Thread, JobQueue, Any]] = []

    def start(app_dsn: str | None = None, **options: Any) -> str:
        app = JobQueue(app_dsn or dsn, schema=schema, auto_migrate=False)
        build(app)
        port = free_port()
        web = create_app(app, **options)
        server = uvicorn.Server(
            uvicorn.Config(web, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_for(lambda: server.started, 20, "uvicorn to start")
        servers.append((server, thread, app, web))
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread, app, web in servers:
        server.should_exit = True
        thread.join(10)
        web.state.dashboard.sampler.stop()
        app.close()


def state(conn: Any, schema: str, job_id: str) -> str | None:
    row = conn.execute(f'SELECT state FROM "{schema}".all_jobs WHERE id = %s', (job_id,)).fetchone()
    return None if row is None else str(row[0])


XSS = "<script>alert(1)</script>"


def test_every_page_shows_what_it_should(
    jq: Any, schema: str, conn: Any, start_worker: Any, serve: Any
) -> None:
    start_worker("--concurrency", "2")
    ok = jq.add.delay(2, 3)
    bad = jq.boom.delay(XSS)
    flow = chain(jq.add.s(1, 1), jq.add.s(10))()
    fan = group(jq.add.s(i, i) for i in range(3))()
    assert ok.get(timeout=30) == 5
    assert flow.get(timeout=30) == 12
    assert fan.get(timeout=30) == [0, 2, 4]
    wait_for(lambda: state(conn, schema, bad.id) == "FAILURE", 30, "the failure")
    conn.execute(
        f'INSERT INTO "{schema}".schedules (name, task, interval_secs, next_run_at)'
        " VALUES ('every-minute', 'add', 60, now() + interval '30 seconds')"
    )
    client = Client(serve(sample_every=0.2))

    status, headers, body = client.get("/")
    assert status == 200
    csp = headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "same-origin"
    assert 'data-testid="queue-default"' in body
    assert 'data-testid="workers-alive">1<' in body
    assert "every-minute" in body  # due soon
    assert 'hx-get="/partials/overview"' in body
    assert "style=" not in body and "<script>" not in body.replace(
        '<script src="/static/htmx.min.js" defer></script>', ""
    )

    live = client.page("/partials/overview")
    assert 'data-testid="queue-default"' in live and "<html" not in live
    # The charts: the jobs above finished before the dashboard started, read
    # from history at its first sample (6 added, the chain's 2 among them,
    # 1 failed); one more is counted from the sampled counters.
    wait_for(
        lambda: "last hour: 6 succeeded, 1 failed" in client.page("/partials/overview"),
        20,
        "the last hour read from history",
    )
    assert 'data-testid="sampling-since"' not in client.page("/")
    jq.add.delay(1, 1).get(timeout=30)
    wait_for(
        lambda: "last hour: 7 succeeded, 1 failed" in client.page("/partials/overview"),
        20,
        "a job counted by the sampled counters",
    )

    jobs = client.page("/jobs")
    for job_id in (ok.id, bad.id, flow.id):
        assert f'data-testid="job-{job_id}"' in jobs
    assert XSS not in jobs and html.escape(XSS) in jobs
    failed = client.page("/jobs?state=FAILURE")
    assert f'data-testid="job-{bad.id}"' in failed and f'data-testid="job-{ok.id}"' not in failed
    assert "About 1 job(s) match" in failed  # from the counters
    by_args = client.page("/jobs?args=" + urllib.parse.quote(json.dumps([2, 3])))
    assert f'data-testid="job-{ok.id}"' in by_args and f'data-testid="job-{bad.id}"' not in by_args
    status, _, text = client.get("/jobs?state=NOPE")
    assert status == 400 and "unknown state" in text
    status, _, text = client.get("/jobs?args=%7Bnot")
    assert status == 400 and "must be JSON" in text

    page = client.page(f"/jobs/{bad.id}")
    assert re.search(r'data-testid="job-state">FAILURE<', page)
    assert XSS not in page and html.escape(XSS) in page
    traceback = re.search(r'<pre class="traceback" data-testid="traceback">(.*?)</pre>', page, re.S)
    assert traceback and "CustomError" in traceback.group(1)
    assert 'data-testid="action-retry"' in page and 'data-testid="action-delete"' in page
    page = client.page(f"/jobs/{ok.id}")
    assert re.search(r'data-testid="job-state">SUCCESS<', page) and "enqueued" in page
    assert 'data-testid="job-args"' in page and "5" in page  # the result

    failures = client.page("/failures")
    assert 'data-testid="failure-boom-CustomError"' in failures
    workflows = client.page("/workflows")
    root = conn.execute(f'SELECT root_id FROM "{schema}".jobs WHERE id = %s', (flow.id,)).fetchone()
    assert root is not None and root[0] is not None
    assert f'data-testid="workflow-{root[0]}"' in workflows
    tree = client.page(f"/workflows/{root[0]}")
    assert f'data-testid="node-{flow.id}"' in tree
    member = fan.results[0].id
    assert f'data-testid="node-{member}"' in client.page(
        "/workflows/"
        + str(
            conn.execute(
                f'SELECT root_id FROM "{schema}".jobs WHERE id = %s', (member,)
            ).fetchone()[0]
        )
    )
    assert "group #0" in client.page(f"/jobs/{member}") or "member 0 of 3" in client.page(
        f"/jobs/{member}"
    )
    assert "every-minute" in client.page("/schedules")
    assert "worker-" in client.page("/workers")
    assert 'data-testid="queue-default"' in client.page("/queues")
    assert client.page("/limits")
    assert client.get("/static/htmx.min.js")[0] == 200
    assert client.get("/healthz")[2] == "ok"
    assert client.get("/jobs/not-a-uuid")[0] == 404


def test_a_backlog_of_waiting_jobs_hides_no_filter_s_jobs(
    jq: Any, schema: str, conn: Any, start_worker: Any, serve: Any
) -> None:
    """Waiting jobs always have the newest ids; a backlog of them (here 3,000,
    and a walk of 200 rows per statement, as 100 k against 20,000) must not
    hide the finished, failed, revoked or running jobs older than it from any
    filter, nor from /failures."""
    start_worker("--concurrency", "2")
    app = jq.add.app
    ok = jq.add.delay(2, 3)
    bad = jq.boom.delay("backlogged")
    assert ok.get(timeout=30) == 5
    wait_for(lambda: state(conn, schema, bad.id) == "FAILURE", 30, "the failure")
    revoked = jq.add.apply_async((7, 7), queue="nowhere")
    app.control.cancel(revoked.id)
    running = jq.sleep.delay(60)
    wait_for(lambda: state(conn, schema, running.id) == "STARTED", 30, "the job to start")
    waiting = jq.add.apply_async((40, 2), queue="later")  # no record yet: in job_queue only
    app.enqueue_many("add", [(i, i) for i in range(3000)], queue="backlog")
    client = Client(serve(scan_budget=200, scan_time=30))

    def shows(query: str, job_id: str) -> bool:
        return f'data-testid="job-{job_id}"' in client.page("/jobs?" + query)

    assert shows("state=SUCCESS", ok.id)
    assert shows("state=FAILURE", bad.id)
    assert shows("state=REVOKED", revoked.id)
    assert shows("state=STARTED", running.id)
    assert shows("task=boom", bad.id)
    assert shows("exception=CustomError", bad.id)
    assert shows("args=" + urllib.parse.quote("[2, 3]"), ok.id)
    assert shows("state=FAILURE&queue=default&exception=CustomError", bad.id)
    assert shows("queue=later", waiting.id)
    assert shows("args=" + urllib.parse.quote("[40, 2]"), waiting.id)
    assert shows("state=PENDING&queue=later", waiting.id)
    pending = client.page("/jobs?state=PENDING&queue=backlog")
    assert len(re.findall(r'<tr data-testid="job-', pending)) == 50
    assert "About 3,000 job(s) match. 50 shown, newest first." in pending
    assert 'data-testid="failure-boom-CustomError"' in client.page("/failures")
    assert 'data-testid="failure-boom-CustomError"' in client.page("/failures?window=all")

    # With no time to walk, a page says how far back it looked, and its Next
    # link goes on from there until the job is found.
    hurried = Client(serve(scan_budget=200, scan_time=0))
    path, pages = "/jobs?task=boom", 0
    while True:
        page = hurried.page(path)
        if f'data-testid="job-{bad.id}"' in page:
            break
        assert "searched back to" in page, page
        found = re.search(r'href="(/jobs\?[^"]*after=[^"]+)"[^>]*rel="next"', page)
        assert found, "a Next link"
        path, pages = html.unescape(found.group(1)), pages + 1
        assert pages < 40
    assert pages > 0  # it did have to go on


def test_many_stale_queues_share_one_banner(jq: Any, serve: Any) -> None:
    for name in ("a1", "a2"):
        jq.add.apply_async((1, 1), queue=name)
    client = Client(serve(stale_after=0))
    page = client.page("/")
    assert page.count('data-testid="banner"') == 2
    assert "Queue a1: the oldest due job has waited" in page
    for name in ("a3", "a4", "a5"):
        jq.add.apply_async((1, 1), queue=name)
    page = client.page("/")
    assert page.count('data-testid="banner"') == 1, page
    assert "5 queues (a1, a2, a3, …): due jobs have waited up to" in page
    assert "no live worker serves a1, a2, a3, a4, a5" in page


def test_actions_change_the_database_through_the_operations_and_are_logged(
    jq: Any, schema: str, conn: Any, serve: Any, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="jobqueue.dashboard")
    client = Client(serve())
    waiting = [jq.add.delay(i, i) for i in range(3)]  # no worker: they wait

    assert client.post("/queues/default/pause")[0] == 303
    assert conn.execute(f'SELECT count(*) FROM "{schema}".queue_pauses').fetchone() == (1,)
    assert 'data-testid="queue-paused"' in client.page("/")
    assert 'data-testid="queue-paused"' in client.page("/queues")
    client.post("/queues/default/resume")
    assert conn.execute(f'SELECT count(*) FROM "{schema}".queue_pauses').fetchone() == (0,)

    status, headers, _ = client.post(f"/jobs/{waiting[0].id}/cancel")
    assert status == 303 and headers["location"].endswith(f"/jobs/{waiting[0].id}")
    assert state(conn, schema, waiting[0].id) == "REVOKED"
    assert "cancelled" in client.page(f"/jobs/{waiting[0].id}")  # the flash
    client.post(f"/jobs/{waiting[0].id}/retry")
    assert state(conn, schema, waiting[0].id) == "PENDING"
    client.post(f"/jobs/{waiting[0].id}/cancel")
    client.post(f"/jobs/{waiting[0].id}/delete")
    assert state(conn, schema, waiting[0].id) is None
    # Deleting an unfinished job is refused with a message, nothing changed.
    client.post(f"/jobs/{waiting[1].id}/delete")
    assert state(conn, schema, waiting[1].id) == "PENDING"
    assert "Not done" in client.page(f"/jobs/{waiting[1].id}")

    # Bulk: the first POST states the count, the second does it.
    status, _, page = client.post("/jobs/cancel", {"state": "PENDING", "queue": "default"})
    assert status == 200 and 'data-testid="confirm-count" data-count="2"' in page
    assert 'data-testid="confirm"' in page
    assert state(conn, schema, waiting[1].id) == "PENDING"  # nothing yet
    client.post("/jobs/cancel", {"state": "PENDING", "queue": "default", "confirm": "2"})
    assert {state(conn, schema, j.id) for j in waiting[1:]} == {"REVOKED"}
    status, _, page = client.post("/jobs/retry", {"state": "REVOKED"})
    assert 'data-count="2"' in page
    client.post("/jobs/retry", {"state": "REVOKED", "confirm": "1"})
    assert {state(conn, schema, j.id) for j in waiting[1:]} == {"PENDING"}

    conn.execute(
        f'INSERT INTO "{schema}".schedules (name, task, args, interval_secs)'
        " VALUES ('nightly', 'add', '[20, 22]', 86400)"
    )
    client.post("/schedules/nightly/pause")
    assert conn.execute(f'SELECT enabled FROM "{schema}".schedules').fetchone() == (False,)
    assert 'data-testid="schedule-paused"' in client.page("/schedules")
    client.post("/schedules/nightly/resume")
    assert conn.execute(f'SELECT enabled FROM "{schema}".schedules').fetchone() == (True,)
    client.post("/schedules/nightly/run")
    row = conn.execute(
        f'SELECT j.task, j.args FROM "{schema}".schedule_ticks AS t'
        f' JOIN "{schema}".jobs AS j ON j.id = t.job_id'
    ).fetchone()
    assert row == ("add", [20, 22])
    client.post("/schedules/nope/run")
    assert "there is no schedule" in client.page("/schedules")

    client.post("/limits/add", {"rate": "10/m"})
    limit = conn.execute(
        f'SELECT rate_per_second, rate_set_by FROM "{schema}".task_limits WHERE task = %s', ("add",)
    ).fetchone()
    assert limit is not None and abs(limit[0] - 10 / 60) < 1e-9 and limit[1] == "dashboard:local"
    client.post("/limits/add", {"rate": "ten"})
    assert "bad rate" in client.page("/limits")
    client.post("/limits/add", {"rate": ""})
    assert conn.execute(
        f'SELECT rate_per_second FROM "{schema}".task_limits WHERE task = %s', ("add",)
    ).fetchone() == (None,)

    logged = [r.getMessage() for r in caplog.records if r.name == "jobqueue.dashboard"]
    assert "local: pause queue default: Queue default paused." in logged
    assert any(m.startswith(f"local: cancel job {waiting[0].id}") for m in logged)
    assert any(m.startswith("local: bulk retry of state REVOKED") for m in logged)
    assert any(m.startswith("local: run schedule nightly now") for m in logged)


def test_csrf_and_origin_are_checked_on_every_post(
    jq: Any, schema: str, conn: Any, serve: Any
) -> None:
    client = Client(serve())
    job = jq.add.delay(1, 2)
    client.get("/")
    assert client.post("/queues/default/pause", csrf=False)[0] == 403
    assert client.post("/queues/default/pause", {"csrf": "forged"}, csrf=False)[0] == 403
    status, _, _ = client.post(f"/jobs/{job.id}/cancel", origin="http://evil.example")
    assert status == 403
    stranger = Client(client.base)  # another browser: its own session, not this one's token
    stranger.get("/")
    stranger.csrf = client.csrf
    assert stranger.post("/queues/default/pause")[0] == 403
    assert conn.execute(f'SELECT count(*) FROM "{schema}".queue_pauses').fetchone() == (0,)
    assert state(conn, schema, job.id) == "PENDING"


def test_authentication_token_basic_and_login_form(
    jq: Any, schema: str, serve: Any, tmp_path: Any
) -> None:
    base = serve(auth=Auth(token=TOKEN, users={"alice": "correct horse"}))
    anonymous = Client(base)
    assert anonymous.get("/")[0] == 401  # curl: no Accept: text/html
    status, headers, _ = anonymous.get("/jobs?state=FAILURE", accept="text/html")
    assert status == 303 and "/login?next=" in headers["location"]
    assert anonymous.get("/healthz")[0] == 200
    assert anonymous.get("/static/style.css")[0] == 200

    assert Client(base, {"authorization": f"Bearer {TOKEN}"}).get("/")[0] == 200
    assert Client(base, {"authorization": "Bearer wrong-token-000000"}).get("/")[0] == 401
    basic = base64.b64encode(b"alice:correct horse").decode()
    assert Client(base, {"authorization": f"Basic {basic}"}).get("/")[0] == 200
    wrong = base64.b64encode(b"alice:wrong").decode()
    assert Client(base, {"authorization": f"Basic {wrong}"}).get("/")[0] == 401
    as_token = base64.b64encode(f"ops:{TOKEN}".encode()).decode()
    assert Client(base, {"authorization": f"Basic {as_token}"}).get("/")[0] == 200

    browser = Client(base)
    login = browser.page("/login")
    assert (
        'name="username"' in login and 'name="password"' in login and 'data-testid="login"' in login
    )
    status, _, page = browser.post("/login", {"username": "alice", "password": "nope"})
    assert status == 401 and "Wrong credentials" in page
    status, headers, _ = browser.post(
        "/login", {"username": "alice", "password": "correct horse", "next": "/queues"}
    )
    assert status == 303 and headers["location"] == "/queues"
    assert "alice" in browser.page("/queues")
    browser.get("/")
    browser.post("/logout")
    assert browser.get("/")[0] == 401

    token_user = Client(base)
    token_user.get("/login")
    token_user.post("/login", {"token": TOKEN})
    assert token_user.get("/")[0] == 200


def test_read_only_mode_with_a_select_only_role(
    jq: Any, dsn: str, schema: str, conn: Any, serve: Any
) -> None:
    job = jq.boom.delay("x")
    role = f"monitor_{secrets.token_hex(4)}"
    conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw'")
    try:
        grant(dsn, schema, monitor=role)
        params = psycopg.conninfo.conninfo_to_dict(dsn)
        role_dsn = psycopg.conninfo.make_conninfo(**{**params, "user": role, "password": "pw"})
        client = Client(serve(app_dsn=role_dsn, read_only=True))
        for path in ("/", "/partials/overview", "/jobs", f"/jobs/{job.id}", "/failures",
                     "/jobs?state=FAILURE", "/jobs?state=STARTED", "/jobs?state=PENDING",
                     "/jobs?exception=CustomError", "/failures?window=all",
                     "/workflows", "/schedules", "/workers", "/limits", "/queues"):  # fmt: skip
            page = client.page(path)
            assert 'data-testid="action-' not in page and "bulk-retry" not in page, path
        assert 'data-testid="read-only"' in client.page("/")
        status, _, _ = client.post("/queues/default/pause")
        assert status == 403
        assert client.post(f"/jobs/{job.id}/cancel")[0] == 403
        assert conn.execute(f'SELECT count(*) FROM "{schema}".queue_pauses').fetchone() == (0,)
        with psycopg.connect(role_dsn) as c, pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute(f'SELECT "{schema}".pause_queue(%s)', ("default",))
    finally:
        conn.execute(f'REVOKE ALL ON ALL TABLES IN SCHEMA "{schema}" FROM {role}')
        conn.execute(f'REVOKE ALL ON ALL FUNCTIONS IN SCHEMA "{schema}" FROM {role}')
        conn.execute(f'REVOKE ALL ON SCHEMA "{schema}" FROM {role}')
        conn.execute(f"DROP ROLE {role}")


def test_terminate_stops_a_running_job(
    jq: Any, schema: str, conn: Any, start_worker: Any, serve: Any
) -> None:
    start_worker("--concurrency", "2")
    job = jq.sleep.delay(60)
    wait_for(lambda: state(conn, schema, job.id) == "STARTED", 30, "the job to start")
    client = Client(serve())
    page = client.page(f"/jobs/{job.id}")
    assert re.search(r'data-testid="job-state">STARTED<', page)
    assert 'data-testid="action-terminate"' in page
    client.post(f"/jobs/{job.id}/cancel", {"terminate": "1"})
    wait_for(lambda: state(conn, schema, job.id) == "REVOKED", 30, "the job to be terminated")


def dashboard_cli(
    dsn: str, schema: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    environ = {
        k: v for k, v in os.environ.items() if k not in ("JOBQUEUE_DSN", "JOBQUEUE_DASHBOARD_TOKEN")
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobqueue",
            "-A",
            "tests.apps:app",
            "--dsn",
            dsn,
            "--schema",
            schema,
            "dashboard",
            *args,
        ],
        cwd=ROOT,
        env={**environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_cli_refuses_a_public_address_without_authentication(dsn: str, schema: str) -> None:
    proc = dashboard_cli(dsn, schema, "--host", "0.0.0.0", "--port", str(free_port()))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "--insecure-no-auth" in out


def test_cli_serves_with_a_token(dsn: str, schema: str) -> None:
    port = free_port()
    proc = dashboard_cli(
        dsn,
        schema,
        "--host",
        "0.0.0.0",
        "--port",
        str(port),
        env={"JOBQUEUE_DASHBOARD_TOKEN": TOKEN},
    )
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(proc.stdout.read() if proc.stdout else "exited")
            try:
                return Client(base).get("/healthz")[0] == 200
            except OSError:
                return False

        wait_for(up, 30, "the dashboard to listen")
        assert Client(base).get("/")[0] == 401
        assert Client(base, {"authorization": f"Bearer {TOKEN}"}).get("/")[0] == 200
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert TOKEN not in out  # never logged
    assert "login: token" in out
