"""Filters of app.control and the CLI: checked before any SQL, with messages
that say what is expected."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from click.testing import CliRunner

from jobqueue.cli import main
from jobqueue.control import Filters
from jobqueue.control.filters import RETRYABLE
from jobqueue.ids import new_id

NOW = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)


def test_filters_normalise_ids_and_state() -> None:
    job = new_id()
    f = Filters(ids=(job.upper(), job), state="failure", queue="q")
    assert f.ids == (job,) and f.state == "FAILURE"
    assert f.params() == {
        "ids": [job],
        "queue": "q",
        "task": None,
        "state": "FAILURE",
        "exception": None,
        "enqueued_after": None,
        "enqueued_before": None,
        "finished_after": None,
        "finished_before": None,
    }
    assert Filters(ids=job).ids == (job,)  # one id alone


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"state": "DONE"}, ValueError, "unknown state 'DONE': expected one of FAILURE, PENDING"),
        ({"ids": ()}, ValueError, "ids is empty"),
        ({"ids": ["not-a-uuid"]}, ValueError, "id must be a UUID string"),
        ({"ids": 5}, TypeError, "ids must be a job id or a list"),
        ({"enqueued_after": datetime(2024, 5, 1)}, ValueError, "must be timezone-aware"),
        ({"finished_before": "2024-05-01"}, TypeError, "finished_before must be a datetime"),
        (
            {"enqueued_after": NOW, "enqueued_before": NOW - timedelta(1)},
            ValueError,
            "must be earlier than",
        ),
        ({"queue": ""}, ValueError, "queue must be a non-empty string"),
        ({"limit": 0}, ValueError, "limit must be a positive integer"),
        ({"limit": True}, ValueError, "limit must be a positive integer"),
    ],
)
def test_bad_filters_say_what_is_expected(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Filters(**kwargs)


def test_an_operation_refuses_a_state_it_never_acts_on() -> None:
    with pytest.raises(ValueError, match="retry acts on FAILURE or REVOKED jobs"):
        Filters(state="SUCCESS").restrict(RETRYABLE, "retry")
    Filters(state="REVOKED").restrict(RETRYABLE, "retry")


def test_control_checks_before_any_sql() -> None:
    from jobqueue import JobQueue

    # A DSN nobody listens on: a check that reached SQL would fail to connect.
    app = JobQueue("postgresql://nobody@127.0.0.1:1/none", auto_migrate=False)
    try:
        with pytest.raises(ValueError, match="ids is empty"):
            app.control.retry([])
        with pytest.raises(ValueError, match="timezone-aware"):
            app.control.delete(finished_before=datetime(2024, 1, 1))
        with pytest.raises(ValueError, match="move needs a destination"):
            app.control.move(queue="a")
        with pytest.raises(ValueError, match="cancel acts on"):
            app.control.cancel(state="SUCCESS")
        with pytest.raises(ValueError, match="queue must be a non-empty name"):
            app.control.pause_queue("")
        assert app.control is app.control  # made once, lazily
    finally:
        app.close()


@pytest.mark.parametrize(
    "args, message",
    [
        (["jobs", "list", "--state", "done"], "'done' is not one of"),
        (["jobs", "list", "--enqueued-after", "2024-05-01T12:00"], "has no UTC offset"),
        (["jobs", "list", "--finished-before", "yesterday"], "is not an ISO 8601 time"),
        (["jobs", "retry", "--id", "nope", "--yes"], "id must be a UUID string"),
        (["jobs", "retry", "--state", "SUCCESS", "--yes"], "retry acts on FAILURE or REVOKED"),
        (["jobs", "list", "--limit", "0"], "0 is not in the range"),
        (["jobs", "move", "--queue", "a"], "move needs a destination"),
    ],
)
def test_cli_filter_mistakes_are_usage_errors(args: list[str], message: str) -> None:
    done = CliRunner().invoke(main, ["--dsn", "postgresql://nobody@127.0.0.1:1/none", *args])
    assert done.exit_code == 2, done.output
    assert message in done.output
