"""jobqueue against Procrastinate, PgQueuer and Celery, plus the raw pgbench limit.

    .venv/bin/python -m benchmarks.compare [--quick] [--reps N] [--only a,b] [--workloads x,y]
        [--dsn DSN]

Every system runs on a PostgreSQL server with stock settings that the run
starts itself (``benchmarks/stockserver.py``: initdb's settings, autovacuum
on) and stops at its end; ``--dsn`` runs on a server of yours instead, whose
settings the page then shows (and warns about when autovacuum is off).

Each peer is installed from PyPI into its own virtualenv under
``benchmarks/.peers/<name>`` (once) and runs ``benchmarks/peers/<name>.py`` there
as a subprocess that prints one JSON line. Within a repetition every workload
runs for every system back to back, the order rotating between repetitions.
The bloat/memory workload runs once (it takes long). Medians and the ratios
jobqueue/peer go to stdout, ``docs/performance.md`` and ``docs/performance.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.stockserver import stock_server

ROOT = Path(__file__).resolve().parent.parent
PEERS_DIR = ROOT / "benchmarks" / ".peers"
RESULTS_DIR = ROOT / "benchmarks" / "results"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
SYSTEMS = ("jobqueue", "procrastinate", "pgqueuer", "celery")
REQUIREMENTS: dict[str, list[str]] = {
    "procrastinate": ["procrastinate[psycopg]==3.10.0", "psycopg[binary]>=3.2"],
    "pgqueuer": ["pgqueuer==1.6.0", "asyncpg>=0.30"],
    "celery": ["celery[redis]==5.7.0"],
    "plot": ["matplotlib>=3.8"],
}
REPEATED = ("bulk", "single", "drain", "drain2", "latency", "pgbench")
ONCE = ("bloat", "sustained")


@dataclass
class Mode:
    reps: int
    args: dict[str, list[str]]
    pgbench_seconds: float
    timeout: float = 1800.0
    extra: dict[str, Any] = field(default_factory=dict)


FULL = Mode(
    reps=3,
    args={
        "bulk": ["--jobs", "100000"],
        # One sequential producer: the target (and pgbench's 1 client).
        "single": ["--seconds", "10", "--threads", "1", "--warmup", "3"],
        "drain": ["--jobs", "50000"],
        "drain2": ["--jobs", "50000"],
        # 1,000 samples: a p99 is then the 10th-worst one, not the 3rd.
        "latency": ["--latency-jobs", "1000", "--interval", "0.02"],
        "bloat": [
            *("--history", "1000000", "--probe-jobs", "20000", "--probe-reps", "3"),
            *("--latency-jobs", "1000", "--memory-at", "10000,200000"),
        ],
        "sustained": ["--seconds", "180"],
    },
    pgbench_seconds=10,
)
QUICK = Mode(
    reps=1,
    args={
        "bulk": ["--jobs", "10000"],
        "single": ["--seconds", "2", "--threads", "1", "--warmup", "1"],
        "drain": ["--jobs", "5000"],
        "drain2": ["--jobs", "5000"],
        "latency": ["--latency-jobs", "50", "--interval", "0.02"],
        "bloat": [
            *("--history", "30000", "--probe-jobs", "2000", "--probe-reps", "2"),
            *("--latency-jobs", "30", "--memory-at", "1000,5000"),
        ],
        "sustained": ["--seconds", "20"],
    },
    pgbench_seconds=3,
)


# -- environments ---------------------------------------------------------------------


def python_for(name: str) -> Path:
    if name in ("jobqueue", "pgbench"):
        venv = ROOT / ".venv" / "bin" / "python"
        return venv if venv.exists() else Path(sys.executable)
    return PEERS_DIR / name / "bin" / "python"


def ensure_venv(name: str) -> Path:
    """Create ``benchmarks/.peers/<name>`` with its pinned packages, unless it is there."""
    home = PEERS_DIR / name
    marker = home / "bench-requirements.txt"
    wanted = "\n".join(REQUIREMENTS[name]) + "\n"
    if marker.exists() and marker.read_text() == wanted:
        return home / "bin" / "python"
    print(f"installing {name} into {home} ...", flush=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(home)], check=True)
    pip = [
        str(home / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
    ]
    subprocess.run([*pip, *REQUIREMENTS[name]], check=True)
    marker.write_text(wanted)
    return home / "bin" / "python"


# -- running ------------------------------------------------------------------------------


def run_one(system: str, workload: str, mode: Mode, dsn: str) -> dict[str, Any] | None:
    if system == "pgbench":
        module, args = "benchmarks.pgbench.run", ["--seconds", str(mode.pgbench_seconds)]
    else:
        module, args = f"benchmarks.peers.{system}", ["--workload", workload]
        args += mode.args[workload]
    command = [str(python_for(system)), "-m", module, "--dsn", dsn, *args]
    timeout = mode.timeout * (3 if workload == "bloat" else 1)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("JOBQUEUE_DSN", None)
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        print(f"  {system:<13} {workload:<8} TIMEOUT after {timeout:.0f}s", flush=True)
        return None
    elapsed = time.perf_counter() - started
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-1500:]
        print(f"  {system:<13} {workload:<8} FAILED ({proc.returncode}):\n{tail}", flush=True)
        return None
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    result["seconds"] = elapsed
    shown = ", ".join(f"{k}={v:,.1f}" for k, v in result["metrics"].items() if _number(v))
    print(f"  {system:<13} {workload:<8} {elapsed:6.1f}s  {shown}", flush=True)
    return result


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def rotate(items: list[str], by: int) -> list[str]:
    by %= max(1, len(items))
    return items[by:] + items[:by]


def medians(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{workload: {system: {metric: median}}}, plus ``_values`` with every run's figure."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        grouped.setdefault((run["workload"], run["system"]), []).append(run)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (workload, system), group in grouped.items():
        metrics: dict[str, Any] = {}
        for key in group[0]["metrics"]:
            values = [g["metrics"][key] for g in group if _number(g["metrics"].get(key))]
            if values:
                metrics[key] = statistics.median(values)
                metrics[f"_values_{key}"] = values
            elif key == "tables" or key.endswith("each_jobs_s"):  # once-run details
                metrics[key] = group[0]["metrics"][key]
        out.setdefault(workload, {})[system] = metrics
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__)
    parser.add_argument(
        "--dsn",
        default=os.environ.get("JOBQUEUE_BENCH_DSN"),
        help="a server of yours (default: a stock server started for the run)",
    )
    parser.add_argument("--quick", action="store_true", help="small job counts, 1 repetition")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--only", default=",".join(SYSTEMS), help="systems to run")
    parser.add_argument("--workloads", default=",".join(REPEATED + ONCE))
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/performance.*")
    parser.add_argument(
        "--report",
        metavar="FILE",
        nargs="+",
        help="only re-render the docs from a results file, or from the journals "
        "(.jsonl) of several runs taken together (say, the one-off workloads run apart)",
    )
    options = parser.parse_args(argv)
    if options.report:
        return rerender([Path(p) for p in options.report], options.dsn or DEFAULT_DSN)
    with contextlib.ExitStack() as stack:
        options.started_server = options.dsn is None
        if options.dsn is None:
            options.dsn = stack.enter_context(stock_server())
            print(f"started a stock PostgreSQL server for this run: {options.dsn}", flush=True)
        return run(options)


def run(options: argparse.Namespace) -> int:
    mode = QUICK if options.quick else FULL
    reps = options.reps or mode.reps
    systems = [s for s in options.only.split(",") if s]
    workloads = [w for w in options.workloads.split(",") if w]
    unknown = (set(systems) - set(SYSTEMS)) | (set(workloads) - set(REPEATED + ONCE))
    if unknown:
        raise SystemExit(f"unknown system or workload: {sorted(unknown)}")

    started = time.time()
    # The server and its settings as the run starts, kept in the run's data: a page
    # re-rendered later, elsewhere, still names the server the figures came from.
    recorded = report.conditions(options.dsn, "at the start of the run")
    recorded["started_by_run"] = options.started_server  # initdb's settings, made for it
    print(f"server: {report.server_label(recorded)} ({recorded['server']})", flush=True)
    if report.autovacuum(recorded) is False and set(systems) & set(report.PEERS):
        print(f"warning: autovacuum is off; {report.AUTOVACUUM_WARNING}", flush=True)
    for name in systems:
        if name != "jobqueue":
            ensure_venv(name)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    # Every result is journaled as it arrives: an interrupted run can still be
    # rendered with --report benchmarks/results/compare-<stamp>.jsonl.
    journal = RESULTS_DIR / f"compare-{stamp}.jsonl"
    header = {"systems": systems, "args": mode.args, "reps": reps, "quick": options.quick}
    header["started"] = time.strftime("%Y-%m-%d %H:%M %Z")
    header["conditions"] = recorded
    journal.write_text(json.dumps(header) + "\n")
    runs: list[dict[str, Any]] = []

    def keep(result: dict[str, Any] | None) -> None:
        if result is not None:
            runs.append(result)
            with journal.open("a") as out:
                out.write(json.dumps(result) + "\n")

    for rep in range(reps):
        print(f"repetition {rep + 1}/{reps}", flush=True)
        for workload in (w for w in REPEATED if w in workloads):
            order = ["pgbench"] if workload == "pgbench" else rotate(systems, rep)
            for system in order:
                keep(run_one(system, workload, mode, options.dsn))
    for workload in (w for w in ONCE if w in workloads):
        print(f"{workload} (once per system)", flush=True)
        for system in systems:
            keep(run_one(system, workload, mode, options.dsn))
    with journal.open("a") as out:  # the run reached its end: not an interrupted one
        out.write(json.dumps({"finished": time.strftime("%Y-%m-%d %H:%M %Z")}) + "\n")
    elapsed = time.time() - started
    summary = medians(runs)
    context = report.context(
        options.dsn, systems, runs, mode.args, reps, elapsed, options.quick, recorded
    )
    raw = {"context": context, "runs": runs, "medians": summary}
    path = RESULTS_DIR / f"compare-{stamp}.json"
    path.write_text(json.dumps(raw, indent=1, default=str))
    table = report.markdown(summary, context)
    print("\n" + table)
    print(f"raw results: {path.relative_to(ROOT)}; took {elapsed / 60:.1f} min")
    if not options.no_docs:
        (ROOT / "docs" / "performance.md").write_text(table)
        plot(path, ROOT / "docs" / "performance.png")
    return 0


def rerender(paths: list[Path], dsn: str) -> int:
    """docs/performance.* again from a saved run, or from the journals of one or more
    runs (interrupted, or run in parts), with the server and settings the run recorded;
    only a run that recorded none is shown with ``dsn``'s as of now, and says so."""

    def now() -> dict[str, Any]:  # nor are today's checkout and --dsn the run's
        found = report.conditions(dsn, "when the page was re-rendered (not recorded by the run)")
        unknown = ("commit", "server")
        return {**{k: v for k, v in found.items() if k not in unknown}, "recorded_by_run": False}

    path = paths[0]
    if path.suffix == ".jsonl":
        headers, runs, parts = [], [], []
        finished = True
        for journal in paths:
            header, *lines = (json.loads(line) for line in journal.read_text().splitlines())
            rest = [line for line in lines if "workload" in line]
            finished = finished and any("finished" in line for line in lines)
            headers.append(header)
            runs.extend(rest)
            workloads = ", ".join(dict.fromkeys(r["workload"] for r in rest))
            parts.append(f"{header.get('started', '?')} ({workloads})")
        systems = [s for s in SYSTEMS if any(s in h["systems"] for h in headers)]
        args = {k: v for h in reversed(headers) for k, v in h["args"].items()}
        elapsed = sum(r["seconds"] for r in runs)
        reps = max(h["reps"] for h in headers)
        recorded = [h["conditions"] for h in headers if "conditions" in h]
        context = report.context(
            dsn,
            systems,
            runs,
            args,
            reps,
            elapsed,
            headers[0]["quick"],
            recorded[0] if recorded else now(),
        )
        context["interrupted"] = len(paths) == 1 and not finished
        context["parts"] = parts if len(paths) > 1 else []
        servers = [{k: c.get(k) for k in ("server", "postgres", "settings")} for c in recorded]
        if len(paths) > 1:  # None: some journal did not record its server
            same = all(s == servers[0] for s in servers)
            context["parts_same_server"] = same if len(recorded) == len(headers) else None
        context["date"] = headers[0].get("started", context["date"])
        raw: dict[str, Any] = {"context": context, "runs": runs, "medians": medians(runs)}
        # Never over the run's own compare-<stamp>.json, which has its full context.
        suffix = "merged" if len(paths) > 1 else "journal"
        path = RESULTS_DIR / f"{path.stem}-{suffix}.json"
        path.write_text(json.dumps(raw, indent=1, default=str))
    else:
        raw = json.loads(path.read_text())
        context = raw["context"]
        if "settings" not in context:
            context.update(now())
    (ROOT / "docs" / "performance.md").write_text(report.markdown(raw["medians"], context))
    plot(path, ROOT / "docs" / "performance.png")
    return 0


def plot(results: Path, png: Path) -> None:
    python = ensure_venv("plot")
    script = ROOT / "benchmarks" / "plot.py"
    subprocess.run([str(python), str(script), str(results), str(png)], check=True)
    print(f"wrote {png}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
