"""The first hour on the embedded server: a worker's first start is not
buried under initdb's output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from jobqueue import embedded
from tests.conftest import ROOT, wait_for


def _env(data_dir: Path) -> dict[str, str]:
    env = {**os.environ, "JOBQUEUE_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    env.pop("JOBQUEUE_DSN", None)
    env["PYTHONPATH"] = str(ROOT)
    return env


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
