"""Job and queue management (issue 21) through both faces, Python
(``app.control``) and the CLI (``jobqueue jobs|queue ...`` in a subprocess),
against real worker processes: each scenario runs once per face."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

from jobqueue import states
from tests.conftest import ROOT, wait_for


def jobqueue(dsn: str, schema: str, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "JOBQUEUE_DSN"}
    return subprocess.run(
        [sys.executable, "-m", "jobqueue", "--dsn", dsn, "--schema", schema, *args],
        cwd=ROOT,
        text=True,
        capture_output=True,
        timeout=120,
        env=env,
        **kw,
    )


def _options(filters: dict[str, Any]) -> list[str]:
    words: list[str] = []
    for name, value in filters.items():
        flag = "--" + name.replace("_", "-")
        if name == "ids":
            for job_id in [value] if isinstance(value, str) else value:
                words += ["--id", str(job_id)]
        elif isinstance(value, bool):
            words += [flag] if value else []
        elif isinstance(value, datetime):
            words += [flag, value.isoformat()]
        else:
            words += [flag, str(value)]
    return words


class Face:
    """One way to run the operations: ``python`` (app.control) or ``cli``."""

    def __init__(self, kind: str, app: Any, dsn: str, schema: str) -> None:
        self.kind, self.app, self.dsn, self.schema = kind, app, dsn, schema

    def cli(self, *args: str) -> Any:
        done = jobqueue(self.dsn, self.schema, *args)
        assert done.returncode == 0, done
        return json.loads(done.stdout)

    def pause(self, name: str) -> bool:
        if self.kind == "python":
            return bool(self.app.control.pause_queue(name, reason="test"))
        return bool(self.cli("queue", "pause", name, "--reason", "test", "--json")["changed"])

    def resume(self, name: str) -> bool:
        if self.kind == "python":
            return bool(self.app.control.resume_queue(name))
        return bool(self.cli("queue", "resume", name, "--json")["changed"])

    def purge(self, queue: str | None = None) -> int:
        if self.kind == "python":
            return int(self.app.control.purge(queue))
        extra = ["--queue", queue] if queue else []
        return int(self.cli("jobs", "purge", *extra, "--yes", "--json")["count"])

    def bulk(self, action: str, **filters: Any) -> int:
        if self.kind == "python":
            return int(getattr(self.app.control, action)(**filters))
        extra = [] if action == "move" else ["--yes"]
        return int(self.cli("jobs", action, *_options(filters), *extra, "--json")["count"])


@pytest.fixture(params=["python", "cli"])
def face(request: Any, jq: Any, dsn: str, schema: str) -> Face:
    jq.app.control.batch_size = 7  # many batches, even for a few jobs
    return Face(request.param, jq.app, dsn, schema)


def _states(conn: psycopg.Connection[Any], schema: str) -> dict[str, int]:
    rows = conn.execute(
        f'SELECT state, count(*) FROM "{schema}".all_jobs GROUP BY state'
    ).fetchall()
    return {str(state): int(n) for state, n in rows}


def _paused(conn: psycopg.Connection[Any], schema: str) -> dict[str, bool]:
    rows = conn.execute(f'SELECT queue, paused FROM "{schema}".queue_stats').fetchall()
    return {str(q): bool(p) for q, p in rows}


def test_a_paused_queue_is_skipped_by_a_running_worker_then_drained_on_resume(
    face: Face, jq: Any, schema: str, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    start_worker("--queues", "default,other", "--concurrency", "2")
    assert face.pause("default") is True
    assert face.pause("default") is False  # already paused: nothing changes
    held = [jq.add.delay(i, i) for i in range(5)]
    # The worker claims across both queues in one statement: once it ran the
    # later job of `other`, it has passed over the paused queue's jobs.
    assert jq.add.apply_async((1, 1), queue="other").get(timeout=30) == 2
    assert {r.state for r in held} == {states.PENDING}
    assert _paused(conn, schema)["default"] is True
    assert {q.queue: q.paused for q in face.app.control.queues()}["default"] is True
    assert face.resume("default") is True
    assert face.resume("default") is False
    assert [r.get(timeout=30) for r in held] == [0, 2, 4, 6, 8]
    assert _paused(conn, schema)["default"] is False


def test_purge_under_load_revokes_every_waiting_job_and_returns_the_count(
    face: Face, jq: Any, schema: str, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    start_worker("--concurrency", "2")
    results = jq.app.enqueue_many(jq.sleep, [(0.002,)] * 3000)
    wait_for(lambda: _states(conn, schema).get(states.SUCCESS), 30, "the drain to start")
    purged = face.purge("default")
    assert purged > 0
    # Jobs the worker holds finish; nothing else runs, and nothing waits for ever.
    wait_for(
        lambda: conn.execute(f'SELECT count(*) FROM "{schema}".job_lease').fetchone() == (0,),
        30,
        "the claimed jobs to finish",
    )
    counts = _states(conn, schema)
    assert counts.get(states.PENDING, 0) == 0 and counts.get(states.RETRY, 0) == 0
    assert counts[states.REVOKED] == purged
    assert counts[states.SUCCESS] + purged == len(results)
    assert face.purge("default") == 0


def test_retry_runs_each_failure_once_more_and_keeps_its_history(
    face: Face, jq: Any, schema: str, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    start_worker("--concurrency", "4")
    failed = [jq.boom.delay(f"n{i}") for i in range(20)]
    fine = jq.add.delay(1, 2)
    for r in failed:
        assert isinstance(r.get(timeout=30, propagate=False), Exception)
    assert fine.get(timeout=30) == 3
    # The worker is running: a retried job may fail again while the call walks
    # on; it must not be retried a second time.
    assert face.bulk("retry", task="boom", state="FAILURE") == 20

    def attempts() -> list[Any]:
        return conn.execute(
            f'SELECT state, attempts, (SELECT count(*) FROM "{schema}".job_history h '
            f'WHERE h.job_id = j.id) FROM "{schema}".all_jobs j WHERE task = %s',
            ("boom",),
        ).fetchall()

    wait_for(lambda: all(row[0] == states.FAILURE for row in attempts()), 30, "the re-runs")
    assert attempts() == [(states.FAILURE, 2, 2)] * 20
    assert fine.state == states.SUCCESS  # never retried: it did not fail
    assert face.bulk("retry", ids=[fine.id]) == 0


def test_cancel_revokes_waiting_jobs_and_terminates_a_running_one(
    face: Face, jq: Any, schema: str, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    start_worker("--concurrency", "1")
    running = jq.ticking.delay(60)
    wait_for(lambda: running.state == states.STARTED, 30, "the job to start")
    waiting = [jq.ticking.delay(60) for _ in range(3)]
    other = jq.add.apply_async((1, 1), queue="elsewhere")
    assert face.bulk("cancel", task="ticking", terminate=True) == 4
    for r in [running, *waiting]:
        with pytest.raises(Exception, match="revoked"):
            r.get(timeout=30)
    assert other.state == states.PENDING  # not matched by the filter
    history = conn.execute(
        f'SELECT state FROM "{schema}".job_history WHERE job_id = %s', (running.id,)
    ).fetchall()
    assert history == [(states.REVOKED,)]
    assert face.bulk("cancel", task="ticking") == 0


def test_delete_removes_finished_jobs_only(
    face: Face, jq: Any, schema: str, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    worker = start_worker()
    done = [jq.add.delay(i, 1) for i in range(4)]
    assert [r.get(timeout=30) for r in done] == [1, 2, 3, 4]
    assert isinstance(jq.boom.delay("x").get(timeout=30, propagate=False), Exception)
    assert worker.terminate() == 0
    waiting = jq.add.delay(5, 5)
    assert face.bulk("delete", task="add") == 4
    assert _states(conn, schema) == {states.PENDING: 1, states.FAILURE: 1}
    assert waiting.state == states.PENDING
    assert face.bulk("delete", exception="CustomError") == 1
    left = conn.execute(f'SELECT count(*) FROM "{schema}".job_attempts').fetchone()
    assert left == (0,)  # attempts went with their jobs


def test_move_changes_queue_priority_and_eta_of_waiting_jobs(
    face: Face, jq: Any, schema: str, conn: psycopg.Connection[Any]
) -> None:
    jobs = [jq.add.apply_async((i, i), queue="a") for i in range(10)]
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    assert face.bulk("move", queue="a", to_queue="b", to_priority=7) == 10
    rows = conn.execute(f'SELECT DISTINCT queue, priority FROM "{schema}".all_jobs').fetchall()
    assert rows == [("b", 7)]
    assert face.bulk("move", ids=[jobs[0].id], to_eta=later) == 1
    run_at = conn.execute(
        f'SELECT run_at FROM "{schema}".all_jobs WHERE id = %s', (jobs[0].id,)
    ).fetchone()
    assert run_at is not None and abs((run_at[0] - later).total_seconds()) < 0.01


def test_jobs_pages_by_id_in_python_and_the_cli(jq: Any, dsn: str, schema: str) -> None:
    ids = [r.id for r in jq.app.enqueue_many(jq.add, [(i, i) for i in range(25)])]
    jq.app.control.batch_size = 10
    listed = [str(job.id) for job in jq.app.control.jobs(task="add")]
    assert listed == sorted(ids) and len(listed) == 25
    assert [str(j.id) for j in jq.app.control.jobs(limit=3)] == sorted(ids)[:3]

    first = jobqueue(dsn, schema, "jobs", "list", "--limit", "10")
    assert first.returncode == 0, first
    lines = first.stdout.splitlines()
    assert lines[0].split("\t")[:4] == ["id", "state", "queue", "task"]
    page1 = [line.split("\t")[0] for line in lines[1:]]
    assert page1 == sorted(ids)[:10]
    assert f"--after {page1[-1]}" in first.stderr
    second = jobqueue(dsn, schema, "jobs", "list", "--limit", "10", "--after", page1[-1], "--json")
    assert second.returncode == 0, second
    page2 = json.loads(second.stdout)
    assert [j["id"] for j in page2] == sorted(ids)[10:20]
    assert page2[0]["state"] == "PENDING" and page2[0]["task"] == "add"
    empty = jobqueue(dsn, schema, "jobs", "list", "--state", "SUCCESS", "--json")
    assert json.loads(empty.stdout) == []


def test_show_prints_arguments_traceback_and_every_attempt(
    jq: Any, dsn: str, schema: str, start_worker: Any
) -> None:
    start_worker()
    failed = jq.boom.delay("first")
    assert isinstance(failed.get(timeout=30, propagate=False), Exception)
    assert failed.retry() is True
    wait_for(lambda: failed.retries == 1 and failed.state == states.FAILURE, 30, "the re-run")
    done = jobqueue(dsn, schema, "jobs", "show", failed.id)
    assert done.returncode == 0, done
    for text in ('args:     ["first"]', "attempts: 2", "CustomError: first", "Traceback"):
        assert text in done.stdout, done.stdout
    shown = json.loads(jobqueue(dsn, schema, "jobs", "show", failed.id, "--json").stdout)
    assert shown["args"] == ["first"] and shown["attempts"] == 2
    # Every attempt, from the job_history view.
    assert "#1 FAILURE" in done.stdout and "#2 FAILURE" in done.stdout
    assert [a["attempt"] for a in shown["history"]] == [1, 2]
    missing = jobqueue(dsn, schema, "jobs", "show", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 1 and "no job with id" in missing.stderr


def _in_a_terminal(dsn: str, schema: str, args: list[str], answer: str) -> tuple[int, str]:
    """Run the CLI on a pseudo-terminal, answer its prompt, return (status, output)."""
    primary, secondary = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "JOBQUEUE_DSN"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobqueue", "--dsn", dsn, "--schema", schema, *args],
        cwd=ROOT,
        env=env,
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
    )
    os.close(secondary)
    output = b""
    answered = False
    while True:
        ready, _, _ = select.select([primary], [], [], 60)
        assert ready, f"no output from the CLI: {output!r}"
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
        if not answered and b"[y/N]" in output:
            os.write(primary, answer.encode() + b"\n")
            answered = True
    os.close(primary)
    return proc.wait(30), output.decode(errors="replace")


def test_destructive_commands_ask_first_and_refuse_without_a_terminal(
    jq: Any, dsn: str, schema: str, conn: psycopg.Connection[Any]
) -> None:
    for i in range(3):
        jq.add.delay(i, i)
    refused = jobqueue(dsn, schema, "jobs", "purge", stdin=subprocess.DEVNULL)
    assert refused.returncode == 2
    assert "refusing to purge 3 jobs" in refused.stderr and "--yes" in refused.stderr
    assert _states(conn, schema) == {states.PENDING: 3}

    status, output = _in_a_terminal(dsn, schema, ["jobs", "cancel", "--task", "add"], "n")
    assert "Cancel 3 jobs (task add)? [y/N]" in output
    assert status == 1 and "nothing changed" in output
    assert _states(conn, schema) == {states.PENDING: 3}

    status, output = _in_a_terminal(dsn, schema, ["jobs", "purge"], "y")
    assert status == 0 and "Purged 3 jobs." in output
    assert _states(conn, schema) == {states.REVOKED: 3}
    nothing = jobqueue(dsn, schema, "jobs", "purge", stdin=subprocess.DEVNULL)
    assert nothing.returncode == 0 and "Purged 0 jobs." in nothing.stdout  # nothing to ask
