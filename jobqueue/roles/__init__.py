"""Least privilege: what a producer, a worker and a reader may do on one schema.

``jobqueue db grant --producer app --worker jq_worker --reader grafana`` (any
subset) runs, in one transaction and as the schema's owner, the statements
this module writes for the jobqueue schema at this release's revision:

- a **producer** enqueues (single, bulk with COPY, unique, canvases, the SQL
  ``enqueue()``), revokes, reads results, and runs the operations (pause,
  resume, purge, retry, cancel, delete, move and find jobs: revision 0013);
- a **worker** runs jobs and their life cycle (claim, completion, retries,
  progress, callbacks, limits), maintenance (rescue, retention, vacuum where
  the server allows it) and the beat; it never needs DDL;
- a **reader** reads the views (dashboards, ``jobqueue stats``), finds jobs
  (``find_jobs``) and reads ``metrics()`` (``jobqueue metrics``: revision
  0015), not the tables;
- a **monitor** is a reader that may also SELECT the tables ``jobqueue
  dashboard --read-only`` reads (jobs and their attempts, workers, schedules,
  limits, canvases, counters) and change nothing: revision 0017.

Every grant below says why it exists: the statement of ``sql/queries.sql`` or
the function of the schema that needs it (docs/deployment.md has the same
table). A role named here gets exactly its kinds' privileges on the schema:
whatever else it held on the schema and its objects is revoked first, so run
this again after every ``jobqueue db upgrade`` (a new revision may add objects)
and name all the kinds one role plays in one command.

LISTEN and NOTIFY are not privileges in PostgreSQL: any role that can connect
may listen on (and notify) the schema's channels, so there is nothing to grant
for the wake-ups or for ``AsyncResult.get()``; nor for advisory locks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

import click
import psycopg
from psycopg import sql

from ..exceptions import ConfigurationError, JobQueueError, SchemaNotReadyError
from ..redact import redact
from ..sql import validate_schema
from .rules import FUNCTIONS, KINDS, RULES, TABLES, VIEWS, WORKER_MAINTAIN, Rule

if TYPE_CHECKING:
    from ..cli import Context


_ORDER = ("SELECT", "INSERT", "UPDATE", "DELETE", "MAINTAIN")  # what a table may be given


class Statement(NamedTuple):
    sql: str
    why: str


def grant(
    dsn: str,
    schema: str,
    *,
    producer: str | None = None,
    worker: str | None = None,
    reader: str | None = None,
    monitor: str | None = None,
    dry_run: bool = False,
) -> list[str]:
    """Give each named role exactly its kind's privileges on ``schema``, in one
    transaction; the statements run (or, with ``dry_run``, that would run)."""
    roles = _roles(producer=producer, worker=worker, reader=reader, monitor=monitor)
    with _connect(dsn) as conn, conn.transaction():
        statements = _plan(conn, schema, roles)
        if not dry_run:
            for statement in statements:
                conn.execute(statement.sql)
    return [statement.sql for statement in statements]


def plan(
    dsn: str,
    schema: str,
    *,
    producer: str | None = None,
    worker: str | None = None,
    reader: str | None = None,
    monitor: str | None = None,
) -> list[Statement]:
    """What ``grant`` would run, each statement with why it is there."""
    roles = _roles(producer=producer, worker=worker, reader=reader, monitor=monitor)
    with _connect(dsn) as conn:
        return _plan(conn, schema, roles)


def _roles(**kinds: str | None) -> dict[str, list[str]]:
    """Role name -> the kinds it is given (one role may play several)."""
    roles: dict[str, list[str]] = {}
    for kind, role in kinds.items():
        if role is not None:
            if not role:
                raise ConfigurationError(f"the {kind} role name is empty")
            roles.setdefault(role, []).append(kind)
    if not roles:
        raise ConfigurationError("name at least one role: producer, worker, reader or monitor")
    return roles


def _connect(dsn: str) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(dsn)
    except psycopg.OperationalError as exc:
        raise ConfigurationError(f"cannot connect to PostgreSQL at {redact(dsn)}: {exc}") from exc


def _plan(
    conn: psycopg.Connection[Any], schema: str, roles: dict[str, list[str]]
) -> list[Statement]:
    validate_schema(schema)
    present = _objects(conn, schema)
    _check_roles(conn, schema, roles)
    maintain = conn.info.server_version >= 170000
    out: list[tuple[sql.Composable, str]] = []
    for role, kinds in roles.items():
        rules = [rule for kind in kinds for rule in RULES[kind]]
        if "worker" in kinds and maintain:
            rules.extend(WORKER_MAINTAIN)
        out.extend(_role_statements(schema, role, kinds, rules, present))
    return [Statement(s.as_string(conn), why) for s, why in out]


def _objects(conn: psycopg.Connection[Any], schema: str) -> dict[str, str]:
    """The schema's tables, views and functions (name -> kind), checked
    against this release: the schema must be at its revision, and hold no
    object this module does not know."""
    from ..migrate import head_revision

    head = head_revision()
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f'"{schema}".alembic_version',))
    row = exists.fetchone()
    revision = None
    if row and row[0]:
        query = sql.SQL("SELECT version_num FROM {}.alembic_version").format(sql.Identifier(schema))
        found = conn.execute(query).fetchone()
        revision = None if found is None else str(found[0])
    if revision != head:
        if revision is None:
            raise SchemaNotReadyError(
                f"there is no jobqueue schema {schema!r} in this database: run "
                "`jobqueue db upgrade` first"
            )
        raise SchemaNotReadyError(
            f"schema {schema!r} is at revision {revision} and this jobqueue grants on revision "
            f"{head}: run `jobqueue db upgrade` first (or use the release that matches the schema)"
        )
    rows = conn.execute(
        """
        SELECT c.relname, CASE WHEN c.relkind IN ('v', 'm') THEN 'view' ELSE 'table' END
        FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
          AND NOT c.relispartition  -- a partition is reached through its parent's grants
        UNION ALL
        SELECT p.proname, 'function'
        FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
        WHERE n.nspname = %(schema)s
        """,
        {"schema": schema},
    ).fetchall()
    known = {
        **dict.fromkeys(TABLES, "table"),
        **dict.fromkeys(VIEWS, "view"),
        **dict.fromkeys(FUNCTIONS, "function"),
    }
    present: dict[str, str] = {}
    unknown: list[str] = []
    for name, kind in rows:
        if known.get(name) != kind or name in present:  # unknown, or an overloaded function
            unknown.append(f"{kind} {name}")
        present[name] = kind
    if unknown:
        raise ConfigurationError(
            f"schema {schema!r} holds objects jobqueue.roles does not know "
            f"({', '.join(sorted(unknown))}): it cannot say which role needs them"
        )
    return present


def _check_roles(conn: psycopg.Connection[Any], schema: str, roles: dict[str, list[str]]) -> None:
    """Each role exists, and is not one that bypasses privileges: a superuser,
    or a member of a role owning the schema or its objects (it could run DDL)."""
    rows = conn.execute(
        """
        WITH owner AS (
            SELECT n.nspowner AS oid FROM pg_namespace AS n WHERE n.nspname = %(schema)s
            UNION
            SELECT c.relowner FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
            WHERE n.nspname = %(schema)s
            UNION
            SELECT p.proowner FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
            WHERE n.nspname = %(schema)s
        )
        SELECT r.rolname, r.rolsuper,
               (SELECT string_agg(o.rolname, ', ' ORDER BY o.rolname)
                FROM owner JOIN pg_roles AS o ON o.oid = owner.oid
                WHERE pg_has_role(r.oid, owner.oid, 'MEMBER'))
        FROM pg_roles AS r
        WHERE r.rolname = ANY(%(names)s)
        """,
        {"schema": schema, "names": list(roles)},
    ).fetchall()
    found = {name: (superuser, owners) for name, superuser, owners in rows}
    missing = [name for name in roles if name not in found]
    if missing:
        raise ConfigurationError(
            "no such role: "
            + ", ".join(f"{name!r} (given as {' and '.join(roles[name])})" for name in missing)
            + "; create it first (CREATE ROLE ... LOGIN PASSWORD ...)"
        )
    for name, (superuser, owners) in found.items():
        if superuser:
            raise ConfigurationError(
                f"role {name!r} is a superuser: it bypasses every privilege, so granting "
                "it least privileges means nothing; use a role without SUPERUSER"
            )
        if owners:
            raise ConfigurationError(
                f"role {name!r} owns schema {schema!r} or its objects, or is a member of a "
                f"role that does ({owners}): it may run DDL there; use a role of its own"
            )


def _role_statements(
    schema: str, role: str, kinds: list[str], rules: Iterable[Rule], present: dict[str, str]
) -> list[tuple[sql.Composable, str]]:
    who = sql.Identifier(role)
    space = sql.Identifier(schema)
    as_kinds = " and ".join(kinds)
    out: list[tuple[sql.Composable, str]] = [
        (
            sql.SQL("REVOKE ALL ON SCHEMA {} FROM {}").format(space, who),
            f"{role}: start from nothing on the schema (no CREATE: no DDL)",
        ),
        (
            sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(space, who),
            f"{role}: start from nothing on its tables and views",
        ),
        (
            sql.SQL("REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {} FROM {}").format(space, who),
            f"{role}: start from nothing on its functions (PUBLIC's EXECUTE stays)",
        ),
        (
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(space, who),
            f"{role} ({as_kinds}): reach the schema's objects",
        ),
    ]
    # Per object: one statement for its table-wide privileges, one per
    # column-level one. A table-wide grant wins over column grants of the same
    # privilege (a role that is both producer and worker).
    merged: dict[str, dict[str, tuple[set[str] | None, list[str]]]] = {}
    for rule in rules:
        if rule.target not in present:
            continue  # not in this revision
        privileges = merged.setdefault(rule.target, {})
        columns, whys = privileges.get(rule.privilege, (set(), []))
        if columns is not None:
            columns = (columns | set(rule.columns)) if rule.columns else None
        if rule.why not in whys:
            whys.append(rule.why)
        privileges[rule.privilege] = (columns, whys)
    for target, privileges in merged.items():
        name = sql.Identifier(schema, target)
        if present[target] == "function":
            _, whys = privileges["EXECUTE"]
            statement = sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(name, who)
            out.append((statement, f"{role} ({as_kinds}): " + "; ".join(whys)))
            continue
        wide = [p for p in _ORDER if p in privileges and privileges[p][0] is None]
        if wide:
            statement = sql.SQL("GRANT {} ON TABLE {} TO {}").format(
                sql.SQL(", ").join(sql.SQL(p) for p in wide), name, who
            )
            whys = [f"{p}: {'; '.join(privileges[p][1])}" for p in wide]
            out.append((statement, f"{role} ({as_kinds}): " + " | ".join(whys)))
        for privilege in _ORDER:
            columns, whys = privileges.get(privilege, (None, []))
            if columns:
                statement = sql.SQL("GRANT {} ({}) ON TABLE {} TO {}").format(
                    sql.SQL(privilege),
                    sql.SQL(", ").join(sql.Identifier(c) for c in sorted(columns)),
                    name,
                    who,
                )
                why = f"{role} ({as_kinds}): {privilege} of these columns only: " + "; ".join(whys)
                out.append((statement, why))
    return out


@click.command("grant")
@click.option("--producer", metavar="ROLE", help="Enqueues, revokes and reads results.")
@click.option("--worker", metavar="ROLE", help="Runs workers and beats (no DDL).")
@click.option("--reader", metavar="ROLE", help="Reads the views (dashboards, jobqueue stats).")
@click.option(
    "--monitor",
    metavar="ROLE",
    help="A reader that may also SELECT the tables (jobqueue dashboard --read-only).",
)
@click.option(
    "--print",
    "print_only",
    is_flag=True,
    help="Print the SQL, with why each grant exists, and run nothing.",
)
@click.pass_obj
def grant_command(
    obj: Context,
    producer: str | None,
    worker: str | None,
    reader: str | None,
    monitor: str | None,
    print_only: bool,
) -> None:
    """Give roles exactly what a producer, a worker, a reader or a monitor needs on the schema.

    Each role named gets its kinds' privileges and nothing more on the schema
    (what it held there before is revoked). Run it as the schema's owner, after
    `jobqueue db upgrade`. The roles must exist.
    """
    if producer is None and worker is None and reader is None and monitor is None:
        raise click.UsageError(
            "name at least one role: --producer, --worker, --reader or --monitor"
        )
    app = obj.app()
    dsn, schema = app.db.dsn(), app.conf.schema
    try:
        if print_only:
            for statement in plan(
                dsn, schema, producer=producer, worker=worker, reader=reader, monitor=monitor
            ):
                click.echo(f"-- {statement.why}\n{statement.sql};")
            return
        statements = grant(
            dsn, schema, producer=producer, worker=worker, reader=reader, monitor=monitor
        )
    except JobQueueError as exc:
        raise click.ClickException(str(exc)) from exc
    given = ", ".join(
        f"{role} as {kind}"
        for kind, role in (
            ("producer", producer),
            ("worker", worker),
            ("reader", reader),
            ("monitor", monitor),
        )
        if role is not None
    )
    click.echo(f"schema {schema!r}: {given} ({len(statements)} statements)")


__all__ = [
    "FUNCTIONS",
    "KINDS",
    "RULES",
    "TABLES",
    "VIEWS",
    "Rule",
    "Statement",
    "grant",
    "grant_command",
    "plan",
]
