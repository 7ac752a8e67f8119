"""The dashboard (issue 22): page times over a large history, and the screenshots.

    python -m benchmarks.dashboard --dsn postgresql://.../postgres \\
        [--jobs 10000000] [--waiting 100000] [--requests 20]
    python -m benchmarks.dashboard --dsn postgresql://.../postgres --screenshots docs/screenshots \\
        [--minutes 5]

Both run on a database of their own, created and dropped here.

Page times: a schema holding ``--jobs`` finished jobs (benchmarks.history's
loader, varied: 20 queues, 100 tasks, an argument each, 2 % failures with a
traceback, each failure's attempt in job_attempts as a worker records it;
half in a day ten days ago, a quarter in each of the last two days) and a
live state: ``--waiting`` jobs enqueued by ``enqueue_many`` over the same
queues and tasks, 200 of them claimed by one of 50 registered workers, 20
schedules, 10 task limits, 2 paused queues, 20 chords waiting. Then
``jobqueue dashboard`` in a subprocess, and every page over HTTP on one
keep-alive connection, as a browser asks for it: 3 warm-up rounds, then
``--requests`` rounds of every page in turn (the machine's noise falls on all
pages alike). The table gives p50, p95 and the largest time of each page, in
ms, with the size of its answer and the rows it showed.

Screenshots: a small, lifelike history made by two real workers (web-1 with
the beat, reports-1) running the tasks below while the dashboard samples its
charts: ``--minutes`` (5) of orders, a wave every 10 s (receipts sent, cards
charged and one in seven declined, images resized, one too wide), then a
ledger sync waiting for its retry, a report's chord half done and a paused
queue; then each main page in Chromium at 1280x800, saved as PNG
(docs/dashboard.md shows them).

Run it on a stock server (autovacuum on), not on a tuned or shared one; for a
quick run, the embedded server will do:
``python -c "from jobqueue import embedded; print(embedded.start('/tmp/bench-pg'))"``.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.history import DAY, bench_database, day_start, one, prepare, wait
from jobqueue import JobQueue, Signature, chord, migrate
from jobqueue.schedules import crontab

ROOT = Path(__file__).resolve().parent.parent
REVISION = int(migrate.head_revision())


# -- the screenshots' app (-A benchmarks.dashboard:app): a small shop ---------

app = JobQueue(
    beat_schedule={
        "receipts-digest": {"task": "emails.send_digest", "schedule": 300.0},
        "nightly-ledger-sync": {
            "task": "billing.sync_ledger",
            "schedule": crontab(hour=2, minute=0),
        },
    },
)


class CardDeclined(Exception):
    """The payment provider said no."""


@app.task(name="emails.send_receipt")
def send_receipt(order_id: int, email: str) -> str:
    time.sleep(0.02)
    return f"receipt for order {order_id} sent to {email}"


@app.task(name="emails.send_digest")
def send_digest() -> int:
    return 12


@app.task(name="billing.charge_card", rate_limit="20/s")
def charge_card(order_id: int, amount_cents: int) -> dict[str, int]:
    if order_id % 7 == 0:
        raise CardDeclined(f"order {order_id}: card ending 4242 declined (insufficient funds)")
    return {"order_id": order_id, "charged_cents": amount_cents}


@app.task(
    name="billing.sync_ledger", autoretry_for=(ConnectionError,), max_retries=5,
    default_retry_delay=600, retry_jitter=False,
)  # fmt: skip
def sync_ledger() -> None:
    raise ConnectionError("ledger.internal:443: connection refused")


@app.task(name="images.resize")
def resize(path: str, width: int) -> str:
    if width > 4000:
        raise ValueError(f"{path}: width {width} px is over the 4000 px limit")
    return path.replace(".jpg", f"-{width}.jpg")


@app.task(name="reports.render_section")
def render_section(report: str, section: int, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:  # checkpoints: a terminate lands between them
        time.sleep(0.05)
    return f"{report}/section-{section}.html"


@app.task(name="reports.assemble")
def assemble(sections: list[str], report: str) -> str:
    return f"{report}.pdf ({len(sections)} sections)"


# -- servers -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _environ() -> dict[str, str]:
    # The DSN and schema come from the command line only.
    return {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}


@contextmanager
def dashboard(dsn: str, schema: str, *args: str) -> Iterator[str]:
    """``jobqueue dashboard`` on 127.0.0.1 (no login): its base URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobqueue", "-A", "benchmarks.dashboard:app", "--dsn", dsn,
         "--schema", schema, "dashboard", "--host", "127.0.0.1", "--port", str(port), *args],
        cwd=ROOT, env=_environ(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip

    def healthy() -> bool:
        if proc.poll() is not None:
            error = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"the dashboard exited: {error}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError):
            return False

    try:
        wait(healthy, 60)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def _worker(dsn: str, schema: str, name: str, queues: str, *extra: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "jobqueue", "-A", "benchmarks.dashboard:app", "--dsn", dsn,
               "--schema", schema, "worker", "--hostname", name, "--queues", queues,
               "--concurrency", "4", "--loglevel", "warning", *extra]  # fmt: skip
    return subprocess.Popen(
        command, cwd=ROOT, env=_environ(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


@contextmanager
def workers(dsn: str, schema: str) -> Iterator[None]:
    """Two workers of the shop: web-1 (with the beat) and reports-1."""
    procs = [
        _worker(dsn, schema, "web-1", "default,emails,billing,images", "--beat"),
        _worker(dsn, schema, "reports-1", "reports,images"),
    ]
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            wait(lambda: one(conn, f'SELECT count(*) FROM "{schema}".workers') == 2, 60)
        yield
    finally:
        for proc in procs:
            proc.kill()  # jobs of the report run on: no warm shutdown
            proc.wait(30)


# -- page times --------------------------------------------------------------


def uuid_at(seconds: float) -> str:
    """The smallest UUIDv7 of a moment: a key into history by time."""
    ms = f"{int(seconds * 1000):012x}"
    return f"{ms[:8]}-{ms[8:]}-7000-8000-000000000000"


def failed_attempts(dsn: str, schema: str) -> None:
    """Each loaded failure's attempt in job_attempts, as a worker's completion
    records it (the history loader writes the jobs only): /failures reads
    failures from there."""
    s = f'"{schema}"'
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {s}.job_attempts (job_id, attempt, worker_id, started_at, finished_at, "
            f"state, error) SELECT id, attempts, worker_id, started_at, finished_at, state, error "
            f"FROM {s}.jobs WHERE state = 'FAILURE'"
        )
        conn.execute(f"VACUUM ANALYZE {s}.job_attempts")


def live_state(dsn: str, schema: str, waiting: int) -> dict[str, str]:
    """The live part (see the module's docstring); returns the ids pages need."""
    shop = JobQueue(dsn, schema=schema, auto_migrate=False)
    s = f'"{schema}"'
    try:
        # In chunks of 500 that take turns over the queues, as a backlog grows;
        # the tasks of a queue as in the history (task<n> on q<n % 20>).
        for chunk, first in enumerate(range(0, waiting, 500)):
            q, t = chunk % 20, chunk // 20 % 5
            items = [(i,) for i in range(first, min(first + 500, waiting))]
            shop.enqueue_many(f"task{q + 20 * t}", items, queue=f"q{q}")
        for i in range(20):
            header = [Signature(f"task{i}", (i, part), app=shop) for part in range(5)]
            chord(header, app=shop)(Signature("task1", app=shop))
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                f"INSERT INTO {s}.workers (id, hostname, pid, queues, concurrency, version, "
                "lease_expires_at, tasks, pool) SELECT gen_random_uuid(), 'host' || g, g, "
                "ARRAY['q' || (g % 20), 'q' || ((g + 1) % 20)], 8, '0.1.0', "
                "now() + interval '1 day', NULL, 'threads' FROM generate_series(1, 50) AS g"
            )
            worker_id = str(one(conn, f"SELECT id FROM {s}.workers ORDER BY hostname LIMIT 1"))
            shop.store.hot_session(conn)
            claimed = shop.store.claim(conn, [f"q{q}" for q in range(20)], 200, worker_id, REVISION)
            assert len(claimed) == 200, len(claimed)
            conn.execute(
                f"INSERT INTO {s}.schedules (name, task, interval_secs, next_run_at) "
                "SELECT 'every' || g, 'task' || g, 60 * g, now() + interval '30 seconds' "
                "FROM generate_series(1, 20) AS g"
            )
            conn.execute(
                f"INSERT INTO {s}.task_limits (task, rate_per_second, burst, concurrency_limit) "
                "SELECT 'task' || g, CASE WHEN g % 2 = 0 THEN 10 * g END, 1, "
                "CASE WHEN g % 2 = 1 THEN g END FROM generate_series(1, 10) AS g"
            )
            shop.control.pause_queue("q18", reason="benchmark")
            shop.control.pause_queue("q19")
            conn.execute(f"VACUUM ANALYZE {s}.job_queue, {s}.job_lease, {s}.workers")
            # A failure deep in history (the day ten days ago, at its middle).
            deep = uuid_at(day_start(-10) + DAY / 2)
            rows = conn.execute(
                f"SELECT id, state FROM {s}.jobs WHERE id >= %s ORDER BY id LIMIT 500", (deep,)
            ).fetchall()
            root = one(conn, f"SELECT max(root_id::text) FROM {s}.jobs WHERE root_id IS NOT NULL")
        failure = next(str(i) for i, state in rows if state == "FAILURE")
        return {"failure": failure, "deep": deep, "root": str(root)}
    finally:
        shop.close()


def pages(ids: dict[str, str]) -> list[str]:
    hour_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
    days_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(day_start(-1)))
    filters = [
        "state=PENDING", "state=STARTED", "state=SUCCESS", "state=FAILURE", "state=REVOKED",
        "queue=q7", "task=task42", "task=no.such.task", "exception=KeyError",
        f"since={hour_ago}", f"until={days_ago}", "args=[4242]",
        "state=FAILURE&queue=q3&exception=ValueError",
    ]  # fmt: skip
    return [
        "/", "/partials/overview", "/jobs",
        *[f"/jobs?{urllib.parse.quote(f, safe='=&')}" for f in filters],
        f"/jobs?after={urllib.parse.quote(ids['cursor'])}",
        f"/jobs/{ids['failure']}", "/failures", "/failures?window=7d", "/failures?window=all",
        "/workflows", f"/workflows/{ids['root']}",
        "/schedules", "/workers", "/limits", "/queues",
    ]  # fmt: skip


def deep_cursor(url: str, deep: str) -> str:
    """A cursor into the middle of history. The dashboard's cursor is opaque
    to us: read the next-page link of /jobs and put the deep id in place of
    the last job's id in it."""
    with urllib.request.urlopen(url + "/jobs", timeout=60) as response:
        body = response.read().decode()
    found = re.search(r'href="[^"]*[?&;]after=([^"&]+)', body)
    if not found:
        raise RuntimeError("no next-page link (…after=…) on /jobs")
    cursor = urllib.parse.unquote(found.group(1).replace("&amp;", "&"))
    uuid = re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", cursor)
    if not uuid:
        raise RuntimeError(f"a cursor with no job id in it: {cursor!r}")
    return cursor.replace(uuid.group(0), deep)


# A row of a page's table (jobs, failures, workflows, queues, workers, ...),
# or a node of a workflow's tree: what the page showed.
ROW = re.compile(rb'<(?:tr|li) data-testid="')


def time_pages(url: str, paths: list[str], rounds: int, warm: int = 3) -> dict[str, Any]:
    parsed = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port, timeout=300)
    times: dict[str, list[float]] = {p: [] for p in paths}
    sizes: dict[str, int] = {}
    shown: dict[str, int] = {}
    status: dict[str, int] = {}
    try:
        for i in range(warm + rounds):
            for path in paths:
                started = time.perf_counter()
                conn.request("GET", path)
                response = conn.getresponse()
                body = response.read()
                took = time.perf_counter() - started
                status[path], sizes[path] = response.status, len(body)
                shown[path] = len(ROW.findall(body))
                if i >= warm:
                    times[path].append(took)
    finally:
        conn.close()
    return {"times": times, "sizes": sizes, "shown": shown, "status": status}


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(len(ordered) * 0.95) - 1)]


def page_times(args: argparse.Namespace) -> None:
    with bench_database(args.dsn) as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            autovacuum = one(conn, "SHOW autovacuum")
            version = one(conn, "SHOW server_version")
        if autovacuum != "on":
            print("WARNING: autovacuum is off on this server: not the stock server asked for")
        schema = "dash"
        migrate.upgrade(dsn, schema)
        started = time.monotonic()
        prepare(dsn, schema, args.jobs, failed=50, varied=True)
        failed_attempts(dsn, schema)
        ids = live_state(dsn, schema, args.waiting)
        print(f"built in {time.monotonic() - started:.0f} s (PostgreSQL {version})", flush=True)
        with dashboard(dsn, schema) as url:
            ids["cursor"] = deep_cursor(url, ids["deep"])
            paths = pages(ids)
            got = time_pages(url, paths, args.requests)
        print(
            f"\npage times: {args.jobs:,} finished jobs in history, {args.waiting:,} waiting "
            f"(200 running), {args.requests} requests per page after 3 warm-up rounds"
        )
        print(f"{'page':54}{'p50 ms':>8}{'p95 ms':>8}{'max ms':>8}{'KiB':>7}{'rows':>6}  status")
        for path in paths:
            times = got["times"][path]
            label = path if len(path) <= 52 else path[:49] + "..."
            print(
                f"{label:54}{statistics.median(times) * 1000:8.1f}{_p95(times) * 1000:8.1f}"
                f"{max(times) * 1000:8.1f}{got['sizes'][path] / 1024:7.1f}{got['shown'][path]:6}"
                f"  {got['status'][path]}"
            )
        bad = {p: s for p, s in got["status"].items() if s != 200}
        if bad:
            raise SystemExit(f"pages that did not answer 200: {bad}")


# -- screenshots -------------------------------------------------------------


def shop_traffic(shop: JobQueue, minutes: float) -> list[Any]:
    """Orders for ``minutes``: every 10 s a wave of receipts, card charges (one
    order in seven declined) and image resizes. Returns the charges."""
    charges: list[Any] = []
    order = 1000
    waves = max(1, int(minutes * 6))
    for wave in range(waves):
        started = time.monotonic()
        orders = 4 + (wave * 7) % 9  # a lifelike, uneven rate
        shop.enqueue_many(
            "emails.send_receipt",
            [(order + i, f"customer{order + i}@example.com") for i in range(orders * 3)],
            queue="emails",
        )
        for i in range(orders):
            args = (order + i, 1999 + 100 * ((order + i) % 37))
            charges.append(shop.send_task("billing.charge_card", args, queue="billing"))
        width = (320, 640, 1280, 6000)[wave % 4]
        shop.send_task("images.resize", (f"products/{order}/hero.jpg", width), queue="images")
        order += orders
        if wave < waves - 1:  # pacing, not synchronisation: the charts count per minute
            time.sleep(max(0.0, 10 - (time.monotonic() - started)))
    return charges


def shop_history(dsn: str, schema: str, minutes: float) -> dict[str, str]:
    """What two workers make of an afternoon's orders (see the docstring)."""
    shop = JobQueue(dsn, schema=schema, auto_migrate=False)
    s = f'"{schema}"'
    try:
        charges = shop_traffic(shop, minutes)
        shop.send_task("billing.sync_ledger", queue="billing")
        # A report of six sections: three rendered, three rendering (for an hour).
        header = [
            Signature(
                "reports.render_section", ("q3-sales", n, 0.2 if n < 3 else 3600), app=shop,
                queue="reports",
            )
            for n in range(6)
        ]  # fmt: skip
        body = Signature("reports.assemble", ("q3-sales",), app=shop, queue="reports")
        chord(header, app=shop)(body)
        settled = (
            f"SELECT (SELECT count(*) FROM {s}.job_lease) = 3 AND NOT EXISTS (SELECT 1 FROM "
            f"{s}.job_queue WHERE run_at <= now() AND queue <> 'reports')"
        )
        with psycopg.connect(dsn, autocommit=True) as conn:
            wait(lambda: bool(one(conn, settled)), 120)
            root = one(
                conn,
                f"SELECT root_id FROM {s}.jobs WHERE task = 'reports.render_section' LIMIT 1",
            )
        shop.control.pause_queue("images", reason="CDN migration")
        for i in range(3):
            shop.send_task("images.resize", (f"products/new-{i}.jpg", 800), queue="images")
        failed = next(c.id for c in reversed(charges) if c.state == "FAILURE")
        return {"failed": str(failed), "root": str(root)}
    finally:
        shop.close()


SHOTS = (
    ("overview", "/"),
    ("jobs", "/jobs"),
    ("job-failed", "/jobs/{failed}"),
    ("failures", "/failures"),
    ("workflows", "/workflows"),
    ("workflow", "/workflows/{root}"),
    ("queues", "/queues"),
    ("workers", "/workers"),
    ("schedules", "/schedules"),
    ("limits", "/limits"),
)


def screenshots(args: argparse.Namespace) -> None:
    from playwright.sync_api import sync_playwright

    out = Path(args.screenshots)
    out.mkdir(parents=True, exist_ok=True)
    chromium = os.environ.get("JOBQUEUE_CHROMIUM", "/usr/bin/chromium")
    with bench_database(args.dsn) as dsn:
        schema = "shop"
        migrate.upgrade(dsn, schema)
        with (
            workers(dsn, schema),
            dashboard(dsn, schema) as url,
            sync_playwright() as playwright,
        ):
            browser = playwright.chromium.launch(executable_path=chromium, headless=True)
            page = browser.new_page(
                base_url=url, viewport={"width": 1280, "height": 800}, color_scheme="light"
            )
            page.goto("/")  # the charts sample from the dashboard's start on
            ids = shop_history(dsn, schema, args.minutes)
            for name, path in SHOTS:
                page.goto(path.format(**ids))
                page.wait_for_load_state("networkidle")
                page.screenshot(path=str(out / f"{name}.png"))
                print(f"{out / name}.png", flush=True)
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", required=True, help="a maintenance database on the server")
    parser.add_argument("--jobs", type=int, default=10_000_000, help="finished jobs in history")
    parser.add_argument("--waiting", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=20, help="timed requests per page")
    parser.add_argument("--screenshots", metavar="DIR", help="take the screenshots instead")
    parser.add_argument(
        "--minutes", type=float, default=5, help="screenshots: minutes of traffic first"
    )
    args = parser.parse_args()
    if args.screenshots:
        screenshots(args)
    else:
        page_times(args)


if __name__ == "__main__":
    main()
