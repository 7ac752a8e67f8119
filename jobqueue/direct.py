"""Single enqueues sent straight through libpq (``psycopg.pq``).

``delay()`` is one statement and one commit, so its rate is set by how much
CPU each call costs while 4 producer threads share the GIL and 2 cores with
the server. psycopg's cursor layer (parameter adaptation, its non-blocking
wait loop, result objects) costs ~50 µs of CPU per statement; libpq's own
blocking calls cost ~10 µs and release the GIL while they wait. Measured from
4 threads on this project's 2-core machine (benchmarks/enqueue_ceiling.py), a
bare INSERT runs at about 60 % of pgbench through psycopg and about 90 % through
libpq.

Only row-less statements whose parameters are plain text, numbers or
datetimes come here, on our own pooled autocommit connections. Anything else
is left to psycopg, and so is every error: a failed autocommit statement has
written nothing, so psycopg runs it again and raises its usual exception,
with full diagnostics.
"""

from __future__ import annotations

import hashlib
import re
import threading
import weakref
from collections.abc import Mapping
from datetime import date, datetime
from functools import cache
from typing import Any, NamedTuple

import psycopg
from psycopg import pq

_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%")
_UNDEFINED_STATEMENT = "26000"  # invalid_sql_statement_name: not prepared on this session


class Statement(NamedTuple):
    name: bytes  # of the server-side prepared statement, derived from the text
    text: bytes  # with $1, $2, ... in place of %(name)s
    params: tuple[str, ...]  # the parameter behind each $n


@cache
def compile_statement(text: str) -> Statement:
    """``text`` in libpq's placeholder style, prepared under a name of its own."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "%"
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    body = _PLACEHOLDER.sub(number, text)
    digest = hashlib.sha1(body.encode()).hexdigest()[:20]
    return Statement(f"jobqueue_{digest}".encode(), body.encode(), tuple(names))


def encode_all(params: Mapping[str, Any], names: tuple[str, ...]) -> list[bytes | None]:
    """``params`` in the order of ``names``, each as ``encode`` gives it;
    TypeError when one needs psycopg. A text is tested for NUL before it is
    encoded, the only type that can hold one: libpq sends text as C strings,
    so it would store "a.b\\x00c" as "a.b". One loop, the common types first:
    a list of ``encode`` and a NUL test per value in a second loop took 3.2 us
    of a delay()'s 12 us of Python, this one loop 2.1 (timeit, 16 values)."""
    values: list[bytes | None] = []
    append = values.append
    for name in names:
        value = params[name]
        if value is None:
            append(None)
            continue
        if type(value) is str:
            if "\x00" not in value:
                append(value.encode())
                continue
        else:
            encoded = encode(value)  # a str subclass, a number, a moment
            if encoded is None or b"\x00" not in encoded:
                append(encoded)
                continue
        raise ValueError(
            f"{name} {value!r} contains a NUL character (\\x00), "
            "which PostgreSQL cannot store in text"
        )
    return values


def encode(value: Any) -> bytes | None:
    """A parameter in PostgreSQL's text format; TypeError when it needs psycopg."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):  # before int: bool is an int
        return b"true" if value else b"false"
    if isinstance(value, int):  # int's own repr: an IntEnum's is "<P.HIGH: 9>"
        return int.__repr__(value).encode()
    if isinstance(value, float):
        return float.__repr__(value).encode()
    if isinstance(value, (datetime, date)):
        return value.isoformat().encode()
    raise TypeError(type(value).__name__)


# Which of our statements each connection has prepared. Kept beside the
# connection rather than in psycopg's own prepared-statement cache, which
# this path bypasses; a session that lost them (DISCARD ALL) prepares again.
_prepared: weakref.WeakKeyDictionary[psycopg.Connection[Any], set[bytes]] = (
    weakref.WeakKeyDictionary()
)
_prepared_lock = threading.Lock()


def execute(conn: psycopg.Connection[Any], text: str, params: Mapping[str, Any]) -> bool:
    """Run ``text`` on ``conn`` through libpq and discard its rows.

    False when it was not run, or failed without losing the connection: the
    caller then runs it through psycopg. Raises ``psycopg.OperationalError``
    when the connection is lost (the caller's retry loop handles that).
    """
    pgconn = conn.pgconn
    if not conn.autocommit or pgconn.transaction_status != pq.TransactionStatus.IDLE:
        return False
    statement = compile_statement(text)
    try:
        values = encode_all(params, statement.params)
    except TypeError:
        return False
    known = _prepared.get(conn)
    if known is None:
        with _prepared_lock:
            known = _prepared.setdefault(conn, set())
    for _ in range(2):
        if statement.name not in known:
            prepared = pgconn.prepare(statement.name, statement.text)
            if prepared.status != pq.ExecStatus.COMMAND_OK:
                return _failed(pgconn)
            known.add(statement.name)
        # libpq takes None as NULL; psycopg's stub types say otherwise.
        result = pgconn.exec_prepared(statement.name, values)  # type: ignore[arg-type]
        if result.status in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
            return True
        if result.error_field(pq.DiagnosticField.SQLSTATE) != _UNDEFINED_STATEMENT.encode():
            break
        known.discard(statement.name)  # the session forgot it: prepare again, once
    return _failed(pgconn)


def _failed(pgconn: pq.abc.PGconn) -> bool:
    if pgconn.status != pq.ConnStatus.OK:
        message = pgconn.get_error_message().strip() or "connection lost"
        raise psycopg.OperationalError(message)
    return False
