"""The first hour on the embedded server: the demo stops what it started, a
worker's first start is not buried under initdb's output, and running as
root says what it did to the system."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from jobqueue import embedded
from tests.conftest import ROOT, wait_for


def _env(data_dir: Path) -> dict[str, str]:
    env = {**os.environ, "JOBQUEUE_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    env.pop("JOBQUEUE_DSN", None)
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_the_demo_stops_the_server_it_started(tmp_path: Path) -> None:
    data_dir = tmp_path / "jq"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "jobqueue", "demo"],
            cwd=tmp_path,
            env=_env(data_dir),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "stopped the embedded PostgreSQL it started" in done.stdout
        assert not embedded.is_running(data_dir)
    finally:
        embedded.stop(data_dir)


def test_the_demo_leaves_a_server_it_did_not_start_with_a_command_that_works(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "jq"
    embedded.start(data_dir)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "jobqueue", "demo"],
            cwd=tmp_path,
            env=_env(data_dir),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert embedded.is_running(data_dir)
        hint = done.stdout.rsplit("stop it with: ", 1)[1].strip()
        stopped = subprocess.run(
            hint, shell=True, cwd=tmp_path, env=_env(data_dir), capture_output=True, text=True
        )
        assert stopped.stdout.strip() == "stopped", stopped
        assert not embedded.is_running(data_dir)
    finally:
        embedded.stop(data_dir)


def test_ctrl_c_in_the_demo_stops_the_server_it_started(tmp_path: Path) -> None:
    data_dir = tmp_path / "jq"
    demo = subprocess.Popen(
        [sys.executable, "-m", "jobqueue", "demo"],
        cwd=tmp_path,
        env=_env(data_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's Ctrl-C reaches
    )
    try:
        assert demo.stdout is not None
        lines = []
        for line in demo.stdout:
            lines.append(line)
            if "committed order 1" in line:  # the worker is starting: the job not yet run
                os.killpg(demo.pid, signal.SIGINT)
                break
        lines += demo.stdout.readlines()
        assert demo.wait(timeout=60) == 130, lines  # the job needs a worker: not yet run
        output = "".join(lines)
        assert "Traceback" not in output and "demo: interrupted" in output
        assert "stopped the embedded PostgreSQL it started" in output
        assert not embedded.is_running(data_dir)
    finally:
        if demo.poll() is None:
            demo.kill()
        embedded.stop(data_dir)


def test_a_first_worker_start_does_not_print_initdb_output(tmp_path: Path) -> None:
    data_dir = tmp_path / "jq"
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log_file:
        worker = subprocess.Popen(
            [sys.executable, "-m", "jobqueue", "-A", "jobqueue.demo:app", "worker", "-c", "1"],
            cwd=tmp_path,
            env=_env(data_dir),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: worker.poll() is not None or " ready: " in log_path.read_text(),
            60,
            "the worker to start",
        )
        assert worker.poll() is None, log_path.read_text()
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
        embedded.stop(data_dir)
    output = log_path.read_text()
    assert "using embedded PostgreSQL" in output
    for noise in ("initdb", "Success. You can now start", "Running commandline", "stdout:"):
        assert noise not in output, output
    assert len(output.splitlines()) < 10, output


@pytest.mark.skipif(not embedded._running_as_root(), reason="only root creates an OS user")
def test_running_as_root_says_once_that_it_created_an_os_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The user exists on this machine already (deleting it would stop other
    # servers); the first answer is made "no" so the start looks like the first.
    answers = iter([False])
    monkeypatch.setattr(embedded, "_os_user_exists", lambda name: next(answers, True))
    data_dir = tmp_path / "jq"
    caplog.set_level(logging.WARNING, logger="jobqueue.embedded")
    try:
        embedded.start(data_dir)
        embedded.start(data_dir)  # the user exists now: nothing more is said
    finally:
        embedded.stop(data_dir)
    said = [r.getMessage() for r in caplog.records if "OS user" in r.getMessage()]
    assert len(said) == 1, said
    assert "created the OS user 'embedded_postgres'" in said[0] and "\n" not in said[0]
