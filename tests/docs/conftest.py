"""The docs' examples get a database of their own on the rig's server: a page
may leave a reader's connection open, and the harness ends every session on
it before the next page (``harness.prepare_database``), which must never touch
another test's connections."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo


@pytest.fixture(scope="session")
def docs_dsn(server_dsn: str) -> Iterator[str]:
    name = f"jobqueue_docs_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(server_dsn)
    params["dbname"] = name
    try:
        yield make_conninfo("", **{k: v for k, v in params.items() if v is not None})
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
