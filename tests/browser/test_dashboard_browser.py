"""The dashboard (issue 22) used as a person uses it: Debian's Chromium,
headless, driven by Playwright, against a real ``jobqueue dashboard`` server
and a real worker process on a real PostgreSQL.

One module, one schema, one worker and one server for all scenarios (starting
them is most of the time); each scenario uses queues, tasks or arguments of
its own so that none sees another's jobs. Every page a test opens is watched:
a JavaScript error or a dialog (an ``alert()`` smuggled in through a job's
arguments) fails the test.

Skips, saying why, when Playwright or Chromium is missing: ``.ci/run``
installs Chromium (``apt-get install chromium``) and ``pip install -e
'.[test]'`` installs Playwright. Playwright's own browser download is never
used: $JOBQUEUE_CHROMIUM, else /usr/bin/chromium.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import psycopg
import pytest

from jobqueue import JobQueue, chord, migrate, states
from tests.apps import build
from tests.conftest import ROOT, WorkerProcess, wait_for

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:
    pytest.skip("playwright is not installed (pip install -e '.[test]')", allow_module_level=True)

CHROMIUM = os.environ.get("JOBQUEUE_CHROMIUM", "/usr/bin/chromium")
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(
        f"no Chromium at {CHROMIUM} (apt-get install chromium, or set $JOBQUEUE_CHROMIUM)",
        allow_module_level=True,
    )

TOKEN = "browser-test-" + secrets.token_hex(8)
# Every queue a scenario uses: the worker serves them all.
QUEUES = "default,watched,held,other,slow"
expect.set_options(timeout=15_000)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Dashboard:
    """``jobqueue dashboard`` in a subprocess on a free port, as a user runs it."""

    def __init__(
        self, dsn: str, schema: str, log_path: Path, *args: str, host: str = "127.0.0.1",
        env: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.log_file = log_path.open("wb")
        environ = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
        environ.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jobqueue", "-A", "tests.apps:app", "--dsn", dsn,
             "--schema", schema, "dashboard", "--host", host, "--port", str(self.port), *args],
            cwd=ROOT, env=environ, stdout=self.log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> None:
        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"the dashboard exited early:\n{self.log}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as response:
                    return bool(response.status == 200)
            except (urllib.error.URLError, ConnectionError):
                return False

        wait_for(healthy, timeout, "the dashboard to answer /healthz")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log_file.close()


@dataclass
class Seen:
    """What the browser did besides rendering: dialogs opened, script errors."""

    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


# -- the rig: one schema, worker, servers and browser for the module ---------


@pytest.fixture(scope="module")
def board_schema(database_dsn: str) -> str:
    name = f"dash_{secrets.token_hex(4)}"
    migrate.upgrade(database_dsn, name)
    return name


@pytest.fixture(scope="module")
def db(database_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_dsn, autocommit=True) as c:
        yield c


@pytest.fixture(scope="module")
def tasks(database_dsn: str, board_schema: str) -> Iterator[SimpleNamespace]:
    app = JobQueue(database_dsn, schema=board_schema, auto_migrate=False)
    yield build(app)
    app.close()


@pytest.fixture(scope="module")
def worker(
    database_dsn: str, board_schema: str, db: psycopg.Connection[Any], tmp_path_factory: Any
) -> Iterator[WorkerProcess]:
    log = tmp_path_factory.mktemp("browser") / "worker.log"
    proc = WorkerProcess(
        database_dsn, board_schema, ["--queues", QUEUES, "--concurrency", "4"], log
    )
    try:
        proc.wait_ready(db)
        yield proc
    finally:
        if proc.proc.poll() is None:
            try:
                proc.terminate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _serve(
    dsn: str, schema: str, tmp_path_factory: Any, name: str, *args: str, **kw: Any
) -> Iterator[Dashboard]:
    server = Dashboard(dsn, schema, tmp_path_factory.mktemp("browser") / f"{name}.log", *args, **kw)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def dashboard(database_dsn: str, board_schema: str, tmp_path_factory: Any) -> Iterator[Dashboard]:
    """On 127.0.0.1: no login asked."""
    yield from _serve(database_dsn, board_schema, tmp_path_factory, "dashboard")


@pytest.fixture(scope="module")
def guarded(database_dsn: str, board_schema: str, tmp_path_factory: Any) -> Iterator[Dashboard]:
    """On every interface, hence behind a login (the token)."""
    yield from _serve(
        database_dsn, board_schema, tmp_path_factory, "guarded", host="0.0.0.0",
        env={"JOBQUEUE_DASHBOARD_TOKEN": TOKEN},
    )  # fmt: skip


@pytest.fixture(scope="module")
def readonly(database_dsn: str, board_schema: str, tmp_path_factory: Any) -> Iterator[Dashboard]:
    yield from _serve(database_dsn, board_schema, tmp_path_factory, "readonly", "--read-only")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def seen() -> Seen:
    return Seen()


def _open(browser: Browser, base_url: str, seen: Seen) -> Iterator[Page]:
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 800})
    page = context.new_page()

    def on_dialog(dialog: Any) -> None:
        seen.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda error: seen.errors.append(str(error)))
    try:
        yield page
    finally:
        context.close()
    assert seen.dialogs == [], f"a dialog opened: {seen.dialogs}"
    assert seen.errors == [], f"script errors on the page: {seen.errors}"


@pytest.fixture
def page(
    browser: Browser, dashboard: Dashboard, worker: WorkerProcess, seen: Seen
) -> Iterator[Page]:
    """A fresh browser tab (1280x800) on the open dashboard, the worker running."""
    yield from _open(browser, dashboard.url, seen)


@pytest.fixture
def readonly_page(
    browser: Browser, readonly: Dashboard, worker: WorkerProcess, seen: Seen
) -> Iterator[Page]:
    yield from _open(browser, readonly.url, seen)


@pytest.fixture
def guarded_page(browser: Browser, guarded: Dashboard, seen: Seen) -> Iterator[Page]:
    yield from _open(browser, guarded.url, seen)


# -- helpers -----------------------------------------------------------------


def eventually(page: Page, check: Callable[[], None], timeout: float = 30.0) -> None:
    """``check`` (expectations with short timeouts) until it passes, reloading
    the page between tries: for what a person sees by pressing F5."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            check()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            page.reload()


def cli(dsn: str, schema: str, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
    return subprocess.run(
        [sys.executable, "-m", "jobqueue", "-A", "tests.apps:app", "--dsn", dsn, "--schema",
         schema, *args],
        cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def job_row(db: psycopg.Connection[Any], schema: str, job_id: str) -> tuple[str, int]:
    row = db.execute(
        f'SELECT state, attempts FROM "{schema}".all_jobs WHERE id = %s', (job_id,)
    ).fetchone()
    assert row is not None, f"no job {job_id}"
    return str(row[0]), int(row[1])


def paused(db: psycopg.Connection[Any], schema: str, queue: str) -> bool:
    row = db.execute(
        f'SELECT count(*) FROM "{schema}".queue_pauses WHERE queue = %s', (queue,)
    ).fetchone()
    return bool(row and row[0])


def state_is(page: Page, state: str, timeout: float = 1_000) -> Callable[[], None]:
    return lambda: expect(page.get_by_test_id("job-state")).to_have_text(state, timeout=timeout)


# -- scenarios ---------------------------------------------------------------


def test_the_overview_shows_a_job_enqueued_meanwhile_running_then_done(
    page: Page, tasks: SimpleNamespace
) -> None:
    page.goto("/")
    row = page.get_by_test_id("queue-watched")
    expect(row).to_have_count(0)  # nothing ever ran there
    job = tasks.sleep.apply_async((4,), queue="watched")
    # The overview refreshes itself every 3 s (htmx, GET /partials/overview):
    # no reload. The job runs 4 s, so one refresh sees it running.
    running = row.get_by_test_id("queue-running")
    expect(running).to_have_text("1")
    expect(running).to_have_text("0", timeout=20_000)
    assert job.get(timeout=5) == 4
    # From the queue to its jobs, then to the job itself.
    row.get_by_role("link", name="watched").click()
    expect(page).to_have_url(re.compile(r"/jobs\?queue=watched$"))
    listed = page.get_by_test_id(f"job-{job.id}")
    expect(listed).to_contain_text(states.SUCCESS)
    listed.get_by_role("link").first.click()
    expect(page).to_have_url(re.compile(f"/jobs/{job.id}$"))
    expect(page.get_by_test_id("job-state")).to_have_text(states.SUCCESS)
    expect(page.get_by_test_id("job-result")).to_have_text("4")


def test_a_failed_job_shows_its_traceback_and_a_retry_runs_it_again(
    page: Page, tasks: SimpleNamespace, db: psycopg.Connection[Any], board_schema: str
) -> None:
    message = f"kaput-{secrets.token_hex(3)}"
    job = tasks.boom.delay(message)
    assert isinstance(job.get(timeout=30, propagate=False), Exception)
    # Failures, grouped by task and exception; its link lists them.
    page.goto("/failures")
    group = page.locator("[data-testid^='failure-boom-']")
    expect(group).to_contain_text("CustomError")
    group.get_by_role("link", name=re.compile("CustomError")).click()
    expect(page).to_have_url(re.compile(r"/jobs\?state=FAILURE&task=boom&exception="))
    page.get_by_test_id(f"job-{job.id}").get_by_role("link").first.click()
    expect(page).to_have_url(re.compile(f"/jobs/{job.id}$"))
    expect(page.get_by_test_id("job-state")).to_have_text(states.FAILURE)
    traceback = page.get_by_test_id("traceback")
    expect(traceback).to_contain_text("Traceback (most recent call last)")
    expect(traceback).to_contain_text("raise CustomError(message)")  # tests/apps.py
    expect(traceback).to_contain_text(f"CustomError: {message}")
    # The error comes first, above the fold at 1280x800; short arguments on one line.
    expect(page.get_by_text(f"CustomError: {message}").first).to_be_in_viewport()
    expect(page.get_by_test_id("job-args")).to_have_text(f'["{message}"]')

    page.get_by_test_id("action-retry").click()
    expect(page.get_by_test_id("flash")).to_be_visible()
    # The worker runs it again; it fails again, its second attempt.
    wait_for(lambda: job_row(db, board_schema, job.id) == (states.FAILURE, 2), 30, "the re-run")
    page.goto(f"/jobs/{job.id}")
    expect(page.get_by_test_id("job-state")).to_have_text(states.FAILURE)
    expect(page.get_by_test_id("attempts").locator("tbody tr")).to_have_count(2)
    expect(page.get_by_test_id("traceback")).to_contain_text(f"CustomError: {message}")


def test_with_javascript_off_every_page_reads_and_a_form_still_acts(
    browser: Browser,
    dashboard: Dashboard,
    worker: WorkerProcess,
    tasks: SimpleNamespace,
    db: psycopg.Connection[Any],
    board_schema: str,
) -> None:
    """Reading needs no JavaScript (server-rendered pages; htmx only
    refreshes the overview), and the actions are plain forms."""
    job = tasks.boom.delay("no-js")
    assert isinstance(job.get(timeout=30, propagate=False), Exception)
    context = browser.new_context(
        base_url=dashboard.url, java_script_enabled=False, viewport={"width": 1280, "height": 800}
    )
    try:
        page = context.new_page()
        page.goto("/")
        expect(page.get_by_test_id("queue-default")).to_be_visible()
        page.goto(f"/jobs?task=boom&state={states.FAILURE}")
        page.get_by_test_id(f"job-{job.id}").get_by_role("link").first.click()
        expect(page.get_by_test_id("job-state")).to_have_text(states.FAILURE)
        expect(page.get_by_test_id("traceback")).to_contain_text("CustomError: no-js")
        for path in ("/failures", "/workflows", "/schedules", "/workers", "/limits", "/queues"):
            page.goto(path)
            expect(page.locator("h1")).to_be_visible()
        page.goto(f"/jobs/{job.id}")
        page.get_by_test_id("action-retry").click()  # a form post, no script
        expect(page.get_by_test_id("flash")).to_be_visible()
        wait_for(lambda: job_row(db, board_schema, job.id)[1] == 2, 30, "the re-run")
    finally:
        context.close()


def test_a_paused_queue_keeps_its_jobs_waiting_until_resumed(
    page: Page, tasks: SimpleNamespace, db: psycopg.Connection[Any], board_schema: str
) -> None:
    assert tasks.add.apply_async((0, 0), queue="held").get(timeout=30) == 0  # a known queue
    page.goto("/queues")
    row = page.get_by_test_id("queue-held")
    expect(row.get_by_test_id("queue-paused")).to_have_count(0)
    row.get_by_test_id("action-pause").click()
    expect(page.get_by_test_id("flash")).to_be_visible()
    expect(page.get_by_test_id("queue-held").get_by_test_id("queue-paused")).to_be_visible()
    assert paused(db, board_schema, "held")

    held = tasks.add.apply_async((2, 3), queue="held")
    other = tasks.add.apply_async((4, 5), queue="other")
    # One claim statement serves both queues: once the later job of `other`
    # ran, the worker has passed over the paused queue's job.
    assert other.get(timeout=30) == 9
    page.goto(f"/jobs/{held.id}")
    expect(page.get_by_test_id("job-state")).to_have_text(states.PENDING)
    assert held.state == states.PENDING

    page.goto("/queues")
    page.get_by_test_id("queue-held").get_by_test_id("action-resume").click()
    expect(page.get_by_test_id("queue-held").get_by_test_id("queue-paused")).to_have_count(0)
    assert held.get(timeout=30) == 5
    page.goto(f"/jobs/{held.id}")
    expect(page.get_by_test_id("job-state")).to_have_text(states.SUCCESS)


def test_terminating_a_running_job_stops_it(page: Page, tasks: SimpleNamespace) -> None:
    job = tasks.ticking.apply_async((120,), queue="slow")
    wait_for(lambda: job.state == states.STARTED, 30, "the job to start")
    page.goto(f"/jobs/{job.id}")
    expect(page.get_by_test_id("job-state")).to_have_text(states.STARTED)
    page.get_by_test_id("action-terminate").click()
    expect(page.get_by_test_id("flash")).to_be_visible()
    with pytest.raises(Exception, match="revoked"):
        job.get(timeout=30)
    eventually(page, state_is(page, states.REVOKED))
    expect(page.get_by_test_id("action-terminate")).to_have_count(0)  # nothing left to stop
    expect(page.get_by_test_id("action-retry")).to_be_visible()


def test_bulk_retry_states_the_count_and_waits_for_confirmation(
    page: Page, tasks: SimpleNamespace, db: psycopg.Connection[Any], board_schema: str
) -> None:
    marker = f"bulk-{secrets.token_hex(3)}"
    failed = [tasks.boom.delay(marker) for _ in range(3)]
    for job in failed:
        assert isinstance(job.get(timeout=30, propagate=False), Exception)
    # A person filters with the form, as typed.
    page.goto("/jobs")
    filters = page.get_by_test_id("filters")
    filters.locator("select[name=state]").select_option("FAILURE")
    filters.locator("input[name=task]").fill("boom")
    filters.locator("input[name=args]").fill(f'["{marker}"]')
    filters.get_by_role("button", name="Filter").click()
    expect(page.locator("tbody tr[data-testid^='job-']")).to_have_count(3)
    for job in failed:
        expect(page.get_by_test_id(f"job-{job.id}")).to_be_visible()

    page.get_by_test_id("bulk-retry").click()
    # The first POST only counts: nothing is retried until confirmed.
    expect(page.get_by_test_id("confirm-count")).to_have_attribute("data-count", "3")
    assert {job_row(db, board_schema, j.id) for j in failed} == {(states.FAILURE, 1)}
    page.get_by_test_id("confirm").click()
    expect(page.get_by_test_id("flash")).to_contain_text("3")
    wait_for(
        lambda: {job_row(db, board_schema, j.id) for j in failed} == {(states.FAILURE, 2)},
        30,
        "the three re-runs",
    )


def test_markup_in_arguments_and_errors_is_shown_as_text(
    page: Page, seen: Seen, tasks: SimpleNamespace
) -> None:
    script = "<script>alert(1)</script>"
    image = "<img src=x onerror=alert(2)>"
    echoed = tasks.echo.delay(script, note=image)
    assert echoed.get(timeout=30) == {"args": [script], "kwargs": {"note": image}}
    failed = tasks.boom.delay(f"<script>alert(3)</script>{image}")
    assert isinstance(failed.get(timeout=30, propagate=False), Exception)

    page.goto(f"/jobs/{echoed.id}")
    arguments = page.get_by_test_id("job-args")
    expect(arguments).to_contain_text(script)
    expect(arguments).to_contain_text(image)
    expect(page.get_by_test_id("job-result")).to_contain_text(script)
    page.goto(f"/jobs/{failed.id}")
    expect(page.get_by_test_id("traceback")).to_contain_text("<script>alert(3)</script>")
    page.goto(f"/jobs?task=echo&args={quote(json.dumps([script]))}")
    expect(page.get_by_test_id(f"job-{echoed.id}")).to_contain_text(script)
    for path in ("/jobs?task=boom", "/failures", "/"):
        page.goto(path)
        page.wait_for_load_state("networkidle")
    # Shown as text, never as markup: no element came from the job.
    expect(page.locator("main script, main img")).to_have_count(0)
    assert seen.dialogs == []


def test_a_workflow_in_progress_shows_its_chord_waiting_on_a_running_job(
    page: Page, tasks: SimpleNamespace, db: psycopg.Connection[Any], board_schema: str
) -> None:
    header = [tasks.add.s(1, 1), tasks.add.s(2, 2), tasks.ticking.s(119).set(queue="slow")]
    chord(header)(tasks.echo.s())
    found = db.execute(
        f'SELECT id, root_id FROM "{board_schema}".jobs WHERE task = %s AND args = %s',
        ("ticking", "[119]"),
    ).fetchone()
    assert found is not None, "the chord's slow header job was not recorded"
    slow, root = found
    wait_for(lambda: job_row(db, board_schema, str(slow))[0] == states.STARTED, 30, "the slow one")

    page.goto("/workflows")
    row = page.get_by_test_id(f"workflow-{root}")
    expect(row).to_contain_text("in progress")
    expect(row.locator("td").nth(1)).to_have_text("add")  # a chord's root is no job: its first
    row.get_by_role("link").first.click()
    expect(page).to_have_url(re.compile(f"/workflows/{root}$"))
    chord_row = page.locator('tr[data-testid^="chord-"]')
    expect(chord_row.get_by_test_id("chord-to-go")).to_have_text("1")  # waits on one job
    expect(chord_row.get_by_test_id("chord-callback")).to_contain_text("PENDING")
    expect(chord_row.get_by_test_id("chord-callback")).to_contain_text("echo")
    expect(page.get_by_text("chord header")).to_have_count(3)  # each member says it, no count
    node = page.get_by_test_id(f"node-{slow}")
    expect(node.locator(".state").first).to_have_text(states.STARTED)
    # The person stops the slow one from there: the chord's body fails.
    node.get_by_role("link").first.click()
    page.get_by_test_id("action-terminate").click()
    wait_for(lambda: job_row(db, board_schema, str(slow))[0] == states.REVOKED, 30, "the revoke")
    page.goto(f"/workflows/{root}")
    expect(page.get_by_test_id(f"node-{slow}").locator(".state").first).to_have_text(states.REVOKED)
    expect(page.locator('tr[data-testid^="chord-"]').locator(".state").first).to_have_text("FAILED")


def test_a_schedule_runs_now_and_pauses_from_its_page(
    page: Page, database_dsn: str, db: psycopg.Connection[Any], board_schema: str
) -> None:
    done = cli(database_dsn, board_schema, "schedule", "add", "hourly-sum", "--task", "add",
               "--every", "3600", "--args", "[20, 22]")  # fmt: skip
    assert done.returncode == 0, done
    page.goto("/schedules")
    row = page.get_by_test_id("schedule-hourly-sum")
    expect(row).to_contain_text("add")
    row.get_by_test_id("action-run").click()
    expect(page.get_by_test_id("flash")).to_be_visible()
    ran = f'SELECT state FROM "{board_schema}".all_jobs WHERE task = %s AND args = %s::jsonb'
    wait_for(
        lambda: db.execute(ran, ("add", "[20, 22]")).fetchall() == [(states.SUCCESS,)],
        30,
        "the schedule's job to run",
    )
    page.get_by_test_id("schedule-hourly-sum").get_by_test_id("action-pause").click()
    expect(
        page.get_by_test_id("schedule-hourly-sum").get_by_test_id("schedule-paused")
    ).to_be_visible()
    enabled = db.execute(
        f'SELECT enabled FROM "{board_schema}".schedules WHERE name = %s', ("hourly-sum",)
    ).fetchone()
    assert enabled == (False,)


def test_a_rate_limit_set_from_the_limits_page_is_stored(
    page: Page, db: psycopg.Connection[Any], board_schema: str
) -> None:
    page.goto("/limits")
    row = page.get_by_test_id("limit-rate_limited")  # declared in code: 10/s
    expect(row).to_contain_text("10")
    row.locator("input[name=rate]").fill("2/s")
    row.get_by_test_id("action-limit").click()
    expect(page.get_by_test_id("flash")).to_be_visible()
    stored = f'SELECT rate_per_second FROM "{board_schema}".task_limits WHERE task = %s'
    assert db.execute(stored, ("rate_limited",)).fetchone() == (2.0,)
    page.get_by_test_id("limit-rate_limited").get_by_test_id("action-reset").click()
    expect(page.get_by_test_id("limit-rate_limited").get_by_test_id("action-reset")).to_have_count(
        0
    )
    assert db.execute(stored, ("rate_limited",)).fetchone() == (10.0,)


def test_a_read_only_dashboard_shows_no_action(readonly_page: Page, tasks: SimpleNamespace) -> None:
    page = readonly_page
    failed = tasks.boom.delay("read me")
    assert isinstance(failed.get(timeout=30, propagate=False), Exception)
    page.goto(f"/jobs/{failed.id}")
    expect(page.get_by_test_id("read-only")).to_be_visible()
    expect(page.get_by_test_id("traceback")).to_contain_text("read me")
    page.goto("/jobs?task=boom")
    expect(page.get_by_test_id(f"job-{failed.id}")).to_be_visible()
    for path in (f"/jobs/{failed.id}", "/jobs?task=boom", "/", "/queues", "/schedules", "/limits"):
        page.goto(path)
        expect(page.get_by_test_id("read-only")).to_be_visible()
        expect(page.locator("main form[method=post]")).to_have_count(0)


def test_a_dashboard_on_every_interface_asks_for_a_login(
    guarded_page: Page, guarded: Dashboard, db: psycopg.Connection[Any], board_schema: str
) -> None:
    page = guarded_page
    # Refused without logging in: a page leads to the login form...
    page.goto("/jobs?state=FAILURE")
    expect(page).to_have_url(re.compile("/login"))
    expect(page.get_by_test_id("login")).to_be_visible()
    # ...and an action by plain HTTP is refused and changes nothing.
    response = page.request.post(guarded.url + "/queues/default/pause", max_redirects=0)
    assert response.status == 401, response.status
    assert not paused(db, board_schema, "default")

    page.locator("[name=token]").fill("not-the-token")
    page.get_by_test_id("login").click()
    expect(page.get_by_test_id("login-error")).to_be_visible()

    page.locator("[name=token]").fill(TOKEN)
    page.get_by_test_id("login").click()
    # Logged in, back where it was going.
    expect(page).to_have_url(re.compile(r"/jobs\?state=FAILURE$"))
    expect(page.get_by_test_id("filters")).to_be_visible()
    # Logged in, a POST still needs the page's CSRF token.
    response = page.request.post(guarded.url + "/queues/default/pause", max_redirects=0)
    assert response.status == 403, response.status
    assert not paused(db, board_schema, "default")

    page.get_by_test_id("logout").click()
    page.goto("/")
    expect(page.get_by_test_id("login")).to_be_visible()


def test_on_every_interface_without_a_token_the_dashboard_refuses_to_start(
    database_dsn: str, board_schema: str
) -> None:
    done = cli(database_dsn, board_schema, "dashboard", "--host", "0.0.0.0", "--port",
               str(free_port()))  # fmt: skip
    assert done.returncode == 2, done  # a usage error
    assert "JOBQUEUE_DASHBOARD_TOKEN" in done.stderr
