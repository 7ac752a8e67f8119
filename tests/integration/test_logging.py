"""--log-format json: every line a worker or a beat writes is one JSON object,
and every per-job line names its job (job_id, task, queue, attempt, state,
duration, exception)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from jobqueue import JobQueue
from tests.apps import build
from tests.conftest import ROOT, WorkerProcess, wait_for

JOB_FIELDS = ("job_id", "task", "queue", "attempt", "state", "duration", "exception")


def _lines(log: str) -> list[dict[str, Any]]:
    """Every line of ``log`` as a JSON object (fails, naming the line, if one is not)."""
    parsed = []
    for line in log.splitlines():
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise AssertionError(f"not a JSON line: {line!r}") from exc
        assert isinstance(value, dict), line
        for key in ("time", "level", "logger", "message", "pid"):
            assert key in value, line
        parsed.append(value)
    return parsed


def _job_lines(lines: list[dict[str, Any]], job_id: str) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("job_id") == job_id]


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_worker_json_lines_carry_each_jobs_fields(
    pool: str, dsn: str, schema: str, conn: psycopg.Connection[Any], tmp_path: Any
) -> None:
    # A password in the DSN (trust authentication ignores it) must appear nowhere.
    params = conninfo_to_dict(dsn)
    params["password"] = "pw-never-logged-7f3a"
    secret_dsn = make_conninfo("", **{k: v for k, v in params.items() if v is not None})
    worker = WorkerProcess(
        secret_dsn,
        schema,
        ["--log-format", "json", "-P", pool, "-c", "2"],
        tmp_path / "worker.log",
    )
    try:
        worker.wait_ready(conn)
        app = JobQueue(dsn, schema=schema, auto_migrate=False)
        tasks = build(app)
        ok = tasks.add.delay(2, 3)
        bad = tasks.boom.delay("kaput")
        retried = tasks.hopeless.delay()
        assert ok.get(timeout=30) == 5
        wait_for(lambda: bad.state == "FAILURE", 30, "boom to fail")
        wait_for(lambda: retried.state == "FAILURE", 30, "hopeless to fail its last attempt")
        app.close()
    finally:
        assert worker.terminate() == 0
    log = worker.log
    assert "pw-never-logged-7f3a" not in log
    lines = _lines(log)
    assert any("ready" in line["message"] for line in lines)

    for line in [*_job_lines(lines, ok.id), *_job_lines(lines, bad.id)]:
        assert set(JOB_FIELDS) <= set(line), line
    (success,) = _job_lines(lines, ok.id)
    assert success["task"] == "add" and success["queue"] == "default"
    assert success["state"] == "SUCCESS" and success["attempt"] == 1
    assert isinstance(success["duration"], float) and success["duration"] >= 0
    assert success["exception"] is None and success["level"] == "INFO"
    assert success["message"] == f"Task add[{ok.id}] succeeded in {success['duration']:.4f}s"

    (failure,) = _job_lines(lines, bad.id)
    assert failure["state"] == "FAILURE" and failure["exception"] == "CustomError"
    assert failure["level"] == "ERROR" and "kaput" in failure["message"]

    attempts = _job_lines(lines, retried.id)
    assert [(a["attempt"], a["state"]) for a in attempts] == [
        (1, "RETRY"),
        (2, "RETRY"),
        (3, "FAILURE"),
    ]
    assert all(a["exception"] == "ValueError" for a in attempts)


def test_beat_json_lines_from_the_environment(
    start_worker: Callable[..., WorkerProcess],
    conn: psycopg.Connection[Any],
    schema: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOBQUEUE_LOG_FORMAT", "json")  # the subprocess inherits it
    beat = start_worker(command="beat")

    def ticked() -> bool:
        row = conn.execute(f'SELECT count(*) FROM "{schema}".jobs').fetchone()
        return bool(row and row[0])

    wait_for(ticked, 30, "the beat's first tick")
    assert beat.terminate() == 0
    messages = [line["message"] for line in _lines(beat.log)]
    assert any(m.startswith("beat ready") for m in messages)
    assert any(m.startswith("beat stopped") for m in messages)


def test_a_bad_log_format_is_a_usage_error(
    start_worker: Callable[..., WorkerProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBQUEUE_LOG_FORMAT", "yaml")
    beat = start_worker(command="beat")
    assert beat.proc.wait(30) != 0
    assert "app.conf.log_format must be one of text, json, got 'yaml'" in beat.log
    assert "JOBQUEUE_LOG_FORMAT" in beat.log


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_by_default_a_worker_leaves_out_the_lines_of_jobs_that_succeed(
    pool: str, dsn: str, schema: str, conn: psycopg.Connection[Any], tmp_path: Any
) -> None:
    log_path = tmp_path / "worker.log"  # no --loglevel, unlike WorkerProcess
    with log_path.open("wb") as out:
        command = [sys.executable, "-m", "jobqueue", "-A", "tests.apps:app", "--dsn", dsn]
        command += ["--schema", schema, "worker", "--log-format", "json", "-P", pool, "-c", "2"]
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def registered() -> bool:
        assert proc.poll() is None, log_path.read_text()
        query = f'SELECT count(*) FROM "{schema}".workers WHERE pid = %s'
        row = conn.execute(query, (proc.pid,)).fetchone()
        return bool(row and row[0])

    try:
        wait_for(registered, 30, "the worker to register")
        app = JobQueue(dsn, schema=schema, auto_migrate=False)
        tasks = build(app)
        ok = tasks.add.delay(1, 1)
        bad = tasks.boom.delay("shown")
        assert ok.get(timeout=30) == 2
        wait_for(lambda: bad.state == "FAILURE", 30, "boom to fail")
        app.close()
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    lines = _lines(log_path.read_text())
    assert any(" ready: " in line["message"] for line in lines)  # INFO, the worker's own
    assert _job_lines(lines, ok.id) == []
    (failure,) = _job_lines(lines, bad.id)
    assert failure["level"] == "ERROR" and failure["exception"] == "CustomError"
