"""Periodic tasks with several beats, and schedules changed at run time in SQL."""

from __future__ import annotations

import itertools
import signal
import time
from datetime import timedelta
from typing import Any

import pytest

from tests.conftest import wait_for


def _ticks(conn: Any, schema: str, name: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        f'SELECT t.fire_at, t.job_id, j.state FROM "{schema}".schedule_ticks AS t '
        f'JOIN "{schema}".jobs AS j ON j.id = t.job_id WHERE t.schedule = %s ORDER BY t.fire_at',
        (name,),
    ).fetchall()


def test_three_beats_enqueue_each_second_exactly_once_even_when_one_is_killed(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    start_worker("--concurrency", "4")
    beats = [start_worker(command="beat") for _ in range(3)]
    started = time.monotonic()
    wait_for(lambda: len(_ticks(conn, schema, "every-second")) >= 1, 30, "the first tick")
    first_seen = time.monotonic()  # the beats' start-up (seconds under load) does not count
    wait_for(lambda: time.monotonic() - started > 10, 15, "ten seconds")
    beats[0].proc.send_signal(signal.SIGKILL)  # one beat dies mid-way: nothing changes
    wait_for(lambda: time.monotonic() - started > 20, 15, "twenty seconds")
    ticking = time.monotonic() - first_seen
    for beat in beats[1:]:
        assert beat.terminate() == 0
    ticks = _ticks(conn, schema, "every-second")
    fires = [t[0] for t in ticks]
    steps = {(b - a) for a, b in itertools.pairwise(fires)}
    print(
        f"\n3 beats (one killed at 10 s) for 20 s: {len(ticks)} ticks, "
        f"{len({t[1] for t in ticks})} jobs, steps {sorted(s.total_seconds() for s in steps)}"
    )
    assert len(ticks) >= int(ticking) - 1  # about one per second since the first
    assert steps == {timedelta(seconds=1)}  # one job per second: no gap, no duplicate
    assert len({t[1] for t in ticks}) == len(ticks)
    wait_for(
        lambda: all(t[2] == "SUCCESS" for t in _ticks(conn, schema, "every-second")[:-2]),
        20,
        "the ticks' jobs to run",
    )


def test_a_schedule_changed_in_sql_takes_effect_without_restarts(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    conn.execute(f"""INSERT INTO "{schema}".schedules (name, task, args, interval_secs)
                     VALUES ('from-sql', 'add', '[2, 2]', 1)""")
    start_worker(command="beat")
    wait_for(lambda: len(_ticks(conn, schema, "from-sql")) >= 2, 30, "two ticks a second apart")
    conn.execute(f"""UPDATE "{schema}".schedules SET interval_secs = 3 WHERE name = 'from-sql'""")
    changed_at = conn.execute("SELECT now()").fetchone()[0]

    def ticks_after_change() -> list[Any]:
        return [t[0] for t in _ticks(conn, schema, "from-sql") if t[0] > changed_at]

    wait_for(lambda: len(ticks_after_change()) >= 2, 30, "two ticks on the new schedule")
    after = ticks_after_change()
    assert after[1] - after[0] == timedelta(seconds=3)
    assert all(int(t.timestamp()) % 3 == 0 for t in after)
    conn.execute(f"""UPDATE "{schema}".schedules SET enabled = false WHERE name = 'from-sql'""")
    paused_count = len(_ticks(conn, schema, "from-sql"))
    resumed = conn.execute("SELECT now() + interval '4 seconds'").fetchone()[0]
    wait_for(lambda: conn.execute("SELECT now() > %s", (resumed,)).fetchone()[0], 10, "4 s")
    assert len(_ticks(conn, schema, "from-sql")) <= paused_count + 1  # at most one in flight


def test_schedule_cli(jq: Any, dsn: str, schema: str, conn: Any) -> None:
    from tests.integration.test_cli import jobqueue

    base = ("--dsn", dsn, "--schema", schema, "schedule")
    added = jobqueue(
        *base,
        "add",
        "nightly",
        "--task",
        "add",
        "--cron",
        "0 3 * * *",
        "--args",
        "[1, 2]",
        "--timezone",
        "Europe/Paris",
    )
    assert added.returncode == 0, added.stderr
    assert "nightly" in jobqueue(*base, "list").stdout
    paused = jobqueue(*base, "pause", "nightly")
    assert paused.returncode == 0 and paused.stdout.strip() == "nightly: paused"
    assert conn.execute(f'SELECT enabled FROM "{schema}".schedules').fetchone() == (False,)
    # The CLI calls the operations' SQL functions, as app.control and the dashboard do.
    assert jobqueue(*base, "pause", "nightly").stdout.strip() == "nightly: already paused"
    ran = jobqueue(*base, "run", "nightly")  # paused or not
    assert ran.returncode == 0, ran.stderr
    job_id = ran.stdout.strip().rsplit(" ", 1)[-1]
    row = conn.execute(f'SELECT task, args FROM "{schema}".all_jobs WHERE id = %s', (job_id,))
    assert row.fetchone() == ("add", [1, 2])
    assert jobqueue(*base, "resume", "nightly").stdout.strip() == "nightly: resumed"
    assert jq.app.control.pause_schedule("nightly") is True
    assert jq.app.control.resume_schedule("nightly") is True
    assert jq.app.control.resume_schedule("nightly") is False
    missing = jobqueue(*base, "pause", "no-such")
    assert missing.returncode == 1 and "no-such" in missing.stderr, missing.stderr
    with pytest.raises(ValueError, match="no-such"):
        jq.app.control.run_schedule("no-such")
    bad = jobqueue(*base, "add", "broken", "--task", "add", "--cron", "not cron")
    assert bad.returncode == 2 and "invalid cron expression" in bad.stderr
    assert jobqueue(*base, "remove", "nightly").returncode == 0
    assert jobqueue(*base, "remove", "nightly").returncode == 1


def test_a_broken_schedule_row_does_not_stop_the_beat(
    jq: Any, schema: str, conn: Any, start_worker: Any
) -> None:
    conn.execute(f"""INSERT INTO "{schema}".schedules (name, task, cron, timezone)
                     VALUES ('broken', 'add', '* * * * *', 'Mars/Olympus')""")
    conn.execute(f"""INSERT INTO "{schema}".schedules (name, task, args, interval_secs)
                     VALUES ('fine', 'add', '[1, 2]', 1)""")
    beat = start_worker(command="beat")
    wait_for(lambda: len(_ticks(conn, schema, "fine")) >= 2, 30, "the good schedule to tick")
    assert beat.proc.poll() is None
    assert "schedule 'broken' cannot be planned" in beat.log
