"""Enqueue paths: plain SQL, bad input, options, ordering and expiry."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

from jobqueue import TaskRevokedError, states
from tests.conftest import wait_for


def _count(conn: Any, schema: str) -> int:
    row = conn.execute(f'SELECT count(*) FROM "{schema}".all_jobs').fetchone()  # waiting too
    return int(row[0])


def test_enqueue_from_plain_sql_runs_on_a_worker(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    start_worker()
    row = conn.execute(f"""SELECT "{schema}".enqueue('add', '[20, 22]'::jsonb)""").fetchone()
    assert jq.app.AsyncResult(str(row[0])).get(timeout=10) == 42
    row = conn.execute(
        f"""SELECT "{schema}".enqueue(task => 'echo', kwargs => '{{"a": 1}}'::jsonb,
                                       queue => 'default', priority => 3)"""
    ).fetchone()
    assert jq.app.AsyncResult(str(row[0])).get(timeout=10) == {"args": [], "kwargs": {"a": 1}}


def test_sql_enqueue_rejects_malformed_arguments(schema: str, conn: Any) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="args must be a JSON array"):
        conn.execute(f"""SELECT "{schema}".enqueue('add', '{{"x": 1}}'::jsonb)""")
    assert _count(conn, schema) == 0


def test_trigger_enqueues_in_the_same_transaction(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    conn.execute(f'CREATE TABLE "{schema}".signups (email text)')
    conn.execute(f'''
        CREATE FUNCTION "{schema}".on_signup() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM "{schema}".enqueue('echo', jsonb_build_array(NEW.email));
            RETURN NEW;
        END $$''')
    conn.execute(
        f'CREATE TRIGGER signup AFTER INSERT ON "{schema}".signups '
        f'FOR EACH ROW EXECUTE FUNCTION "{schema}".on_signup()'
    )
    start_worker()
    conn.execute(f"""INSERT INTO "{schema}".signups VALUES ('a@example.com')""")
    job_id = conn.execute(f'SELECT id FROM "{schema}".jobs').fetchone()[0]
    assert jq.app.AsyncResult(str(job_id)).get(timeout=10) == {
        "args": ["a@example.com"],
        "kwargs": {},
    }


def test_non_json_argument_names_the_culprit_and_writes_nothing(
    jq: Any, schema: str, conn: Any
) -> None:
    with pytest.raises(TypeError, match=r"argument 1 of task 'add' is not JSON serializable"):
        jq.add.delay(1, {1, 2})
    with pytest.raises(TypeError, match=r"keyword argument 'when' of task 'echo'"):
        jq.echo.delay(when=datetime.now())
    with pytest.raises(TypeError, match=r"argument 0 .*nan \(float\)"):
        jq.add.delay(float("nan"), 1)
    with pytest.raises(TypeError, match=r"item 2: argument 0 of task 'add'"):
        jq.app.enqueue_many(jq.add, [(1, 2), (3, 4), (object(), 5)])
    assert _count(conn, schema) == 0


def test_an_argument_jsonb_cannot_store_names_the_culprit_and_writes_nothing(
    jq: Any, schema: str, conn: Any
) -> None:
    """JSON allows the NUL character; PostgreSQL's jsonb does not. The enqueue
    fails before the database is asked, naming the argument."""
    with pytest.raises(ValueError, match=r"argument 1 of task 'echo' contains a NUL character"):
        jq.echo.delay("fine", "a\x00b")
    with pytest.raises(ValueError, match=r"keyword argument 'note' of task 'echo'"):
        jq.echo.delay(note={"deep": ["\x00"]})
    with pytest.raises(ValueError, match=r"argument 0 of task 'echo' contains a NUL"):
        jq.app.enqueue_many(jq.echo, [("ok",), ("\x00",)])
    assert _count(conn, schema) == 0
    # A backslash followed by "u0000" is six ordinary characters: stored as they are.
    assert jq.echo.delay("\\u0000").id
    assert _count(conn, schema) == 1


def test_bad_options_are_rejected_before_writing(jq: Any, schema: str, conn: Any) -> None:
    with pytest.raises(ValueError, match="task_id must be a UUID"):
        jq.add.apply_async((1, 2), task_id="not-a-uuid")
    with pytest.raises(ValueError, match="priority"):
        jq.add.apply_async((1, 2), priority="high")
    with pytest.raises(ValueError, match="countdown or eta"):
        jq.add.apply_async((1, 2), countdown=1, eta=datetime.now())
    with pytest.raises(TypeError, match="expires"):
        jq.add.apply_async((1, 2), expires="soon")
    with pytest.raises(TypeError, match="unknown option"):
        jq.app.task(retries_please=3)
    assert _count(conn, schema) == 0


def test_task_id_eta_queue_and_priority_are_stored(jq: Any, schema: str, conn: Any) -> None:
    eta = datetime.now(timezone.utc) + timedelta(hours=1)
    result = jq.add.apply_async(
        (1, 2),
        task_id="0190e5f0-0000-7000-8000-0000000000aa",
        queue="reports",
        priority=7,
        eta=eta,
        expires=7200,
    )
    assert result.id == "0190e5f0-0000-7000-8000-0000000000aa"
    row = conn.execute(
        f'SELECT queue, priority, run_at, expires_at - created_at FROM "{schema}".jobs'
    ).fetchone()
    assert row[:3] == ("reports", 7, eta)
    assert row[3] == timedelta(hours=2)


def test_higher_priority_runs_first_then_older(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    low = [jq.add.apply_async((i, 0), priority=0) for i in range(3)]
    high = [jq.add.apply_async((i, 0), priority=9) for i in range(3)]
    start_worker("--concurrency", "1")
    for r in low + high:
        r.get(timeout=10)
    order = [str(r[0]) for r in conn.execute(f'SELECT id FROM "{schema}".jobs ORDER BY started_at')]
    assert order == [r.id for r in high + low]


def test_expired_job_is_revoked_and_never_runs(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    result = jq.echo.apply_async(("never",), expires=past)
    worker = start_worker()
    with pytest.raises(TaskRevokedError, match="expired"):
        result.get(timeout=10)
    assert result.state == states.REVOKED
    row = conn.execute(f'SELECT result, attempts FROM "{schema}".jobs').fetchone()
    assert row == (None, 1)  # claimed once, recorded unrun
    line = f"Task echo[{result.id}] expired before it started"  # INFO lines may come 0.1 s late
    wait_for(lambda: line in worker.log, 5, "the expiry's log line")
    assert "succeeded" not in worker.log


def test_queues_route_jobs_to_their_workers(jq: Any, start_worker: Any) -> None:
    start_worker("--queues", "alpha,beta")
    assert jq.add.apply_async((1, 1), queue="beta").get(timeout=10) == 2
    other = jq.add.apply_async((1, 1), queue="gamma")
    with pytest.raises(TimeoutError):
        other.get(timeout=0.5)
    assert other.state == states.PENDING


def test_expired_jobs_do_not_stall_the_next_claim(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    start_worker("--concurrency", "1", "--poll-interval", "30")
    with psycopg.connect(jq.app.conf.dsn) as tx:  # one transaction, one wake-up
        past = datetime.now(timezone.utc) - timedelta(seconds=1)
        expired = [jq.add.apply_async((i, 0), expires=past, connection=tx) for i in range(3)]
        good = jq.add.apply_async((1, 1), priority=-1, connection=tx)
    # Each claim round takes one expired row; the worker must claim again at once
    # rather than wait for its 30 s poll.
    assert good.get(timeout=10) == 2
    assert [r.state for r in expired] == [states.REVOKED] * 3


def test_send_task_by_name_uses_the_registered_defaults(jq: Any, schema: str, conn: Any) -> None:
    @jq.app.task(name="routed", queue="reports", priority=4)
    def routed() -> None:
        return None

    jq.app.send_task("routed")
    jq.app.send_task("routed", queue="other", priority=1)
    rows = conn.execute(f'SELECT queue, priority FROM "{schema}".all_jobs ORDER BY id').fetchall()
    assert rows == [("reports", 4), ("other", 1)]


def test_options_follow_the_task_settings_changed_after_enqueues(
    jq: Any, schema: str, conn: Any
) -> None:
    # stored_options encodes a task's options once per setting: a changed
    # setting must show in the next job, and per-call limits in that job only.
    @jq.app.task(name="tuned", max_retries=2)
    def tuned() -> None:
        return None

    tuned.delay()
    tuned.max_retries = 5
    tuned.time_limit = 30.0
    tuned.delay()
    tuned.apply_async(soft_time_limit=10)
    tuned.delay()
    rows = conn.execute(f'SELECT options FROM "{schema}".all_jobs ORDER BY id').fetchall()
    assert [r[0] for r in rows] == [
        {"max_retries": 2},
        {"max_retries": 5, "time_limit": 30.0},
        {"max_retries": 5, "soft_time_limit": 10.0, "time_limit": 30.0},
        {"max_retries": 5, "time_limit": 30.0},
    ]


def test_enqueue_many_refuses_string_items(jq: Any, schema: str, conn: Any) -> None:
    with pytest.raises(TypeError, match="item 1 of enqueue_many must be a tuple"):
        jq.app.enqueue_many(jq.add, [(1, 2), "12"])
    assert _count(conn, schema) == 0


def test_bulk_enqueue_keeps_awkward_text_intact(jq: Any, start_worker: Any) -> None:
    awkward = ["back\\slash", "tab\there", "new\nline", "cr\rhere", "\\N", "é 漢字 🎉", '"q"']
    results = jq.app.enqueue_many(jq.echo, [(s,) for s in awkward] + [{"k": "\\t\t"}])
    start_worker()
    values = [r.get(timeout=20) for r in results]
    assert [v["args"][0] for v in values[:-1]] == awkward
    assert values[-1] == {"args": [], "kwargs": {"k": "\\t\t"}}
