"""The Markdown report of ``benchmarks.compare``: machine, settings, medians, ratios."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from benchmarks.peers._common import psql
from benchmarks.targets import figure, targets_section

PEERS = ("procrastinate", "pgqueuer", "celery")
NAMES = {"procrastinate": "Procrastinate", "pgqueuer": "PgQueuer", "celery": "Celery"}
NA = "n/a"
# The peers leave their dead rows to autovacuum (jobqueue's workers vacuum their own
# queue table): without it their rates decay during a run, and ratios overstate.
AUTOVACUUM_WARNING = (
    "peers depend on autovacuum; ratios against them from this run are not representative"
)
PG_SETTINGS = (
    "synchronous_commit",
    "fsync",
    "wal_sync_method",
    "full_page_writes",
    "shared_buffers",
    "work_mem",
    "max_connections",
    "max_wal_size",
    "checkpoint_timeout",
    "autovacuum",
    "track_counts",  # autovacuum does nothing without it
    "autovacuum_naptime",
    "autovacuum_vacuum_scale_factor",
    "commit_delay",
    "wal_level",
    "jit",
)
Summary = dict[str, dict[str, dict[str, Any]]]


def _arg(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def context(
    dsn: str,
    systems: list[str],
    runs: list[dict[str, Any]],
    args: dict[str, list[str]],
    reps: int,
    elapsed: float,
    quick: bool,
    recorded: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run's machine, server and arguments; the server as ``recorded`` at the start
    of the run (``conditions``), or else as it is now."""
    if recorded is None:
        recorded = conditions(dsn, "at the end of the run")
    versions = {r["system"]: (r["version"], r["config"]) for r in runs}
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    memory = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal"))
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line),
        platform.processor(),
    )
    redis = "n/a"
    if shutil.which("redis-cli"):
        info = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "INFO", "server"], capture_output=True, text=True
        ).stdout
        redis = next(
            (x.split(":")[1].strip() for x in info.splitlines() if "redis_version" in x), "n/a"
        )
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "systems": systems,
        "versions": versions,
        **recorded,
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "ram_gib": memory / 2**20,
        "kernel": platform.platform(),
        "python": platform.python_version(),
        "redis": redis,
        "args": args,
        "reps": reps,
        "elapsed_min": elapsed / 60,
        "quick": quick,
    }


def pg_settings(dsn: str) -> dict[str, str]:
    return {name: psql(dsn, f"SHOW {name}")[0][0] for name in PG_SETTINGS}


def conditions(dsn: str, read: str) -> dict[str, Any]:
    """What the figures depend on besides the code: the server (its address, never the
    DSN's password), its version and settings, and the code's commit; ``read`` says when."""
    return {
        "server": address(dsn),
        "postgres": psql(dsn, "SHOW server_version")[0][0],
        "settings": pg_settings(dsn),
        "settings_read": read,
        "commit": commit(),
    }


def address(dsn: str) -> str:
    params = conninfo_to_dict(dsn)
    host = str(params.get("host") or os.environ.get("PGHOST") or "local socket")
    return f"{host}:{params.get('port') or os.environ.get('PGPORT') or 5432}"


def commit() -> str | None:
    """HEAD's short hash, with a mark if tracked files differ from it; None outside git."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{head} with uncommitted changes" if dirty else head


def autovacuum(ctx: dict[str, Any]) -> bool | None:
    """Whether autovacuum ran on the run's server; None if the run did not record it
    (settings read when a page is re-rendered say nothing about the run)."""
    settings: dict[str, str] = ctx.get("settings") or {}
    if "autovacuum" not in settings or ctx.get("recorded_by_run") is False:
        return None
    return settings["autovacuum"] == "on" and settings.get("track_counts", "on") == "on"


def server_label(ctx: dict[str, Any]) -> str:
    """The run's server and autovacuum, for every heading over measured figures."""
    version = f"PostgreSQL {str(ctx['postgres']).split()[0]}"
    host = str(ctx.get("server", "")).rsplit(":", 1)[0]
    if ctx.get("started_by_run"):
        where = f"a stock {version} started by the run"
    elif host in ("127.0.0.1", "localhost", "::1", "local socket") or host.startswith("/"):
        where = f"this machine's {version}"
    else:
        where = f"{version} at {host}" if host else version
    state = {True: "on", False: "off", None: "not recorded"}[autovacuum(ctx)]
    return f"{where}, autovacuum {state}"


def rows(args: dict[str, list[str]]) -> list[tuple[str, str, str, str]]:
    bulk, drain = int(_arg(args["bulk"], "--jobs")), int(_arg(args["drain"], "--jobs"))
    seconds = _arg(args["single"], "--seconds")
    warmup = _arg(args["single"], "--warmup") if "--warmup" in args["single"] else "0"
    count = int(_arg(args["single"], "--threads")) if "--threads" in args["single"] else 4
    threads = "1 sequential producer" if count == 1 else f"{count} threads"
    sustained = _arg(args["sustained"], "--seconds") if "sustained" in args else "?"
    history = int(_arg(args["bloat"], "--history"))
    probe = int(_arg(args["bloat"], "--probe-jobs"))
    marks = [int(m) for m in _arg(args["bloat"], "--memory-at").split(",")]
    return [
        (f"(1) bulk enqueue, {bulk:,} jobs in one call", "jobs/s", "bulk", "jobs_s"),
        (f"(1) bulk enqueue, {bulk:,} jobs in calls of 1,000", "jobs/s", "bulk", "chunk_jobs_s"),
        (
            f"(2) single enqueue, {threads} after a {warmup} s warm-up, {seconds} s",
            "jobs/s",
            "single",
            "jobs_s",
        ),
        (
            f"(2) single enqueue: the warm-up ({warmup} s, new process)",
            "jobs/s",
            "single",
            "first_jobs_s",
        ),
        (f"(3) drain {drain:,} no-op jobs, 1 worker process", "jobs/s", "drain", "jobs_s"),
        (
            f"(3) drain {drain:,} again, warm tables (after VACUUM ANALYZE)",
            "jobs/s",
            "drain",
            "warm_jobs_s",
        ),
        (f"(3) drain {drain:,} no-op jobs, 2 worker processes", "jobs/s", "drain2", "jobs_s"),
        ("(3) dead rows left in the table(s) the claim reads", "rows", "drain", "dead_rows_claim"),
        ("(3) dead rows left in all tables", "rows", "drain", "dead_rows"),
        ("(3) WAL written per job, 1-worker drain", "bytes", "drain", "wal_bytes_per_job"),
        (
            f"(3) sustained {sustained} s, enqueue and drain together",
            "jobs/s",
            "sustained",
            "jobs_s",
        ),
        ("(3) sustained: first 30 s", "jobs/s", "sustained", "first_jobs_s"),
        ("(3) sustained: last 30 s", "jobs/s", "sustained", "last_jobs_s"),
        (
            "(3) sustained: dead rows in the claim's table(s) at the end",
            "rows",
            "sustained",
            "dead_rows_claim",
        ),
        ("(4) latency enqueue call → task start, p50", "ms", "latency", "p50_ms"),
        ("(4) latency enqueue call → task start, p99", "ms", "latency", "p99_ms"),
        ("(4) latency in the database (enqueued → claimed), p50", "ms", "latency", "db_p50_ms"),
        ("(4) latency in the database (enqueued → claimed), p99", "ms", "latency", "db_p99_ms"),
        (f"(5) drain {probe:,}, empty table", "jobs/s", "bloat", "empty_jobs_s"),
        (
            f"(5) drain {probe:,}, {history:,} finished jobs in history",
            "jobs/s",
            "bloat",
            "hist_jobs_s",
        ),
        ("(5) latency p50, empty table", "ms", "bloat", "empty_p50_ms"),
        ("(5) latency p50, with history", "ms", "bloat", "hist_p50_ms"),
        ("(5) latency p99, empty table", "ms", "bloat", "empty_p99_ms"),
        ("(5) latency p99, with history", "ms", "bloat", "hist_p99_ms"),
        ("(5) latency in the database p50, empty table", "ms", "bloat", "empty_db_p50_ms"),
        ("(5) latency in the database p50, with history", "ms", "bloat", "hist_db_p50_ms"),
        ("(5) latency in the database p99, empty table", "ms", "bloat", "empty_db_p99_ms"),
        ("(5) latency in the database p99, with history", "ms", "bloat", "hist_db_p99_ms"),
        ("(5) WAL per job drained, empty table", "bytes", "bloat", "empty_wal_bytes_per_job"),
        ("(5) WAL per job drained, with history", "bytes", "bloat", "hist_wal_bytes_per_job"),
        (f"(5) tables (heap + TOAST) after {history:,} jobs", "MB", "bloat", "table_mb"),
        (f"(5) indexes after {history:,} jobs", "MB", "bloat", "index_mb"),
        (f"(6) worker RSS after {marks[0]:,} jobs", "MB", "bloat", f"rss_mb_{marks[0]}"),
        (f"(6) worker RSS after {marks[-1]:,} jobs", "MB", "bloat", f"rss_mb_{marks[-1]}"),
        (f"(6) rate of those {marks[-1]:,} jobs (fed in chunks)", "jobs/s", "bloat", "pass_jobs_s"),
    ]


def fmt(value: Any, unit: str) -> str:
    if not isinstance(value, (int, float)):
        return NA
    if unit in ("jobs/s", "rows", "bytes"):
        return f"{value:,.0f}"
    return f"{value:,.2f}" if unit == "ms" else f"{value:,.1f}"


def markdown(summary: Summary, ctx: dict[str, Any]) -> str:
    systems: list[str] = ctx["systems"]
    peers = [p for p in PEERS if p in systems]
    args: dict[str, list[str]] = ctx["args"]
    mode = "quick mode" if ctx["quick"] else "full mode"
    server = server_label(ctx)
    top, analysis = analysis_parts(ctx)
    out = ["# Performance: jobqueue and its peers", *autovacuum_section(summary, ctx, peers)]
    out += top
    out += [
        "",
        f"## This run ({server})",
        "",
        f"Measured by `python -m benchmarks.compare` on {ctx['date']} ({mode}, "
        f"{ctx['reps']} repetition(s), {ctx['elapsed_min']:.0f} min in all"
        + (f", code at `{ctx['commit']}`" if ctx.get("commit") else "")
        + f"), every system on the same server ({server}), one at a time, the order "
        "rotating between repetitions. Figures "
        "are medians over the repetitions (the bloat and memory workload and the sustained "
        "run are run once). "
        "**Ratios are jobqueue ÷ peer**: for jobs/s above 1 means jobqueue is faster; for ms "
        "and MB below 1 means jobqueue is lower."
        + (
            " **This run was interrupted**: what it did not reach is missing."
            if ctx.get("interrupted")
            else ""
        )
        + (
            " This page joins the journals of runs started at "
            + "; ".join(ctx["parts"])
            + {
                True: " (same server and settings, as each run recorded).",
                False: " (**their servers or settings differ**: the page shows the first's).",
                None: " (not all of them recorded their server and settings).",
            }[ctx.get("parts_same_server")]
            if ctx.get("parts")
            else ""
        ),
        "",
        "## Machine and settings",
        "",
        f"- CPU: {ctx['cpu']}; RAM {ctx['ram_gib']:.1f} GiB; {ctx['kernel']}; "
        f"Python {ctx['python']}",
        f"- PostgreSQL {ctx['postgres']} at {ctx.get('server', 'an address not recorded')}, "
        f"as `SHOW` reports {ctx.get('settings_read', 'at the end of the run')}: "
        + ", ".join(f"`{k}={v}`" for k, v in ctx["settings"].items()),
        f"- Redis {ctx['redis']} on 127.0.0.1 (Celery's broker and result backend, database 9)",
        "",
        "| system | version | worker configuration |",
        "|---|---|---|",
    ]
    for system in [*systems, "pgbench"]:
        if system in ctx["versions"]:
            version, config = ctx["versions"][system]
            out.append(f"| {system} | {version} | {config} |")
    header = "| workload | unit | " + " | ".join(systems)
    header += "".join(f" | jobqueue/{p}" for p in peers) + " |"
    out += [
        "",
        f"## Results (medians; {server})",
        "",
        header,
        "|---|---|" + "---:|" * (len(systems) + len(peers)),
    ]
    for label, unit, workload, metric in rows(args):
        values = {s: summary.get(workload, {}).get(s, {}).get(metric) for s in systems}
        if all(v is None for v in values.values()):
            continue
        cells = [fmt(values[s], unit) for s in systems]
        mine = values.get("jobqueue")
        for peer in peers:
            theirs = values.get(peer)
            ok = isinstance(mine, (int, float)) and isinstance(theirs, (int, float)) and theirs
            cells.append(f"{mine / theirs:.2f}" if ok else NA)  # type: ignore[operator]
        out.append(f"| {label} | {unit} | " + " | ".join(cells) + " |")
    out += targets_section(summary, ctx)
    out += analysis
    out += pgbench_section(summary, server)
    out += workloads_section(args)
    out += repetitions_section(summary, args, systems, server)
    out += [
        "",
        "## How to reproduce",
        "",
        "```sh",
        ".venv/bin/python -m benchmarks.compare          # full: this page and the chart",
        ".venv/bin/python -m benchmarks.compare --quick  # a few minutes, 1 repetition",
        ".venv/bin/python -m benchmarks.compare --only jobqueue,pgqueuer --workloads drain,latency",
        ".venv/bin/python -m benchmarks.enqueue_ceiling  # single enqueue: server and client share",
        ".venv/bin/python -m benchmarks.enqueue_steps    # single enqueue's Python, step by step",
        ".venv/bin/python -m benchmarks.latency_steps    # enqueue-to-start, step by step",
        "# this page again from a run's data, with the server and settings that run recorded:",
        ".venv/bin/python -m benchmarks.compare --report benchmarks/results/compare-<stamp>.json",
        "```",
        "",
        "`compare` and `latency_steps` start a PostgreSQL server with stock settings of their "
        "own (initdb's defaults, autovacuum on: `benchmarks/stockserver.py`) and remove it at "
        "the end; with `--dsn` they use yours, and the page warns when that server had "
        "autovacuum off. "
        "It needs PostgreSQL's server binaries (`initdb`, `pg_ctl`), Redis on "
        "127.0.0.1:6379 for Celery, `pgbench` and `psql`. Peers are installed from PyPI into "
        "`benchmarks/.peers/<name>/` on first use; each run creates and drops its own "
        "database `bench_<system>_<pid>`; Celery's runs flush Redis database 9 only. "
        "Raw per-run figures are kept in `benchmarks/results/`. What this run does not "
        "measure (many workers, events, PgBouncer, 10 M jobs of history, ...) is on "
        "[More measurements](measurements.md), each with its own command.",
        "",
    ]
    return "\n".join(out)


def pgbench_section(summary: Summary, label: str) -> list[str]:
    limits = summary.get("pgbench", {}).get("pgbench")
    if not limits:
        return []
    mine = summary.get("drain", {}).get("jobqueue", {}).get("jobs_s")
    mine2 = summary.get("drain2", {}).get("jobqueue", {}).get("jobs_s")
    out = [
        "",
        f"## Raw PostgreSQL limit of the same life cycle (pgbench; {label})",
        "",
        "Custom scripts in `benchmarks/pgbench/`: insert; claim with "
        "`FOR UPDATE SKIP LOCKED` (mark running); complete (mark done, or delete). "
        "Jobs/s counts jobs that reached completion.",
        "",
        "| life cycle | jobs/s | jobqueue drain ÷ limit (1 worker) | (2 workers) |",
        "|---|---:|---:|---:|",
    ]
    labels = {
        "single_insert": "enqueue only, one job per transaction, 1 client",
        "single_update": "one job per transaction, history kept (update)",
        "single_delete": "one job per transaction, row deleted on completion",
        "batch_update": "100 jobs per transaction, history kept (update)",
        "batch_delete": "100 jobs per transaction, rows deleted on completion",
    }
    for key, label in labels.items():
        limit = limits.get(key)
        if not isinstance(limit, (int, float)) or not limit:
            continue
        r1 = f"{mine / limit:.2f}" if mine else NA
        r2 = f"{mine2 / limit:.2f}" if mine2 else NA
        out.append(f"| {label} | {limit:,.0f} | {r1} | {r2} |")
    return out


def autovacuum_section(summary: Summary, ctx: dict[str, Any], peers: list[str]) -> list[str]:
    """The warning at the top of the page when peers ran without (known) autovacuum."""
    state = autovacuum(ctx)
    if state or not peers:
        return []
    run = f"{ctx['date']}" + (f", code at `{ctx['commit']}`" if ctx.get("commit") else "")
    where = f"PostgreSQL {ctx['postgres']} at {ctx.get('server', 'an address not recorded')}"
    if state is None:
        return [
            "",
            "## Read this first: the run did not record whether autovacuum was on",
            "",
            f"Every table on this page comes from one run ({run}) on {where}. If its "
            f"autovacuum was off, {AUTOVACUUM_WARNING}.",
        ]
    decays = []
    for peer in peers:
        first = figure(summary, "sustained", peer, "first_jobs_s")
        last = figure(summary, "sustained", peer, "last_jobs_s")
        if first and last is not None and last < 0.9 * first:
            decays.append(f"{NAMES[peer]} from {first:,.0f} jobs/s to {last:,.0f}")
    seen = (
        " (in this run's sustained workload, from its first 30 s to its last: "
        + "; ".join(decays)
        + ")"
        if decays
        else ""
    )
    return [
        "",
        "## Read this first: the server ran with autovacuum off",
        "",
        f"Every table on this page, and the chart `performance.png`, comes from one run "
        f"({run}) on {where}, which ran with **`autovacuum=off`** (all its settings under "
        f'"Machine and settings"). **Warning: {AUTOVACUUM_WARNING}.** jobqueue\'s workers '
        "vacuum their queue table themselves; the peers rely on autovacuum, and without it "
        f"their dead rows pile up and their rates decay during a run{seen}. The peer ratios "
        "on this page hold for that setting only; where a peer's rate decays (drain, "
        "sustained run, history) they overstate jobqueue's lead.",
    ]


def analysis_parts(ctx: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The hand-written ``analysis.md``, kept beside the code: the part before its
    ``<!-- after the targets -->`` line opens the page, the rest follows the targets.
    Its ``<!-- written for the run of DATE -->`` line names the run its figures are
    from; on any other run's page each part says so."""
    path = Path(__file__).with_name("analysis.md")
    if not path.exists():
        return [], []
    text = path.read_text()
    written = re.match(r"<!-- written for the run of (.+?) -->\n", text)
    if written:
        text = text[written.end() :]
    top, _, rest = text.rpartition("<!-- after the targets -->\n")
    stale = ""
    if not written or written.group(1) != ctx["date"]:
        run = f"the run of {written.group(1)}" if written else "an earlier run"
        stale = (
            f"> This prose, from `benchmarks/analysis.md`, was written for {run}, not this "
            f"one ({ctx['date']}): the figures it quotes are that run's, not this page's."
        )

    def part(text: str) -> list[str]:
        if not text.strip():
            return []
        heading, _, body = text.strip().partition("\n")
        if not stale:
            return ["", text.strip()]
        if not heading.startswith("#"):
            return ["", stale, "", text.strip()]
        return ["", heading, "", stale, "", body.strip()]

    return part(top), part(rest)


def workloads_section(args: dict[str, list[str]]) -> list[str]:
    drain = int(_arg(args["drain"], "--jobs"))
    latency = _arg(args["latency"], "--latency-jobs")
    interval = float(_arg(args["latency"], "--interval")) * 1000
    history = int(_arg(args["bloat"], "--history"))
    marks = [int(m) for m in _arg(args["bloat"], "--memory-at").split(",")]
    reps = _arg(args["bloat"], "--probe-reps") if "--probe-reps" in args["bloat"] else "1"
    return [
        "",
        "## Workloads",
        "",
        "Every system runs the same scripts (`benchmarks/peers/_common.py`) through its own "
        "API and its own worker processes; figures come from the system's records "
        "(jobqueue `jobs`, Procrastinate `procrastinate_events`, PgQueuer `pgqueuer_log`, "
        "Celery's Redis results), not from the client's guess.",
        "",
        "1. **Bulk enqueue**: the system's one-call bulk API (`enqueue_many`, `batch_defer`, "
        "`Queries.enqueue` with lists, a Celery `group`), timed on the client: once with "
        "every job in one call, then as many jobs again in calls of 1,000 (each its own "
        "transaction, as an application sends them).",
        "2. **Single enqueue**: one sequential producer calls the one-job API in a loop, each "
        "job its own transaction (Celery: its own broker message), held against pgbench's "
        "one-row insert with 1 client. A warm-up with the same load comes first in the same "
        "process and is reported apart.",
        f"3. **Drain**: {drain:,} no-op jobs enqueued in one call while the workers sit idle "
        "(Celery's stop consuming meanwhile), timed from the first job's start to the last "
        "job's completion as recorded by the system; that drain runs on tables just "
        "created and never analyzed (a cold start), then again after a `VACUUM ANALYZE` "
        "(warm tables, as autovacuum keeps them on a server that has run a while).",
        f"4. **Latency**: an idle worker; {latency} jobs sent one at a time every "
        f"{interval:.0f} ms after 5 warm-up jobs and a `CHECKPOINT` (so a checkpoint forced "
        "by the WAL of the workloads before does not land in it). The task writes "
        "`time.time()` minus the "
        "client's clock just before the enqueue call; the database figure is enqueue row "
        "time to claim time (jobqueue `started_at - created_at`, Procrastinate "
        "`started - deferred` events, PgQueuer `picked - queued` log rows).",
        "5. **Bloat**: the drain and latency probes on an empty database, then again with "
        f"{history:,} finished jobs in history. Of those, {marks[-1]:,} really pass through "
        "one worker (fed 10,000 at a time); the rest are copies of those finished rows "
        "made by SQL in the system's own tables (Procrastinate: jobs and events; PgQueuer: "
        "its log rows), so the history has the real rows' shape without an hour-long run. "
        "Sizes are `pg_table_size` and `pg_indexes_size` summed over the database's tables. "
        "Celery keeps no history in PostgreSQL and only runs the memory part. Each probe "
        "starts after a `CHECKPOINT`, so it does not pay for the bulk copy's full-page "
        "images."
        + (
            f" A probe (drain, then trickle) runs up to {reps} times on each table, "
            "stopping early once the probes took a minute: the drain figure is the "
            "median, the latencies pool every trickle's jobs. A sub-second drain moves "
            "by ~10 % between runs, too much for one run to judge a 10 % bound."
            if reps != "1"
            else ""
        ),
        "3b. **Sustained**: one default worker while the client tops the backlog up with "
        "bulk enqueues of 1,000 whenever fewer than 5,000 wait, for the whole run; the rate "
        "of completions over the run and over its first and last 30 s (dead rows piling up "
        "in front of the claim would show as a drop). Dead rows are `n_dead_tup` summed over "
        "the database's tables; WAL per job is the server's WAL position moved during the "
        "drain, divided by the jobs drained.",
        f"6. **Memory**: RSS of the worker process and its children (Celery's prefork "
        f"pool) after {marks[0]:,} and {marks[-1]:,} jobs, during the pass-through above.",
    ]


def repetitions_section(
    summary: Summary, args: dict[str, list[str]], systems: list[str], label: str
) -> list[str]:
    out = ["", f"## Every repetition ({label})", "", "| workload | " + " | ".join(systems) + " |"]
    out.append("|---|" + "---|" * len(systems))
    for label, unit, workload, metric in rows(args):
        key = f"_values_{metric}"
        if workload == "bloat":  # run once, but its drain probes repeat
            if not metric.endswith("_jobs_s"):
                continue
            key = metric.replace("jobs_s", "each_jobs_s")
        cells = []
        for system in systems:
            values = summary.get(workload, {}).get(system, {}).get(key, [])
            cells.append(", ".join(fmt(v, unit) for v in values) or NA)
        if any(c != NA for c in cells):
            out.append(f"| {label} ({unit}) | " + " | ".join(cells) + " |")
    return out
