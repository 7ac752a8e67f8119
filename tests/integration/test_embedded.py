"""With no DSN anywhere, the app and the CLI share one embedded PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from jobqueue import JobQueue, embedded
from tests.apps import build
from tests.conftest import ROOT


def test_no_dsn_starts_and_shares_an_embedded_server(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("JOBQUEUE_DSN", raising=False)
    data_dir = tmp_path / "jq"
    app = JobQueue(data_dir=data_dir)
    tasks = build(app)
    env = {k: v for k, v in os.environ.items() if k != "JOBQUEUE_DSN"}
    env["JOBQUEUE_DATA_DIR"] = str(data_dir)
    worker = subprocess.Popen(
        [sys.executable, "-m", "jobqueue", "-A", "tests.apps:app", "worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert tasks.add.delay(20, 22).get(timeout=60) == 42
        assert "embedded PostgreSQL" in app.db.dsn() or (data_dir / "pgdata").exists()
        assert (data_dir / "pgdata" / "PG_VERSION").exists()
    finally:
        worker.terminate()
        output = worker.communicate(timeout=30)[0]
        app.close()
        embedded.stop(data_dir)
    assert worker.returncode == 0, output
    assert "using embedded PostgreSQL" in output
