"""The one place a configured DSN is read: SQLAlchemy's URL form accepted, a
malformed one refused in one line that never shows its password.

SQLAlchemy names the driver in the scheme (``postgresql+psycopg://``), and
our own docs recommend that form for SQLAlchemy, so users paste it here too;
libpq knows only ``postgresql://`` and ``postgres://``. Everything else about
the two forms is the same (user, password, host, port, database, query
parameters), so the scheme is all that changes.
"""

from __future__ import annotations

import re

import psycopg
from psycopg.conninfo import conninfo_to_dict

from .exceptions import ConfigurationError
from .redact import mask

# postgresql+psycopg://, postgresql+psycopg2://, postgresql+asyncpg://,
# postgres://: every driver's URL is libpq's URL once the driver is dropped.
_SCHEME = re.compile(r"^\s*postgres(?:ql)?(?:\+[A-Za-z0-9_]+)?://", re.IGNORECASE)


def normalize(dsn: str, source: str = "app.conf.dsn") -> str:
    """``dsn`` in libpq's form, or a one-line ConfigurationError naming where it
    came from (``source``: app.conf.dsn, $JOBQUEUE_DSN, --dsn) and what is wrong
    with it, its password shown as ***."""
    if not isinstance(dsn, str):
        raise ConfigurationError(
            f"{source} must be a string (a libpq DSN or URL), got {type(dsn).__name__}"
        )
    text = dsn.strip()
    match = _SCHEME.match(text)
    if match:
        text = "postgresql://" + text[match.end() :]
    elif "://" in text.split(" ", 1)[0]:
        scheme = text.split("://", 1)[0]
        raise ConfigurationError(
            f"{source} {mask(dsn)!r} is not a PostgreSQL URL (scheme {scheme!r}): "
            "use postgresql://user:password@host:5432/dbname "
            "(or postgresql+psycopg://, SQLAlchemy's form)"
        )
    try:
        conninfo_to_dict(text)
    except psycopg.ProgrammingError as exc:
        reason = mask(str(exc).strip().splitlines()[0], dsn)
        raise ConfigurationError(
            f"{source} is not a valid DSN ({reason}): {mask(dsn)!r}; expected "
            "postgresql://user:password@host:5432/dbname or 'host=... dbname=...'"
        ) from None  # psycopg's own message quotes the DSN, password and all
    return text
