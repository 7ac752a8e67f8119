"""Least privilege (jobqueue.roles, `jobqueue db grant`): real roles, real connections.

Each test creates LOGIN roles of its own (roles are cluster-wide, so their
names are unique and they are dropped at the end) and proves, connected as
each role, what it can do and what it cannot: a producer enqueues, runs
workflows, revokes and reads results; a worker process runs the whole life
cycle and a beat; a reader reads the views. The test DSN's user must be a
superuser (it creates roles and grants as the schema's owner).
"""

from __future__ import annotations

import logging
import secrets
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from jobqueue import (
    AsyncResult,
    ChordError,
    GroupResult,
    JobQueue,
    TaskRevokedError,
    chord,
    group,
    migrate,
    states,
)
from jobqueue.cli import Context
from jobqueue.exceptions import ConfigurationError, SchemaNotReadyError
from jobqueue.keys import task_settings
from jobqueue.maintenance import Retention, Vacuum
from jobqueue.roles import FUNCTIONS, TABLES, VIEWS, grant, grant_command, plan
from jobqueue.serialization import dumps
from jobqueue.sql import queries
from tests.apps import build
from tests.conftest import WorkerProcess, wait_for

DENIED = psycopg.errors.InsufficientPrivilege


class Role(NamedTuple):
    name: str
    dsn: str


def role_dsn(dsn: str, user: str, password: str) -> str:
    params = conninfo_to_dict(dsn)
    params.update(user=user, password=password)
    return make_conninfo("", **{k: v for k, v in params.items() if v is not None})


@pytest.fixture
def make_role(database_dsn: str, conn: psycopg.Connection[Any]) -> Iterator[Callable[..., Role]]:
    """LOGIN roles of this test's own; their sessions ended and the roles dropped after."""
    superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    assert superuser.fetchone() == (True,), (
        "these tests create roles: the test DSN's user must be a superuser"
    )
    made: list[str] = []

    def make(prefix: str = "jq_role_") -> Role:
        name, password = f"{prefix}{secrets.token_hex(4)}", secrets.token_hex(16)
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(name), sql.Literal(password)
            )
        )
        made.append(name)
        return Role(name, role_dsn(database_dsn, name, password))

    yield make
    for name in made:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,)
        )
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.fixture
def role_workers(
    make_role: Callable[..., Role], schema: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """`jobqueue worker` processes connected as a given role (stopped before the
    roles are dropped)."""
    started: list[WorkerProcess] = []

    def start(role: Role, *args: str) -> WorkerProcess:
        worker = WorkerProcess(role.dsn, schema, list(args), tmp_path / f"w{len(started)}.log")
        started.append(worker)
        worker.wait_ready(conn)
        return worker

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            try:
                worker.terminate(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()


@pytest.fixture
def apps(make_role: Callable[..., Role]) -> Iterator[Callable[[str, str], Any]]:
    """Apps (with the test tasks) connected as a role; closed before the roles go."""
    made: list[JobQueue] = []

    def make(dsn: str, schema: str) -> Any:
        app = JobQueue(dsn, schema=schema, auto_migrate=False)
        made.append(app)
        return build(app)

    yield make
    for app in made:
        app.close()


def _denied_everywhere(log: str) -> None:
    assert "permission denied" not in log and "InsufficientPrivilege" not in log, log
    assert "maintenance step" not in log, log  # Maintenance.run logs a step that failed


def _dead_rows_in_job_queue(dsn: str, schema: str, conn: psycopg.Connection[Any]) -> None:
    """25,000 dead rows in job_queue (more than the vacuum step's 20,000), left
    there: autovacuum is turned off for the table."""
    with psycopg.connect(dsn, autocommit=True) as own:
        own.execute(f'ALTER TABLE "{schema}".job_queue SET (autovacuum_enabled = off)')
        own.execute(
            f'INSERT INTO "{schema}".job_queue (job_id, queue, priority, run_at, task) '
            "SELECT gen_random_uuid(), 'nowhere', 0, now(), 'add' FROM generate_series(1, 25000)"
        )
        own.execute(f"DELETE FROM \"{schema}\".job_queue WHERE queue = 'nowhere'")
    # Its statistics reach the server when that session ends.
    wait_for(lambda: _stats(conn, schema)[0] >= 25_000, 30, "the dead rows to be counted")


def _stats(conn: psycopg.Connection[Any], schema: str) -> tuple[int, int]:
    """(dead rows, times vacuumed by hand) of job_queue."""
    row = conn.execute(
        "SELECT n_dead_tup, vacuum_count FROM pg_stat_user_tables "
        "WHERE schemaname = %s AND relname = 'job_queue'",
        (schema,),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _no_public_execute(conn: psycopg.Connection[Any], schema: str) -> None:
    """What docs/deployment.md allows a stricter policy: PUBLIC may execute none
    of the schema's functions. The roles' own EXECUTE grants must then suffice."""
    conn.execute(f'REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA "{schema}" FROM PUBLIC')


def _maintain_privilege(conn: psycopg.Connection[Any]) -> bool:
    return conn.info.server_version >= 170000


# -- the statements ------------------------------------------------------------------


def test_print_shows_the_sql_quoted_and_runs_nothing_then_grant_runs_the_same(
    dsn: str, schema: str, conn: psycopg.Connection[Any], make_role: Callable[..., Role]
) -> None:
    producer = make_role('Jq "Producer"-')  # needs quoting: spaces, quotes, capitals
    reader = make_role()
    shown = grant(dsn, schema, producer=producer.name, reader=reader.name, dry_run=True)
    quoted = '"' + producer.name.replace('"', '""') + '"'
    assert shown[0] == f'REVOKE ALL ON SCHEMA "{schema}" FROM {quoted}'
    assert any(s.startswith("GRANT USAGE") and quoted in s for s in shown)
    assert all(quoted in s or f'"{reader.name}"' in s for s in shown)
    usage = "SELECT has_schema_privilege(%s, %s, 'USAGE')"
    assert conn.execute(usage, (producer.name, schema)).fetchone() == (False,)  # nothing ran

    assert grant(dsn, schema, producer=producer.name, reader=reader.name) == shown
    assert conn.execute(usage, (producer.name, schema)).fetchone() == (True,)
    assert grant(dsn, schema, producer=producer.name, reader=reader.name) == shown  # again: same

    # Every statement comes with why it is there.
    reasons = plan(dsn, schema, producer=producer.name)
    assert [r.sql for r in reasons] == [s for s in shown if reader.name not in s]
    assert all(r.why for r in reasons)
    delete = next(r for r in reasons if "job_queue" in r.sql)
    assert "DELETE" in delete.sql and "revoke()" in delete.why


def test_the_command_prints_or_grants_and_names_a_missing_role(
    dsn: str, schema: str, conn: psycopg.Connection[Any], make_role: Callable[..., Role]
) -> None:
    worker = make_role()
    obj = Context(None, dsn, schema)
    runner = CliRunner()
    printed = runner.invoke(grant_command, ["--worker", worker.name, "--print"], obj=obj)
    assert printed.exit_code == 0, printed.output
    assert f'GRANT USAGE ON SCHEMA "{schema}" TO "{worker.name}";' in printed.output
    assert "-- " in printed.output  # the reasons, as SQL comments
    owned = "SELECT has_table_privilege(%s, %s, 'INSERT')"
    table = f'"{schema}".job_lease'
    assert conn.execute(owned, (worker.name, table)).fetchone() == (False,)

    done = runner.invoke(grant_command, ["--worker", worker.name], obj=obj)
    assert done.exit_code == 0, done.output
    assert f"{worker.name} as worker" in done.output
    assert conn.execute(owned, (worker.name, table)).fetchone() == (True,)

    missing = runner.invoke(grant_command, ["--reader", "jq_no_such_role_x"], obj=obj)
    assert missing.exit_code == 1
    assert "no such role: 'jq_no_such_role_x' (given as reader)" in missing.output
    none = runner.invoke(grant_command, [], obj=obj)
    assert none.exit_code == 2 and "name at least one role" in none.output


def test_grant_refuses_what_it_cannot_do_exactly_and_changes_nothing(
    dsn: str, schema: str, conn: psycopg.Connection[Any], make_role: Callable[..., Role]
) -> None:
    good, owner = make_role(), make_role()
    usage = "SELECT has_schema_privilege(%s, %s, 'USAGE')"
    with pytest.raises(
        ConfigurationError, match=r"no such role: 'jq_gone_\w+' \(given as worker\)"
    ):
        grant(dsn, schema, producer=good.name, worker=f"jq_gone_{secrets.token_hex(3)}")
    assert conn.execute(usage, (good.name, schema)).fetchone() == (False,)  # one transaction

    me = conn.execute("SELECT current_user").fetchone()
    assert me is not None
    with pytest.raises(ConfigurationError, match="is a superuser"):
        grant(dsn, schema, reader=me[0])

    conn.execute(f'ALTER TABLE "{schema}".schedule_ticks OWNER TO "{owner.name}"')
    with pytest.raises(ConfigurationError, match=f"role '{owner.name}' owns schema"):
        grant(dsn, schema, worker=owner.name)
    conn.execute(f'ALTER TABLE "{schema}".schedule_ticks OWNER TO CURRENT_USER')

    conn.execute(f'CREATE TABLE "{schema}".extra (a int)')
    with pytest.raises(
        ConfigurationError, match=r"objects jobqueue.roles does not know \(table extra\)"
    ):
        grant(dsn, schema, reader=good.name)
    conn.execute(f'DROP TABLE "{schema}".extra')

    with pytest.raises(SchemaNotReadyError, match="no jobqueue schema 'no_such_schema'"):
        grant(dsn, "no_such_schema", reader=good.name)
    with pytest.raises(ConfigurationError, match="name at least one role"):
        grant(dsn, schema)
    assert conn.execute(usage, (good.name, schema)).fetchone() == (False,)


def test_every_object_of_the_schema_is_known_and_public_has_no_usage(
    schema: str, conn: psycopg.Connection[Any]
) -> None:
    """A new revision's table or view must be classified in jobqueue.roles (grant
    refuses a schema holding one it does not know; this names it)."""
    rows = conn.execute(
        "SELECT c.relname, c.relkind FROM pg_class AS c JOIN pg_namespace AS n "
        "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v') "
        "AND NOT c.relispartition",  # partitions are reached through their parent
        (schema,),
    ).fetchall()
    assert {name for name, kind in rows if kind in ("r", "p")} <= set(TABLES)
    assert {name for name, kind in rows if kind == "v"} <= set(VIEWS)
    functions = conn.execute(
        "SELECT p.proname FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace "
        "WHERE n.nspname = %s",
        (schema,),
    ).fetchall()
    assert {name for (name,) in functions} <= set(FUNCTIONS)
    # PUBLIC may execute the schema's functions (PostgreSQL's default), but it
    # cannot reach them: the schema grants PUBLIC nothing.
    public = conn.execute("SELECT has_schema_privilege('public', %s, 'USAGE')", (schema,))
    assert public.fetchone() == (False,)


def test_grant_sets_a_roles_privileges_instead_of_adding_to_them(
    dsn: str, schema: str, conn: psycopg.Connection[Any], make_role: Callable[..., Role]
) -> None:
    role = make_role()
    grant(dsn, schema, producer=role.name)
    conn.execute(f'GRANT CREATE ON SCHEMA "{schema}" TO "{role.name}"')
    conn.execute(f'GRANT TRUNCATE ON "{schema}".jobs TO "{role.name}"')
    grant(dsn, schema, reader=role.name)

    def may(privilege: str, table: str) -> bool:
        row = conn.execute(
            "SELECT has_table_privilege(%s, %s, %s)", (role.name, f'"{schema}".{table}', privilege)
        ).fetchone()
        return bool(row and row[0])

    assert may("SELECT", "all_jobs") and may("SELECT", "queue_stats")
    assert not may("INSERT", "job_queue") and not may("TRUNCATE", "jobs")
    create = conn.execute("SELECT has_schema_privilege(%s, %s, 'CREATE')", (role.name, schema))
    assert create.fetchone() == (False,)


# -- what each role may not do ---------------------------------------------------------

FORBIDDEN = [
    ("producer", "DELETE FROM {s}.jobs"),
    ("producer", "UPDATE {s}.jobs SET result = '5'"),
    ("producer", "UPDATE {s}.jobs SET attempts = 0, worker_id = NULL"),
    ("producer", "INSERT INTO {s}.jobs (id, task, result) VALUES (gen_random_uuid(), 'add', '5')"),
    ("producer", "UPDATE {s}.job_queue SET priority = 9"),
    ("producer", "TRUNCATE {s}.job_queue"),
    ("producer", "DROP TABLE {s}.jobs"),
    ("producer", "ALTER TABLE {s}.jobs ADD COLUMN x int"),
    ("producer", "CREATE TABLE {s}.x (a int)"),
    ("producer", "SELECT * FROM {s}.workers"),
    ("producer", "SELECT * FROM {s}.job_lease"),
    ("producer", "SELECT * FROM {s}.job_attempts"),
    ("producer", "SELECT * FROM {s}.schedules"),
    ("producer", "DELETE FROM {s}.unique_keys"),
    ("producer", "UPDATE {s}.chords SET remaining = 0"),
    ("producer", "SELECT * FROM {s}.job_history"),
    ("worker", "DROP TABLE {s}.jobs"),
    ("worker", "ALTER TABLE {s}.jobs ADD COLUMN x int"),
    ("worker", "CREATE TABLE {s}.x (a int)"),
    ("worker", "CREATE INDEX ON {s}.jobs (task)"),
    ("worker", "TRUNCATE {s}.jobs"),
    ("worker", "DROP FUNCTION {s}.uuid7()"),
    ("worker", "UPDATE {s}.alembic_version SET version_num = '1'"),
    ("worker", "UPDATE {s}.schema_compat SET oldest_worker_revision = 1"),
    ("reader", "SELECT * FROM {s}.jobs"),
    ("reader", "SELECT * FROM {s}.job_queue"),
    ("reader", "INSERT INTO {s}.jobs (id, task) VALUES (gen_random_uuid(), 'add')"),
    ("reader", "SELECT {s}.enqueue('add')"),
    ("reader", "DELETE FROM {s}.job_queue"),
    ("reader", "CREATE TABLE {s}.x (a int)"),
    ("none", "SELECT {s}.uuid7()"),  # PUBLIC's EXECUTE alone reaches nothing
    ("none", "SELECT {s}.enqueue('add')"),
    ("none", "SELECT * FROM {s}.all_jobs"),
]


@pytest.mark.parametrize("kind, statement", FORBIDDEN, ids=[f"{k}: {s}" for k, s in FORBIDDEN])
def test_what_each_role_may_not_do(
    kind: str, statement: str, dsn: str, schema: str, make_role: Callable[..., Role]
) -> None:
    role = make_role()
    if kind != "none":
        grant(dsn, schema, **{kind: role.name})
    with psycopg.connect(role.dsn, autocommit=True) as own, pytest.raises(DENIED):
        own.execute(statement.format(s=f'"{schema}"'))


# -- each role at work -------------------------------------------------------------------


def test_a_producer_enqueues_runs_workflows_revokes_and_reads_results(
    dsn: str,
    schema: str,
    conn: psycopg.Connection[Any],
    make_role: Callable[..., Role],
    role_workers: Callable[..., WorkerProcess],
    apps: Callable[[str, str], Any],
) -> None:
    producer, worker_role = make_role('Jq "Producer"-'), make_role()
    _no_public_execute(conn, schema)
    grant(dsn, schema, producer=producer.name, worker=worker_role.name)
    worker = role_workers(worker_role, "--concurrency", "4")
    jq = apps(producer.dsn, schema)
    add, app = jq.add, jq.app

    assert add.delay(2, 3).get(timeout=30) == 5  # one row (job_insert, libpq's direct path)
    chosen = str(uuid.uuid4())
    assert add.apply_async((1, 1), task_id=chosen).get(timeout=30) == 2  # job_insert_recorded
    assert app.send_task("add", args=(5, 5)).get(timeout=30) == 10
    with psycopg.connect(producer.dsn) as own:  # in the producer's own transaction
        in_transaction = add.apply_async((3, 4), connection=own)
    assert in_transaction.get(timeout=30) == 7
    with psycopg.connect(producer.dsn, autocommit=True) as own:  # enqueue() in SQL
        row = own.execute(f"SELECT \"{schema}\".enqueue('add', '[20, 22]')").fetchone()
    assert row is not None and AsyncResult(str(row[0]), app=app).get(timeout=30) == 42

    bulk = app.enqueue_many(add, [(i, i) for i in range(100)])  # COPY
    assert [r.get(timeout=30) for r in bulk] == [2 * i for i in range(100)]

    # Revoking a waiting job: one enqueued in one row gets its REVOKED record.
    waiting = add.apply_async((1, 1), countdown=60)
    waiting.revoke()
    assert waiting.state == states.REVOKED
    with pytest.raises(TaskRevokedError):
        waiting.get(timeout=5)

    # A waiting job changed in place (update_job(), 0020), and a unique task's
    # duplicate replacing its waiting holder's arguments.
    later = add.apply_async((1, 1), countdown=60)
    assert later.update(args=(2, 2), countdown=0) is True and later.get(timeout=30) == 4
    first_latest = jq.latest.apply_async(("a",), countdown=60)
    assert jq.latest.delay("b").id == first_latest.id
    assert first_latest.update(countdown=0) is True and first_latest.get(timeout=30) == "b"

    # Unique jobs: a waiting holder is returned, revoked it lets a new job take the key.
    held = jq.once_at_a_time.apply_async(("k",), countdown=60)
    assert jq.once_at_a_time.apply_async(("k",), countdown=60).id == held.id
    held.revoke()
    assert held.state == states.REVOKED
    again = jq.once_at_a_time.delay("k")
    assert again.id != held.id and again.get(timeout=30) == "k"
    many = app.enqueue_many(jq.once_at_a_time, [("a",), ("b",)])
    assert [r.get(timeout=30) for r in many] == ["a", "b"]

    # Canvases: chain (children), group (restored by id), chord.
    first = str(uuid.uuid4())
    chained = (add.s(1, 1).set(task_id=first) | add.s(10))()
    assert chained.get(timeout=30) == 12
    assert [c.id for c in AsyncResult(first, app=app).children] == [chained.id]
    grouped = group(add.s(i, i) for i in range(3))()
    assert grouped.get(timeout=30) == [0, 2, 4]
    restored = GroupResult.restore(grouped.id, app=app)
    assert restored is not None and restored.get(timeout=5) == [0, 2, 4]
    assert chord(add.s(i, i) for i in range(4))(jq.tsum.s()).get(timeout=30) == 12

    # Revoking a waiting chord member fails the chord's body (advance, fail_chord).
    late = str(uuid.uuid4())
    body = chord([add.s(1, 1), add.s(2, 2).set(task_id=late, countdown=60)], jq.tsum.s())()
    assert app.revoke(late) == 1
    with pytest.raises(ChordError, match=f"Dependency {late} raised TaskRevokedError"):
        body.get(timeout=30)
    assert body.state == states.FAILURE

    # Dependencies (0018): a job waiting on others (depend()), released by the
    # worker role's completion; a waiting dependent revoked (advance() counts
    # it for what waits on it: dependencies_settle()).
    first_dep = add.apply_async((1, 1), countdown=0.5)
    dependent = add.apply_async((3, 3), depends_on=[first_dep])
    assert dependent.get(timeout=30) == 6
    gate = add.apply_async((1, 1), countdown=60)
    waiting_dependent = add.apply_async((4, 4), depends_on=[gate])
    next_in_line = add.apply_async((5, 5), depends_on=[waiting_dependent])
    waiting_dependent.revoke()
    wait_for(lambda: next_in_line.state == states.FAILURE, 30, "what waits on it to fail")
    gate.revoke()

    # Batches (0019): opened, added to and closed by the producer (batch_open,
    # batch_add, batch_close), a waiting member revoked (advance() counts it:
    # batches_settle()), the rest counted by the worker role's completion; the
    # progress view read; on_failure spawned once.
    batch = app.batch(on_complete=jq.echo.s(), on_failure=jq.echo.s("failed"))
    members = [batch.add(add, i, i) for i in range(3)]
    parked = batch.add(add.s(9, 9).set(countdown=600))
    parked.revoke()
    assert batch.close() in ("CLOSED", "DONE")
    assert [m.get(timeout=30) for m in members] == [0, 2, 4]
    wait_for(lambda: batch.progress().completed, 30, "the batch to complete")
    assert batch.progress()[:6] == ("DONE", 4, 0, 3, 0, 1)
    counts = {"batch": batch.id, "total": 4, "succeeded": 3, "failed": 0, "revoked": 1}
    assert batch.on_complete is not None and batch.on_failure is not None
    assert batch.on_complete.get(timeout=30)["args"] == [counts]
    assert batch.on_failure.get(timeout=30)["args"] == [counts, "failed"]

    # Revoking a running job, with terminate.
    running = jq.ticking.delay(60)
    wait_for(lambda: running.state == states.STARTED, 20, "the job to start")
    running.revoke(terminate=True)
    with pytest.raises(TaskRevokedError):
        running.get(timeout=20)
    assert running.state == states.REVOKED

    # Remote control (0014): the producer asks, the worker role answers; and
    # run-time limits.
    pong = app.control.inspect(timeout=10).ping()
    assert pong is not None and list(pong.values()) == [{"ok": "pong"}]
    assert app.control.rate_limit("add", "100/s")["rate_per_second"] == 100.0
    assert app.control.reset_limits("add") is True

    assert worker.proc.poll() is None
    _denied_everywhere(worker.log)


def test_the_upgrade_to_0018_lets_granted_workers_lock_leases(
    dsn: str, schema: str, conn: psycopg.Connection[Any], make_role: Callable[..., Role]
) -> None:
    """A worker role granted before 0018 may delete leases but not lock them;
    the migration grants it UPDATE on job_lease, so no grant need run again.
    enqueue(), made again with two more parameters, keeps its grants both ways
    (a producer's EXECUTE, PUBLIC's taken away)."""
    role, producer = make_role(), make_role()
    _no_public_execute(conn, schema)
    grant(dsn, schema, worker=role.name, producer=producer.name)
    conn.execute(f'REVOKE UPDATE ON "{schema}".job_lease FROM "{role.name}"')
    query = "SELECT has_table_privilege(%s, %s, 'UPDATE')"
    table = f'"{schema}".job_lease'
    may_enqueue = (
        "SELECT has_function_privilege(%s, p.oid, 'EXECUTE') FROM pg_proc AS p "
        "WHERE p.pronamespace = %s::regnamespace AND p.proname = 'enqueue'"
    )
    quoted = f'"{schema}"'
    migrate.downgrade(dsn, schema, "0017")
    assert conn.execute(query, (role.name, table)).fetchone() == (False,)
    assert conn.execute(may_enqueue, (producer.name, quoted)).fetchone() == (True,)
    assert conn.execute(may_enqueue, ("public", quoted)).fetchone() == (False,)
    migrate.upgrade(dsn, schema)
    assert conn.execute(query, (role.name, table)).fetchone() == (True,)
    assert conn.execute(may_enqueue, (producer.name, quoted)).fetchone() == (True,)
    assert conn.execute(may_enqueue, ("public", quoted)).fetchone() == (False,)
    with psycopg.connect(producer.dsn, autocommit=True) as own:
        own.execute(f"SELECT {quoted}.enqueue('add', '[1, 2]')")


def test_the_upgrade_to_0021_gives_granted_roles_what_fair_keys_need(
    dsn: str, schema: str, conn: psycopg.Connection[Any], make_role: Callable[..., Role]
) -> None:
    """Workers granted before 0021 read the keys' weights in the fair claim,
    operators may set them and readers read the fair_keys view, without a
    new grant; what 0021 grants is what grant() does."""
    worker, producer, reader = make_role(), make_role(), make_role()
    _no_public_execute(conn, schema)
    quoted = f'"{schema}"'
    checks = (
        "SELECT has_table_privilege(%(r)s, %(s)s || '.fair_weights', 'SELECT'), "
        "has_function_privilege(%(r)s, %(s)s || '.set_fair_weight(text, integer)', 'EXECUTE'), "
        "has_table_privilege(%(r)s, %(s)s || '.fair_keys', 'SELECT')"
    )

    def privileges(role: Role) -> Any:
        return conn.execute(checks, {"r": role.name, "s": quoted}).fetchone()

    grant(dsn, schema, worker=worker.name, producer=producer.name, reader=reader.name)
    migrate.downgrade(dsn, schema, "0020")
    migrate.upgrade(dsn, schema)
    expected = {
        worker: (True, False, False),
        producer: (False, True, False),
        reader: (False, False, True),
    }
    for role, wanted in expected.items():
        assert privileges(role) == wanted
    grant(dsn, schema, worker=worker.name, producer=producer.name, reader=reader.name)
    for role, wanted in expected.items():
        assert privileges(role) == wanted  # the same as a new grant


def test_the_upgrade_to_0022_gives_granted_roles_what_keys_in_sql_need(
    dsn: str, schema: str, conn: psycopg.Connection[Any], make_role: Callable[..., Role]
) -> None:
    """Roles granted before 0022 keep enqueueing from SQL after it (enqueue()
    reads task_settings as its caller) and workers write it and record a
    beat's holder, without a new grant; what 0022 grants is what grant() does."""
    worker, producer, reader = make_role(), make_role(), make_role()
    _no_public_execute(conn, schema)
    quoted = f'"{schema}"'
    checks = (
        "SELECT has_table_privilege(%(r)s, %(s)s || '.task_settings', 'SELECT'), "
        "has_table_privilege(%(r)s, %(s)s || '.task_settings', 'INSERT'), "
        "has_table_privilege(%(r)s, %(s)s || '.task_settings', 'UPDATE'), "
        "has_table_privilege(%(r)s, %(s)s || '.schedule_ticks', 'UPDATE'), "
        "has_function_privilege(%(r)s, %(s)s || '.unique_hold(text, uuid, text[], float8, "
        "text, jsonb, jsonb, timestamptz, boolean)', 'EXECUTE')"
    )

    def privileges(role: Role) -> Any:
        return conn.execute(checks, {"r": role.name, "s": quoted}).fetchone()

    grant(dsn, schema, worker=worker.name, producer=producer.name, reader=reader.name)
    assert privileges(worker) == (True,) * 5
    assert privileges(producer) == (True, False, False, False, True)
    assert privileges(reader) == (False,) * 5
    migrate.downgrade(dsn, schema, "0021")  # as if granted at 0021
    migrate.upgrade(dsn, schema)
    assert privileges(worker) == (True,) * 5  # the new functions: PUBLIC's EXECUTE
    assert privileges(producer) == (True, False, False, False, True)
    settings = queries(schema)["task_settings_sync"]
    app = JobQueue(dsn, schema=schema, auto_migrate=False)
    build(app)
    with psycopg.connect(worker.dsn, autocommit=True) as own:  # as a starting worker does
        own.execute(settings, {"settings": dumps(task_settings(app))})
    app.close()
    with psycopg.connect(producer.dsn, autocommit=True) as own:
        first = own.execute(f"SELECT {quoted}.enqueue('once_at_a_time', '[\"k\"]')").fetchone()
        again = own.execute(f"SELECT {quoted}.enqueue('once_at_a_time', '[\"k\"]')").fetchone()
        assert first == again  # the unique key, taken from SQL by a producer
    grant(dsn, schema, worker=worker.name, producer=producer.name, reader=reader.name)
    assert privileges(worker) == (True,) * 5  # the same as a new grant
    assert privileges(producer) == (True, False, False, False, True)


def test_the_upgrade_to_0023_lets_granted_workers_admit_ahead(
    dsn: str, schema: str, conn: psycopg.Connection[Any], make_role: Callable[..., Role]
) -> None:
    """Workers granted before 0023 may run admit_at() after it, by a grant
    of their own (not PUBLIC's, which a strict policy revokes), the same as
    a new grant gives them; producers and readers get nothing."""
    worker, producer, reader = make_role(), make_role(), make_role()
    quoted = f'"{schema}"'
    check = "SELECT has_function_privilege(%s, %s || '.admit_at(uuid[], float8)', 'EXECUTE')"

    def may_admit(role: Role) -> bool:
        return bool(conn.execute(check, (role.name, quoted)).fetchone()[0])

    _no_public_execute(conn, schema)
    grant(dsn, schema, worker=worker.name, producer=producer.name, reader=reader.name)
    migrate.downgrade(dsn, schema, "0022")  # as if granted at 0022
    migrate.upgrade(dsn, schema)
    conn.execute(f"REVOKE EXECUTE ON FUNCTION {quoted}.admit_at(uuid[], float8) FROM PUBLIC")
    assert [may_admit(r) for r in (worker, producer, reader)] == [True, False, False]
    with psycopg.connect(worker.dsn, autocommit=True) as own:  # as a claim calls it
        own.execute(f"SELECT * FROM {quoted}.admit_at('{{}}'::uuid[], 0.05)").fetchall()
    grant(dsn, schema, worker=worker.name, producer=producer.name, reader=reader.name)
    assert [may_admit(r) for r in (worker, producer, reader)] == [True, False, False]


def test_a_reader_reads_every_view_and_no_table(
    dsn: str,
    schema: str,
    conn: psycopg.Connection[Any],
    jq: Any,
    make_role: Callable[..., Role],
    apps: Callable[[str, str], Any],
) -> None:
    reader = make_role()
    _no_public_execute(conn, schema)
    grant(dsn, schema, reader=reader.name)
    waiting = jq.add.apply_async((1, 2), countdown=600)
    jq.app.enqueue_many(jq.add, [(i, i) for i in range(5)])
    with psycopg.connect(reader.dsn, autocommit=True) as own:
        views = own.execute(
            "SELECT viewname FROM pg_views WHERE schemaname = %s", (schema,)
        ).fetchall()
        assert {"all_jobs", "queue_stats", "task_stats", "job_history", "workflow_jobs"} <= {
            view for (view,) in views
        }
        for (view,) in views:
            own.execute(f'SELECT * FROM "{schema}".{view}').fetchall()
        count = own.execute(f'SELECT count(*) FROM "{schema}".all_jobs').fetchone()
        assert count == (6,)  # the views read the tables with their owner's rights
        recent = own.execute(  # the time-range query of docs/sql.md
            f'SELECT count(*) FROM "{schema}".all_jobs '
            f"WHERE id >= \"{schema}\".uuid7_floor(now() - interval '1 hour')"
        ).fetchone()
        assert recent == (6,)
        stats = own.execute(f'SELECT pending FROM "{schema}".queue_stats').fetchone()
        assert stats == (6,)
        tables = own.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", (schema,)
        ).fetchall()
        assert len(tables) >= 15
        for (table,) in tables:
            if table == "alembic_version":  # the revision, which every client checks
                continue
            with pytest.raises(DENIED):
                own.execute(f'SELECT 1 FROM "{schema}".{table} LIMIT 1')
    # What jobqueue itself reads for a reader: `jobqueue stats`, a result's state.
    seen = apps(reader.dsn, schema)
    assert [row[:2] for row in seen.app.store.queue_stats()] == [("default", 6)]
    assert AsyncResult(waiting.id, app=seen.app).state == states.PENDING


def test_a_worker_role_runs_the_whole_life_cycle_without_ddl(
    dsn: str,
    schema: str,
    conn: psycopg.Connection[Any],
    jq: Any,
    make_role: Callable[..., Role],
    role_workers: Callable[..., WorkerProcess],
    apps: Callable[[str, str], Any],
) -> None:
    role = make_role()
    _no_public_execute(conn, schema)
    grant(dsn, schema, worker=role.name)

    # Rescue: a worker of this role dies while running a job; another rescues it.
    doomed = role_workers(role, "--heartbeat-interval", "0.2", "--lease-ttl", "1")
    lost = jq.sleep.delay(2)
    wait_for(lambda: lost.state == states.STARTED, 20, "the job to start")
    doomed.kill()
    _dead_rows_in_job_queue(dsn, schema, conn)
    before = _stats(conn, schema)[1]
    worker = role_workers(
        role, "--beat", "--concurrency", "4", "--heartbeat-interval", "0.3", "--lease-ttl", "3"
    )
    assert lost.get(timeout=60) == 2 and lost.retries == 1
    history = conn.execute(
        f'SELECT error_type FROM "{schema}".job_history WHERE job_id = %s ORDER BY attempt',
        (lost.id,),
    ).fetchall()
    assert history == [("WorkerLostError",), (None,)]

    # Claim and complete, retries, progress, limits (task_limits, admit()), canvases.
    assert jq.add.delay(1, 2).get(timeout=30) == 3
    assert jq.flaky.delay(2).get(timeout=30) == "ok after 2 retries"
    assert jq.progress.delay(2).get(timeout=30) == 2
    assert jq.rate_limited.delay(7).get(timeout=30) == 7
    keyed = [jq.per_account.delay("acme", 0.05) for _ in range(2)]
    assert [r.get(timeout=30) for r in keyed] == ["acme", "acme"]
    # Fair keys: the fair claim reads the keys' weights (fair_weights, 0021).
    conn.execute(f'SELECT "{schema}".set_fair_weight(%s, 2)', ["t1"])
    tenants = [jq.tenant_work.delay(t, i) for i, t in enumerate(["t1", "t2", "t1"])]
    assert [r.get(timeout=30) for r in tenants] == ["t1:0", "t2:1", "t1:2"]
    assert chord(jq.add.s(i, i) for i in range(3))(jq.tsum.s()).get(timeout=30) == 6

    # An atomic task (row locks on its lease: UPDATE on job_lease), and a job
    # waiting on it (the completion counts dependencies: dependencies_settle()).
    conn.execute(f'CREATE TABLE "{schema}".atomic_notes (job uuid)')
    conn.execute(f'GRANT INSERT ON "{schema}".atomic_notes TO "{role.name}"')
    noted = jq.atomic_note.delay(f"{schema}.atomic_notes")
    after = jq.add.apply_async((20, 22), depends_on=[noted])
    assert after.get(timeout=30) == 42 and noted.get(timeout=30) == noted.id
    notes = conn.execute(f'SELECT job::text FROM "{schema}".atomic_notes').fetchall()
    assert notes == [(noted.id,)]

    # The beat (tests.apps: `add(1, 1)` every second) ticks, and its jobs run.
    ticked = (
        f'SELECT count(*) FROM "{schema}".schedule_ticks AS t '
        f"JOIN \"{schema}\".jobs AS j ON j.id = t.job_id WHERE j.state = 'SUCCESS'"
    )
    wait_for(lambda: conn.execute(ticked).fetchone() >= (1,), 30, "a beat tick to run")

    # Vacuum: with MAINTAIN (PostgreSQL 17+) the worker vacuums; without, it
    # says so once and leaves the table to autovacuum, and its heartbeat goes on.
    if _maintain_privilege(conn):
        wait_for(lambda: _stats(conn, schema)[1] > before, 30, "the worker to vacuum job_queue")
        wait_for(lambda: "vacuum job_queue" in worker.log, 5, "the vacuum's log line")
    else:
        wait_for(lambda: "may not vacuum" in worker.log, 30, "the vacuum step to give up")
        beat = f'SELECT heartbeat_at FROM "{schema}".workers WHERE pid = %s'
        first = conn.execute(beat, (worker.proc.pid,)).fetchone()
        for _ in range(3):  # three more heartbeats, each with job_queue still due
            seen = conn.execute(beat, (worker.proc.pid,)).fetchone()
            wait_for(
                lambda seen=seen: conn.execute(beat, (worker.proc.pid,)).fetchone() != seen,
                10,
                "a heartbeat",
            )
        assert conn.execute(beat, (worker.proc.pid,)).fetchone() != first
        assert worker.log.count("may not vacuum") == 1
        dead, vacuumed = _stats(conn, schema)
        assert dead >= 25_000 and vacuumed == before  # still due, never vacuumed
    assert jq.add.delay(2, 2).get(timeout=30) == 4

    # Retention as the worker role: finished jobs and bookkeeping past their age.
    mine = apps(role.dsn, schema)
    mine.app.conf.result_expires = mine.app.conf.failed_result_expires = 0.2
    retention = Retention(mine.app.store, mine.app.conf)
    with mine.app.db.connect() as own:
        wait_for(lambda: retention.prune(own) > 0, 20, "retention to delete finished jobs")

    # No DDL: the role may create nothing in the schema and owns nothing there.
    create = conn.execute("SELECT has_schema_privilege(%s, %s, 'CREATE')", (role.name, schema))
    assert create.fetchone() == (False,)
    owned = conn.execute(
        "SELECT count(*) FROM pg_class WHERE relowner = (SELECT oid FROM pg_roles "
        "WHERE rolname = %s)",
        (role.name,),
    )
    assert owned.fetchone() == (0,)
    assert worker.terminate() == 0
    _denied_everywhere(worker.log)


def test_the_vacuum_step_logs_once_and_skips_a_table_the_role_may_not_vacuum(
    dsn: str,
    schema: str,
    conn: psycopg.Connection[Any],
    make_role: Callable[..., Role],
    apps: Callable[[str, str], Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    role = make_role()
    grant(dsn, schema, worker=role.name)
    if _maintain_privilege(conn):  # as on PostgreSQL 16 and older, where it cannot be granted
        conn.execute(f'REVOKE MAINTAIN ON "{schema}".job_queue FROM "{role.name}"')
    _dead_rows_in_job_queue(dsn, schema, conn)
    dead, vacuumed = _stats(conn, schema)

    mine = apps(role.dsn, schema)
    step = Vacuum(mine.app.store)
    with caplog.at_level(logging.INFO, logger="jobqueue.worker"), mine.app.db.connect() as own:
        step.run(own)  # does not raise
        step.run(own)
        step.run(own)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert f"vacuum {schema}.job_queue skipped" in warnings[0]
    assert "vacuum job_queue" not in caplog.text
    assert step.refused == {"job_queue"}
    assert _stats(conn, schema) == (dead, vacuumed)  # still due, never vacuumed

    # Where the role may vacuum (the owner here), the same step does, saying nothing more.
    caplog.clear()
    owner = apps(dsn, schema)
    allowed = Vacuum(owner.app.store)
    with caplog.at_level(logging.INFO, logger="jobqueue.worker"), owner.app.db.connect() as own:
        allowed.run(own)
    assert "vacuum job_queue" in caplog.text and allowed.refused == set()
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    wait_for(lambda: _stats(conn, schema)[1] > vacuumed, 10, "the vacuum to be counted")
