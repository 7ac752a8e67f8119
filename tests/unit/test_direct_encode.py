"""The text format of the libpq path's parameters (jobqueue.direct), without a
database: what reaches PostgreSQL for each type a job's values can have."""

from __future__ import annotations

import enum
from datetime import datetime, timezone

import pytest

from jobqueue.direct import encode, encode_all


class Level(enum.IntEnum):
    HIGH = 9


class Queue(str, enum.Enum):
    MAIL = "mail"
    BROKEN = "mail\x00box"


def test_each_type_as_postgresql_reads_it() -> None:
    moment = datetime(2026, 12, 7, 15, 0, tzinfo=timezone.utc)
    params = {
        "none": None,
        "text": "défaut",
        "flag": True,
        "number": 7,
        "level": Level.HIGH,  # was sent as "<Level.HIGH: 9>", refused by the server
        "ratio": 0.25,
        "when": moment,
        "queue": Queue.MAIL,
    }
    assert encode_all(params, tuple(params)) == [
        None,
        "défaut".encode(),
        b"true",
        b"7",
        b"9",
        b"0.25",
        b"2026-12-07T15:00:00+00:00",
        b"mail",
    ]
    assert encode(Level.HIGH) == b"9"


@pytest.mark.parametrize("value", ["a.b\x00c", Queue.BROKEN])
def test_a_nul_in_any_text_is_refused(value: str) -> None:
    """libpq sends text as C strings: "a.b\\x00c" would be stored as "a.b"."""
    with pytest.raises(ValueError, match=r"task .* contains a NUL character"):
        encode_all({"id": "x", "task": value}, ("id", "task"))


def test_a_type_libpq_cannot_take_as_text_is_left_to_psycopg() -> None:
    with pytest.raises(TypeError):
        encode_all({"id": "x", "ids": ["a", "b"]}, ("id", "ids"))
