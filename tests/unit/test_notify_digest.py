"""The pure parts of failure notifications: the digest's rate limit, what a
message says, the filters, and the checks of settings."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobqueue import JobQueue
from jobqueue.exceptions import ConfigurationError
from jobqueue.notify import (
    Digest,
    EmailNotifier,
    Failure,
    WebhookNotifier,
    configured,
    install_configured,
    installed,
)
from jobqueue.serialization import dump_error
from jobqueue.worker.outcome import Outcome


def _failure(job: str, task: str = "add", exc: BaseException | None = None) -> Failure:
    error = dump_error(exc or ValueError(f"bad {job}"))
    return Failure.from_outcome(Outcome(job, 1, "FAILURE", error=error, task=task, queue="q"))


def test_the_first_failure_is_due_at_once_then_one_message_per_window() -> None:
    digest = Digest(window=60, examples=2)
    assert digest.due_in(0.0) is None
    digest.add(_failure("j1"))
    assert digest.due_in(0.0) == 0.0
    first = digest.take(0.0, "host")
    assert first is not None and first.kind == "failure" and first.count == 1
    assert digest.due_in(1.0) is None  # nothing pending
    for i in range(2, 12):
        digest.add(_failure(f"j{i}", task="mul" if i % 2 else "add"))
    digest.add(_failure("j12", exc=KeyError("k")))
    assert digest.due_in(10.0) == 50.0
    second = digest.take(60.0, "host")
    assert second is not None and second.kind == "digest" and second.count == 11
    assert [(g.task, g.exception, g.count) for g in second.groups] == [
        ("add", "ValueError", 5),
        ("mul", "ValueError", 5),
        ("add", "KeyError", 1),
    ]
    assert second.groups[0].job_ids == ["j2", "j4", "j6"]  # the first three
    assert [f.job_id for f in second.examples] == ["j2", "j3"]
    # Quiet for a window: the next failure is due at once again.
    digest.add(_failure("j13"))
    assert digest.due_in(121.0) == 0.0


def test_a_message_as_text_subject_and_json() -> None:
    digest = Digest(window=300, examples=5)
    for i in range(3):
        digest.add(_failure(f"j{i}", task="billing.charge", exc=TimeoutError("slow")))
    message = digest.take(0.0, "worker-1")
    assert message is not None
    subject = message.subject("[jobqueue] {task} failed: {exception_type}")
    assert subject == "[jobqueue] billing.charge failed: TimeoutError (and 2 more failures)"
    body = message.as_json()
    assert json.loads(json.dumps(body)) == body
    assert body["kind"] == "digest" and body["count"] == 3 and body["hostname"] == "worker-1"
    assert body["groups"][0]["job_ids"] == ["j0", "j1", "j2"]
    assert "traceback" not in body["examples"][0]  # a digest keeps examples short
    assert "3 job failures on worker-1" in body["text"]
    assert "3 x billing.charge: TimeoutError" in body["text"]


def test_a_malformed_error_is_described_not_raised() -> None:
    outcome = Outcome("j", 2, "FAILURE", error="{not json", task="t", queue="q")
    failure = Failure.from_outcome(outcome)
    assert (failure.exception, failure.message, failure.traceback) == ("UnknownError", "", None)
    long = Failure.from_outcome(
        Outcome("j", 1, "FAILURE", error=dump_error(ValueError("x" * 5000)), task="t")
    )
    assert len(long.message) < 1100 and long.message.endswith("(5000 characters)")


def test_filters() -> None:
    notifier = WebhookNotifier(
        "https://hooks.example.com/x",
        tasks=["billing.*", "mail"],
        exclude_tasks=["billing.refund"],
        exclude_exceptions=["builtins.KeyError", "Soft*"],
    )
    assert notifier.matches(_failure("1", task="billing.charge"))
    assert not notifier.matches(_failure("2", task="billing.refund"))
    assert not notifier.matches(_failure("3", task="report"))
    assert not notifier.matches(_failure("4", task="mail", exc=KeyError("k")))
    assert notifier.matches(_failure("5", task="mail", exc=TypeError("t")))
    only = WebhookNotifier("http://h/x", exceptions=["TimeoutError"])
    assert only.matches(_failure("6", exc=TimeoutError()))
    assert not only.matches(_failure("7"))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"notify_admins": ["nobody"]}, "app.conf.notify_admins must list e-mail addresses"),
        (
            {"notify_admins": ["a@b.c"], "notify_email_subject": "{task} {nope}"},
            "app.conf.notify_email_subject '{task} {nope}' is not a template over {task}",
        ),
        (
            {"notify_admins": ["a@b.c"], "notify_email_password": "pw"},
            "app.conf.notify_email_password is set without app.conf.notify_email_user",
        ),
        ({"notify_webhook_url": "ftp://x/y"}, "app.conf.notify_webhook_url must be an http"),
        (
            {"notify_webhook_url": "http://x/y", "notify_window": -1},
            "app.conf.notify_window must be a number >= 0, got -1",
        ),
        (
            {"notify_webhook_url": "http://x/y", "notify_tasks": "a,b"},
            None,  # a single string is one pattern
        ),
        (
            {"notify_webhook_url": "http://x/y", "notify_exclude_tasks": [""]},
            "app.conf.notify_exclude_tasks must be a list of non-empty names or globs",
        ),
    ],
)
def test_settings_are_checked_with_their_names(settings: dict[str, Any], message: str) -> None:
    app = JobQueue("postgresql://unused", schema="s")
    for name, value in settings.items():
        setattr(app.conf, name, value)
    if message is None:
        assert len(configured(app)) == 1
        return
    with pytest.raises(ConfigurationError) as caught:
        configured(app)
    assert message in str(caught.value)


def test_the_python_api_names_its_parameters_and_code_wins_over_settings() -> None:
    with pytest.raises(ConfigurationError, match=r"^security must be one of none, starttls"):
        EmailNotifier(["a@b.c"], security="tls")
    app = JobQueue("postgresql://unused", schema="s")
    app.conf.notify_webhook_url = "http://x/y"
    mine = EmailNotifier(["a@b.c"], port=2525).install(app)
    assert install_configured(app) == []  # installed by code: the settings are not added
    assert installed(app) == [mine]
    assert mine.port == 2525 and mine.describe() == "e-mail to 1 admin(s) via localhost:2525"
