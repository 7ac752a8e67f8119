"""Acceptance 1: the job row lives or dies with the caller's transaction."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from jobqueue import migrate, states

# Each adapter opens a transaction and yields (connection-like, run_sql, finish).
Adapter = Callable[[str, str], Any]


@contextmanager
def psycopg_tx(dsn: str, outcome: str) -> Iterator[tuple[Any, Callable[[str], None]]]:
    with psycopg.connect(dsn) as c:
        yield c, lambda q: c.execute(q)
        c.commit() if outcome == "commit" else c.rollback()


@contextmanager
def sqlalchemy_core_tx(dsn: str, outcome: str) -> Iterator[tuple[Any, Callable[[str], None]]]:
    engine = migrate.engine(dsn)
    with engine.connect() as c:
        c.begin()
        yield c, lambda q: c.execute(sa.text(q))
        c.commit() if outcome == "commit" else c.rollback()
    engine.dispose()


@contextmanager
def sqlalchemy_session_tx(dsn: str, outcome: str) -> Iterator[tuple[Any, Callable[[str], None]]]:
    engine = migrate.engine(dsn)
    with Session(engine) as session:
        yield session, lambda q: session.execute(sa.text(q))
        session.commit() if outcome == "commit" else session.rollback()
    engine.dispose()


ADAPTERS = {
    "psycopg": psycopg_tx,
    "sqlalchemy_core": sqlalchemy_core_tx,
    "orm_session": sqlalchemy_session_tx,
}


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_rollback_means_no_job_and_commit_means_one_run(
    adapter: str, jq: Any, dsn: str, schema: str, conn: Any, start_worker: Any
) -> None:
    conn.execute(f'CREATE TABLE "{schema}".orders (id int PRIMARY KEY)')
    start_worker()
    tx = ADAPTERS[adapter]

    with tx(dsn, "rollback") as (c, run):
        run(f'INSERT INTO "{schema}".orders VALUES (1)')
        lost = jq.add.apply_async((1, 1), connection=c)
        many_lost = jq.app.enqueue_many(jq.add, [(1, 2), (3, 4)], connection=c)
    with tx(dsn, "commit") as (c, run):
        run(f'INSERT INTO "{schema}".orders VALUES (2)')
        kept = jq.add.apply_async((2, 2), connection=c)
        many_kept = jq.app.enqueue_many(jq.add, [(5, 6)], connection=c)

    assert kept.get(timeout=15) == 4
    assert many_kept[0].get(timeout=15) == 11
    orders = [r[0] for r in conn.execute(f'SELECT id FROM "{schema}".orders ORDER BY id')]
    assert orders == [2]
    ids = [lost.id] + [r.id for r in many_lost]
    leftovers = conn.execute(
        f'SELECT count(*) FROM "{schema}".all_jobs WHERE id = ANY(%s::uuid[])', (ids,)
    ).fetchone()
    assert leftovers == (0,)  # never existed, so no worker can ever run them
    assert lost.state == states.PENDING
    row = conn.execute(
        f'SELECT state, attempts FROM "{schema}".jobs WHERE id = %s', (kept.id,)
    ).fetchone()
    assert row == (states.SUCCESS, 1)


def test_uncommitted_job_is_invisible_to_workers_until_commit(
    jq: Any, dsn: str, start_worker: Any
) -> None:
    start_worker()
    with psycopg.connect(dsn) as c:
        pending = jq.add.apply_async((3, 4), connection=c)
        with pytest.raises(TimeoutError):
            pending.get(timeout=0.5)  # a worker is idle, yet it cannot see the row
        c.commit()
    assert pending.get(timeout=15) == 7


def test_rejects_unknown_connection_types(jq: Any) -> None:
    with pytest.raises(TypeError, match="connection= must be"):
        jq.add.apply_async((1, 2), connection=object())


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_enqueue_many_first_in_a_transaction_is_rolled_back_with_it(
    adapter: str, jq: Any, dsn: str, schema: str, conn: Any
) -> None:
    """enqueue_many's COPY as the transaction's first statement: psycopg's
    transaction() on an idle non-autocommit connection is a BEGIN ... COMMIT
    of its own, which committed the jobs before the caller's rollback."""
    with ADAPTERS[adapter](dsn, "rollback") as (c, _):
        lost = jq.app.enqueue_many(jq.add, [(1, 2), (3, 4)], connection=c)
    ids = [r.id for r in lost]
    leftovers = conn.execute(
        f'SELECT count(*) FROM "{schema}".all_jobs WHERE id = ANY(%s::uuid[])', (ids,)
    ).fetchone()
    assert leftovers == (0,)
