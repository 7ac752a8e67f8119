"""What the events stream costs the drain: no listener against a listener.

    python -m benchmarks.events --dsn postgresql://postgres@127.0.0.1:5446/postgres \\
        [--runs 5] [--jobs 50000] [--workers 1]

Each run drains ``--jobs`` no-op jobs (``throughput.Bench.drain``'s way: an
idle worker, one ``enqueue_many`` commit, first start to last finish, a fresh
schema) in two modes, interleaved and alternating which goes first: with
nobody listening, and with a real ``jobqueue events --json`` subprocess
attached (started and listening before the enqueue), whose output a thread of
this process reads and counts. A listening run also says how many events the
listener printed and how long after the last job finished it printed the
last one (its lag). Each run also says the CPU time spent per job by the
workers, by the server (every backend and server process alive across the run)
and by the listener, from ``/proc/<pid>/stat`` sampled before the enqueue and
after the last event: what a listener adds there holds on a busy machine, where
the wall-clock rates move by 10-25 % between runs. Prints every run, then the
medians, their spread and the ratio (listener ÷ no listener).
``--listener-nice N`` runs the listener at that nice level (a monitor on a
shared host; default 0, like anyone's shell).
``--lock-only`` adds a third mode: the events lock held on a bare connection
and nobody reading, so the statements build and send their NOTIFYs and
nothing else happens: the workers' share of the cost, without the
listener's own work.

For "no listener" against the code before events, use ``benchmarks.ab_drain``
with the two checkouts. Use a server with default settings (autovacuum on),
never one tuned for a test suite, and a machine as quiet as you can get.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg

from benchmarks.throughput import Bench, bench_database
from jobqueue.sql import channels, lock_classes

ROOT = Path(__file__).resolve().parent.parent
EVENTS_PER_JOB = 3  # task-received, task-started, task-succeeded
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process and its threads (None: it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK


class CpuMeter:
    """CPU seconds spent by groups of processes between ``start`` and ``stop``;
    a process that ended meanwhile is left out (the server's: short-lived
    connections such as this benchmark's polls). ``stop`` takes the groups
    again: a process that started meanwhile counts whole (a worker opens its
    completion connection at its first completion, after the start)."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.before = {name: {p: cpu_seconds(p) for p in pids} for name, pids in groups.items()}

    def stop(self, now: dict[str, list[int]] | None = None) -> dict[str, float]:
        spent: dict[str, float] = {}
        for name, before in self.before.items():
            total = 0.0
            for pid, start in before.items():
                end = cpu_seconds(pid)
                if start is not None and end is not None:
                    total += end - start
            for pid in (now or {}).get(name, []):
                if pid not in before:
                    total += cpu_seconds(pid) or 0.0
            spent[name] = total
        return spent


def server_pids(dsn: str) -> dict[str, list[int]]:
    """Every server process this role can see (a superuser sees them all), in
    groups: the workers' backends, the listener's, and the rest (background
    processes, this benchmark's own)."""
    groups: dict[str, list[int]] = {
        "server: workers'": [],
        "server: listener's": [],
        "server: rest": [],
    }
    with psycopg.connect(dsn, autocommit=True) as conn:
        for pid, name in conn.execute("SELECT pid, application_name FROM pg_stat_activity"):
            if name.startswith("jobqueue-events"):
                groups["server: listener's"].append(pid)
            elif name.startswith("jobqueue") and "worker" in name:
                groups["server: workers'"].append(pid)
            else:
                groups["server: rest"].append(pid)
    return groups


class LockOnly:
    """The statements' own share: the events lock held, nobody LISTENing (the
    NOTIFYs are sent, and dropped by the server)."""

    def __init__(self, dsn: str, schema: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute("SELECT pg_advisory_lock(%s, 0)", (lock_classes(schema)["events"],))

    def stop(self) -> None:
        self.conn.close()


class ListenOnly(LockOnly):
    """The delivery's share: the events lock held and the channel LISTENed to
    by a thread that takes each notification and drops it (no reads)."""

    def __init__(self, dsn: str, schema: str) -> None:
        super().__init__(dsn, schema)
        self.listen = psycopg.connect(dsn, autocommit=True, application_name="jobqueue-events-bare")
        self.listen.execute(f'LISTEN "{channels(schema)["events"]}"')
        self.received = 0
        self._thread = threading.Thread(target=self._drop, daemon=True)
        self._thread.start()

    def _drop(self) -> None:
        try:
            for _ in self.listen.notifies():
                self.received += 1
        except psycopg.Error:
            pass  # closed by stop()

    def stop(self) -> None:
        self.listen.cancel_safe()
        self.listen.close()
        super().stop()


class Listener:
    """``jobqueue events --json`` in a subprocess; a thread counts its task events."""

    def __init__(self, dsn: str, schema: str, nice: int) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("JOBQUEUE_DSN", None)
        command = [sys.executable, "-m", "jobqueue", "--dsn", dsn, "--schema", schema]
        command += ["events", "--json"]
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=(lambda: os.nice(nice)) if nice else None,
        )
        self.lines = 0
        self.last_at = 0.0
        self.ready = threading.Event()
        threading.Thread(target=self._stderr, daemon=True).start()
        threading.Thread(target=self._stdout, daemon=True).start()
        if not self.ready.wait(60):
            raise RuntimeError("the listener did not start")

    def _stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if b"listening" in line:
                self.ready.set()
            else:
                sys.stderr.write("listener: " + line.decode(errors="replace"))

    def _stdout(self) -> None:
        # Read in chunks and count: a line at a time, this thread took a
        # tenth of a core at 60,000 events/s, from the workers' machine.
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        mark = b'{"type": "task-'
        tail = b""
        while chunk := os.read(fd, 1 << 16):
            data = tail + chunk
            found = data.count(mark)
            if found:
                self.lines += found
                self.last_at = time.time()
            tail = data[-(len(mark) - 1) :]

    def wait_for(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.lines < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.lines >= count

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def drain(bench: Bench, n: int, workers: int, mode: str, nice: int, tag: str) -> dict[str, float]:
    schema = f"bench_events_{tag}"
    app, noop = bench.schema(schema)
    procs = [bench.start_worker(schema) for _ in range(workers)]
    listener = Listener(bench.dsn, schema, nice) if mode == "listener" else None
    held: LockOnly | None = None
    if mode == "lock only":
        held = LockOnly(bench.dsn, schema)
    elif mode == "listen only":
        held = ListenOnly(bench.dsn, schema)
    try:
        groups = {"worker": [p.pid for p in procs]}
        if listener is not None:
            groups["listener"] = [listener.proc.pid]
        groups.update(server_pids(bench.dsn))
        meter = CpuMeter(groups)
        app.enqueue_many(noop, [() for _ in range(n)])
        first, last = bench.wait_drained(schema, n, procs, poll=0.1)
        out = {"rate": n / (last - first).total_seconds()}
        if listener is not None:
            caught_up = listener.wait_for(EVENTS_PER_JOB * n, timeout=max(120.0, n / 200))
            out["events"] = float(listener.lines)
            out["lag"] = (listener.last_at - last.timestamp()) if caught_up else float("nan")
        for name, seconds in meter.stop(server_pids(bench.dsn)).items():
            out[f"cpu {name}"] = seconds / n * 1e6  # us per job
        return out
    finally:
        if listener is not None:
            listener.stop()
        if held is not None:
            held.stop()
        bench.discard(app, schema)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.events", description=__doc__)
    parser.add_argument("--dsn", required=True, help="a maintenance database on the server")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--listener-nice", type=int, default=0)
    parser.add_argument(
        "--lock-only",
        action="store_true",
        help="a third mode: the events lock held and nobody reading (the statements' share)",
    )
    parser.add_argument(
        "--listen-only",
        action="store_true",
        help="another mode: the lock held and the channel LISTENed to, each notification "
        "taken and dropped (the delivery's share, without the reads)",
    )
    options = parser.parse_args(argv)
    modes = ["no listener", "listener"] + (["lock only"] if options.lock_only else [])
    modes += ["listen only"] if options.listen_only else []
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    cpu: dict[str, dict[str, list[float]]] = {mode: {} for mode in modes}
    with bench_database(options.dsn, "events") as dsn:
        bench = Bench(dsn)
        try:
            for run in range(options.runs):
                order = modes if run % 2 == 0 else modes[::-1]
                for mode in order:
                    got = drain(
                        bench,
                        options.jobs,
                        options.workers,
                        mode,
                        options.listener_nice,
                        f"{run}_{modes.index(mode)}",
                    )
                    rates[mode].append(got["rate"])
                    for key, value in got.items():
                        if key.startswith("cpu "):
                            cpu[mode].setdefault(key[4:], []).append(value)
                    extra = ""
                    if "events" in got:
                        extra = f" ({got['events']:,.0f} events, last {got['lag']:.2f}s after)"
                    spent = ", ".join(
                        f"{key[4:]} {value:.1f}" for key, value in got.items() if key[:4] == "cpu "
                    )
                    print(
                        f"run {run + 1} {mode}: {got['rate']:,.0f} jobs/s{extra}; "
                        f"CPU us/job: {spent}",
                        flush=True,
                    )
        finally:
            bench.close()
    print(
        f"\n{options.jobs:,} no-op jobs, {options.workers} worker(s), {options.runs} runs "
        f"each, interleaved; listener nice {options.listener_nice}; jobs/s"
    )
    print("| mode | median | min | max | every run |\n|---|---:|---:|---:|---|")
    for mode, values in rates.items():
        every = ", ".join(f"{v:,.0f}" for v in values)
        print(
            f"| {mode} | {statistics.median(values):,.0f} | {min(values):,.0f} | "
            f"{max(values):,.0f} | {every} |"
        )
    base = statistics.median(rates["no listener"])
    for mode in modes[1:]:
        print(f"{mode} / no listener = {statistics.median(rates[mode]) / base:.3f}")
    print("\nCPU per job (us, medians of the runs)")
    names = list(dict.fromkeys(group for used in cpu.values() for group in used))
    print(f"| mode | {' | '.join(names)} | total | total / no listener |")
    print("|---|" + "---:|" * (len(names) + 2))
    totals: dict[str, float] = {}
    for mode, used in cpu.items():
        medians = {group: statistics.median(values) for group, values in used.items()}
        totals[mode] = sum(medians.values())
        cells = " | ".join(f"{medians[n]:.1f}" if n in medians else "-" for n in names)
        ratio = totals[mode] / totals["no listener"]
        print(f"| {mode} | {cells} | {totals[mode]:.1f} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
