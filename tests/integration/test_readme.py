"""README's "Use it" runs as written: its tasks module, its two commands, and
its producer script, against a database of this test's own."""

from __future__ import annotations

import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.conftest import ROOT, wait_for


def _use_it_blocks() -> list[tuple[str, str]]:
    """(language, text) of each fenced block in README's "## Use it"."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Use it\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", section, re.DOTALL)


@pytest.fixture
def own_database(server_dsn: str) -> Iterator[str]:
    """A database of this test's own: the README's app uses the schema "jobqueue"."""
    name = f"jobqueue_readme_{secrets.token_hex(4)}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    params = {k: v for k, v in conninfo_to_dict(server_dsn).items() if v is not None}
    try:
        yield make_conninfo("", **{**params, "dbname": name})
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_use_it_runs_as_written(own_database: str, tmp_path: Path) -> None:
    blocks = _use_it_blocks()
    tasks, commands, producer = blocks[0][1], blocks[1][1], blocks[2][1]
    assert [lang for lang, _ in blocks[:3]] == ["python", "sh", "python"]
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "__init__.py").write_text("")
    (tmp_path / "proj" / "tasks.py").write_text(tasks)
    (tmp_path / "producer.py").write_text(producer)
    env = {**os.environ, "JOBQUEUE_DSN": own_database, "PYTHONPATH": f"{tmp_path}:{ROOT}"}
    upgrade, start_worker = (
        [sys.executable, "-m", "jobqueue", *shlex.split(line, comments=True)[1:]]
        for line in commands.strip().splitlines()
    )
    subprocess.run(upgrade, cwd=tmp_path, env=env, check=True, capture_output=True, timeout=120)
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        start_worker, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        with psycopg.connect(own_database, autocommit=True) as conn:
            wait_for(
                lambda: conn.execute("SELECT count(*) FROM jobqueue.workers").fetchone()[0],
                60,
                "the README's worker to start",
            )
        done = subprocess.run(
            [sys.executable, "producer.py"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        with psycopg.connect(own_database, autocommit=True) as conn:
            assert conn.execute("SELECT id FROM orders").fetchall() == [(1,)]
            row = conn.execute(
                "SELECT count(*) FROM jobqueue.all_jobs WHERE task = 'proj.tasks.add'"
            ).fetchone()
            assert row is not None and row[0] >= 9  # delay, apply_async, 2 bulk, chain, group
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
        log.close()
