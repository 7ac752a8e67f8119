"""What a new user meets in the first hour, without a database: DSNs in
SQLAlchemy's form or malformed, ``-A`` naming a task or a bare module."""

from __future__ import annotations

import pytest

from jobqueue import JobQueue
from jobqueue.dsn import normalize
from jobqueue.exceptions import ConfigurationError
from jobqueue.redact import mask, redact


@pytest.mark.parametrize(
    "given, expected",
    [
        ("postgresql+psycopg://u:pw@db:5432/app", "postgresql://u:pw@db:5432/app"),
        ("postgresql+psycopg2://u@db/app?sslmode=require", "postgresql://u@db/app?sslmode=require"),
        ("postgres://u@db/app", "postgresql://u@db/app"),
        ("POSTGRESQL+ASYNCPG://u@db/app", "postgresql://u@db/app"),
        (" postgresql://u@db/app ", "postgresql://u@db/app"),
        ("host=db dbname=app", "host=db dbname=app"),
    ],
)
def test_sqlalchemy_and_libpq_forms_are_accepted(given: str, expected: str) -> None:
    assert normalize(given) == expected


@pytest.mark.parametrize(
    "dsn, reason",
    [
        ("postgresql://u:se cret@db/app", "unexpected spaces"),
        ("postgresql+psycopg://u:secret@db/app?foo=bar", "invalid URI query parameter"),
        ("host='db password=secret", "unterminated quoted string"),
        ("password secret host=db", 'missing "="'),
        ("mysql://u:secret@db/app", "not a PostgreSQL URL"),
    ],
)
def test_a_malformed_dsn_is_one_line_without_its_password(dsn: str, reason: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        normalize(dsn, "$JOBQUEUE_DSN")
    message = str(raised.value)
    assert reason in message and "$JOBQUEUE_DSN" in message
    assert "\n" not in message
    assert "secret" not in message and "se cret" not in message
    assert raised.value.__cause__ is None  # psycopg's message quotes the password


def test_a_malformed_dsn_fails_where_the_app_is_made() -> None:
    with pytest.raises(ConfigurationError, match=r"app\.conf\.dsn is not a valid DSN"):
        JobQueue("postgresql://u:se cret@db/app")


def test_redact_hides_the_password_of_a_dsn_that_does_not_parse() -> None:
    assert redact("postgresql://u:se cret@db/app") == "postgresql://u:***@db/app"
    assert mask('bad "secret"', "host=db password=secret") == 'bad "***"'
