"""DSNs fit for logs and error messages: passwords are never shown."""

from __future__ import annotations

import re

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

# Where a password sits in a DSN that may not parse: a URL's user info
# (scheme://user:PASSWORD@host) and a keyword's value (password=PASSWORD,
# quoted or not, or with its = forgotten).
_URL_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^:@/?#\s]*:([^@/?#]*)@")
_KEYWORD_PASSWORD = re.compile(r"\bpassword\b\s*=?\s*('(?:[^'\\]|\\.)*'?|[^\s=]+)", re.IGNORECASE)


def redact(dsn: str) -> str:
    """A DSN fit for logs: the password is never shown."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return mask(dsn)
    if "password" in parts:
        parts["password"] = "***"
    return make_conninfo("", **{k: v for k, v in parts.items() if v is not None})


def mask(text: str, dsn: str | None = None) -> str:
    """``text`` with the passwords of ``dsn`` (default: of ``text`` itself, a
    DSN that may not parse) replaced by ***: for a DSN libpq refuses, and for
    its error messages, which quote the DSN."""
    source = text if dsn is None else dsn
    secrets = [m.group(1) for m in _URL_PASSWORD.finditer(source)]
    secrets += [m.group(1).strip("'") for m in _KEYWORD_PASSWORD.finditer(source)]
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
