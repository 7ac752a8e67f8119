"""Migrations run while producers enqueue: no committed job is lost.

Producers keep calling ``delay()`` (or plain SQL ``enqueue()``) on their own
threads while the schema moves between revisions. A call that fails while the
schema is in between revisions (or at a revision the producer's code does not
match) is expected: only ids whose call returned are counted as committed,
and every one of them must still be a job afterwards.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from jobqueue import JobQueue, migrate
from tests.apps import build
from tests.conftest import wait_for

PRODUCERS = 6
# Committed ids before a migration starts: the producers are all committing
# steadily by then, and job_queue holds a backlog that the migration reads.
STEADY = 3000


class Producers:
    """``PRODUCERS`` threads calling ``enqueue()`` until stopped, recording
    every id whose call returned (committed); failed calls are not counted."""

    def __init__(self, enqueue: Callable[[], str]) -> None:
        self._enqueue = enqueue
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.committed: list[str] = []
        self.by_thread = [0] * PRODUCERS
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(PRODUCERS)
        ]

    def _run(self, index: int) -> None:
        while not self._stop.is_set():
            try:
                job_id = self._enqueue()
            except Exception:  # expected while the schema is between revisions
                continue
            with self._lock:
                self.committed.append(job_id)
                self.by_thread[index] += 1

    def latest(self) -> str | None:
        with self._lock:
            return self.committed[-1] if self.committed else None

    def count(self) -> int:
        with self._lock:
            return len(self.committed)

    def snapshot(self) -> set[str]:
        with self._lock:
            return set(self.committed)

    def steady(self, at_least: int) -> bool:
        """Every thread has committed, and ``at_least`` ids in all."""
        with self._lock:
            return min(self.by_thread) > 0 and len(self.committed) >= at_least

    def committing_again(self, after: int) -> bool:
        return self.count() >= after

    @contextmanager
    def running(self) -> Iterator[Producers]:
        for thread in self._threads:
            thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            for thread in self._threads:
                thread.join(timeout=60)
        assert not any(t.is_alive() for t in self._threads), "a producer did not stop"


class Readers:
    """Threads polling a job's state through ``all_jobs`` (as ``AsyncResult``
    does), each on its own autocommit connection, recording what each read
    raised: while the schema is at 0006 ``all_jobs`` does not exist."""

    def __init__(self, dsn: str, schema: str, latest: Callable[[], str | None]) -> None:
        self._dsn, self._schema, self._latest = dsn, schema, latest
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.reads = 0
        self.errors: list[str] = []
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]

    def _run(self) -> None:
        with psycopg.connect(self._dsn, autocommit=True) as c:
            while not self._stop.is_set():
                try:
                    c.execute(
                        f'SELECT state FROM "{self._schema}".all_jobs WHERE id = %s::uuid',
                        (self._latest(),),
                    ).fetchall()
                except psycopg.Error as exc:
                    with self._lock:
                        self.errors.append(type(exc).__name__)
                    continue
                with self._lock:
                    self.reads += 1

    @contextmanager
    def running(self) -> Iterator[Readers]:
        for thread in self._threads:
            thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            for thread in self._threads:
                thread.join(timeout=60)
        assert not any(t.is_alive() for t in self._threads), "a reader did not stop"


def _missing(conn: psycopg.Connection[Any], relation: str, ids: set[str]) -> set[str]:
    rows = conn.execute(
        f"SELECT c.id::text FROM unnest(%s::uuid[]) AS c(id) "
        f"WHERE NOT EXISTS (SELECT 1 FROM {relation} AS j WHERE j.id = c.id)",
        (sorted(ids),),
    ).fetchall()
    return {r[0] for r in rows}


@pytest.fixture
def app(dsn: str, schema: str) -> Iterator[Any]:
    # A short retry window: statements refused mid-migration fail fast.
    app = JobQueue(dsn, schema=schema, auto_migrate=False, db_retry_seconds=1.0)
    tasks = build(app)
    yield tasks
    app.close()


def test_downgrade_to_0006_and_back_with_producers_running_loses_no_job(
    app: Any, dsn: str, schema: str, conn: psycopg.Connection[Any]
) -> None:
    """0007's downgrade copies the jobs waiting in one row into jobs, then drops
    job_queue's argument columns: a job committed between the two would lose its
    arguments and never get a record, unless the downgrade locks first."""
    head = migrate.head_revision()
    assert migrate.current_revision(dsn, schema) == head

    def enqueue() -> str:
        return str(app.add.delay(1, 2).id)

    producers = Producers(enqueue)
    readers = Readers(dsn, schema, producers.latest)
    with producers.running(), readers.running():
        wait_for(lambda: producers.steady(STEADY), what="producers committing steadily")
        migrate.downgrade(dsn, schema, "0006")
        assert migrate.current_revision(dsn, schema) == "0006"
        # Every id whose delay() returned so far committed before this query.
        before_downgrade_ended = producers.snapshot()
        assert len(before_downgrade_ended) >= STEADY
        # At 0006 every job has its record in jobs.
        lost = len(_missing(conn, f'"{schema}".jobs', before_downgrade_ended))
        assert lost == 0, f"{lost} of {len(before_downgrade_ended)} committed jobs lost"

        # Today's delay() cannot write at 0006; once the schema is back at head it
        # commits again, with the producers running throughout the upgrade.
        at_upgrade = producers.count()
        migrate.upgrade(dsn, schema)
        assert migrate.current_revision(dsn, schema) == head
        wait_for(
            lambda: producers.committing_again(at_upgrade + 500),
            what="producers committing again after the upgrade",
        )

    committed = producers.snapshot()
    assert len(committed) >= at_upgrade + 500
    lost = len(_missing(conn, f'"{schema}".all_jobs', committed))
    assert lost == 0, f"{lost} of {len(committed)} committed jobs lost"
    total = conn.execute(f'SELECT count(*) FROM "{schema}".all_jobs').fetchone()
    assert total is not None and total[0] == len(committed)
    # Readers of all_jobs that came in during the downgrade waited for it (or
    # found the view gone): none held a lock the downgrade then waited for.
    assert readers.reads > 0
    deadlocks = readers.errors.count("DeadlockDetected")
    assert deadlocks == 0, f"{deadlocks} readers of all_jobs deadlocked with the downgrade"


def test_upgrade_from_0006_with_0006_era_producers_loses_no_job(
    dsn: str, schema: str, conn: psycopg.Connection[Any]
) -> None:
    """Producers of the 0006 era (emulated by SQL ``enqueue()``, which every
    revision has) keep enqueueing while the schema is upgraded to head."""
    migrate.downgrade(dsn, schema, "0006")
    local = threading.local()
    connections: list[psycopg.Connection[Any]] = []
    connections_lock = threading.Lock()

    def enqueue() -> str:
        c = getattr(local, "conn", None)
        if c is None or c.closed:
            c = local.conn = psycopg.connect(dsn, autocommit=True)
            with connections_lock:
                connections.append(c)
        row = c.execute(f"SELECT \"{schema}\".enqueue('add', '[1, 2]')::text").fetchone()
        assert row is not None
        return str(row[0])

    try:
        with Producers(enqueue).running() as producers:
            wait_for(lambda: producers.steady(STEADY), what="producers committing steadily")
            migrate.upgrade(dsn, schema)
            assert migrate.current_revision(dsn, schema) == migrate.head_revision()
            at_upgrade = producers.count()
            wait_for(
                lambda: producers.committing_again(at_upgrade + 500),
                what="producers committing after the upgrade",
            )
    finally:
        for c in connections:
            c.close()

    committed = producers.snapshot()
    assert len(committed) >= STEADY + 500
    lost = len(_missing(conn, f'"{schema}".all_jobs', committed))
    assert lost == 0, f"{lost} of {len(committed)} committed jobs lost by the upgrade"
    total = conn.execute(f'SELECT count(*) FROM "{schema}".all_jobs').fetchone()
    assert total is not None and total[0] == len(committed)
