"""A schema's definition read back from the catalogs, object by object, to
compare the reference file ``jobqueue/sql/schema.sql`` with a migrated schema.

Each object is one entry (``"function admit(ids uuid[])"``, ``"index
jobs_root_idx"``...) holding its definition as PostgreSQL prints it, with the
schema's name replaced by ``{schema}`` so two schemas of one database compare
equal when they define the same things.

Partitions of jobs and job_attempts (and their indexes and constraints) are
left out: which ones exist depends on the day the schema was made, and a
migrated schema also has jobs_legacy. The parents, their partitioned indexes
and their triggers are compared like any table.
"""

from __future__ import annotations

import difflib
import re
from importlib import resources
from typing import Any

from jobqueue.sql import channels

# Tables whose rows are part of the schema, not data.
SCHEMA_ROWS = ("alembic_version", "schema_compat", "history_plan")

_RELKINDS = {
    "r": "table",
    "p": "partitioned table",
    "v": "view",
    "m": "materialized view",
    "S": "sequence",
    "c": "composite type",
    "f": "foreign table",
}
_PLACEHOLDER = re.compile(r"\{(?:schema|channel)\w*\}")


def reference_sql(schema: str) -> str:
    """schema.sql with its placeholders filled for ``schema``."""
    text = resources.files("jobqueue.sql").joinpath("schema.sql").read_text()
    chans = channels(schema)
    rendered = (
        text.replace("{schema_name}", schema)
        .replace("{schema}", f'"{schema}"')
        .replace("{channel_jobs}", chans["jobs"])
        .replace("{channel_done}", chans["done"])
        .replace("{channel_control}", chans["control"])
        .replace("{channel_reply}", chans["reply"])
    )
    left = sorted(set(_PLACEHOLDER.findall(rendered)))
    assert not left, f"schema.sql uses placeholders the test does not fill: {left}"
    return rendered


def apply_reference(conn: Any, schema: str) -> None:
    """Run schema.sql, top to bottom, in a new empty schema."""
    conn.execute(f'CREATE SCHEMA "{schema}"')
    conn.execute(reference_sql(schema))


def _rows(conn: Any, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    return list(conn.execute(sql, params).fetchall())


def definitions(conn: Any, schema: str) -> dict[str, str]:
    """Every object of ``schema``, by kind and name, with its definition."""
    out: dict[str, str] = {}
    for oid, name, kind, options in _rows(
        conn,
        "SELECT c.oid, c.relname, c.relkind, c.reloptions FROM pg_class AS c "
        "JOIN pg_namespace AS n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %(schema)s AND c.relkind NOT IN ('i', 'I') AND NOT c.relispartition "
        "ORDER BY 2",
        schema=schema,
    ):
        what = _RELKINDS.get(kind, f"relation of kind {kind!r}")
        if kind in ("r", "p"):
            lines = [
                f"{col} {typ}{' NOT NULL' if notnull else ''}"
                + (f" DEFAULT {default}" if default is not None else "")
                + (f" IDENTITY {identity}" if identity else "")
                + (f" GENERATED {generated}" if generated else "")
                for col, typ, notnull, default, identity, generated in _rows(
                    conn,
                    "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
                    "pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated "
                    "FROM pg_attribute AS a LEFT JOIN pg_attrdef AS d "
                    "ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
                    "WHERE a.attrelid = %(oid)s AND a.attnum > 0 AND NOT a.attisdropped "
                    "ORDER BY a.attnum",
                    oid=oid,
                )
            ]
            lines.append(f"WITH ({', '.join(options)})" if options else "WITH ()")
            out[f"{what} {name}"] = "\n".join(lines)
        elif kind in ("v", "m"):
            (viewdef,) = conn.execute("SELECT pg_get_viewdef(%s::oid)", (oid,)).fetchone()
            out[f"{what} {name}"] = viewdef
        else:
            out[f"{what} {name}"] = what
    queries = {
        # PostgreSQL 18 names NOT NULL constraints; a table renamed away (0012's
        # jobs_legacy) keeps the first names, so the new table's get a suffix:
        # name those by what they say instead.
        "constraint": "SELECT COALESCE(c.relname, t.typname) || '.' || CASE WHEN k.contype = 'n' "
        "THEN pg_get_constraintdef(k.oid) ELSE k.conname END, "
        "pg_get_constraintdef(k.oid) FROM pg_constraint AS k "
        "JOIN pg_namespace AS n ON n.oid = k.connamespace "
        "LEFT JOIN pg_class AS c ON c.oid = k.conrelid "
        "LEFT JOIN pg_type AS t ON t.oid = k.contypid WHERE n.nspname = %(schema)s "
        "AND NOT COALESCE(c.relispartition, false)",
        "index": "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index AS i "
        "JOIN pg_class AS c ON c.oid = i.indexrelid "
        "JOIN pg_class AS r ON r.oid = i.indrelid "
        "JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE n.nspname = %(schema)s "
        "AND NOT r.relispartition",
        "function": "SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) "
        "|| ')', CASE WHEN p.prokind = 'a' THEN 'aggregate' ELSE pg_get_functiondef(p.oid) "
        "END FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace "
        "WHERE n.nspname = %(schema)s",
        "trigger": "SELECT c.relname || '.' || t.tgname, pg_get_triggerdef(t.oid) "
        "FROM pg_trigger AS t JOIN pg_class AS c ON c.oid = t.tgrelid "
        "JOIN pg_namespace AS n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %(schema)s AND NOT t.tgisinternal AND NOT c.relispartition",
        # Types of their own (enums, domains...), not the row and array types
        # that come with every table.
        "type": "SELECT t.typname, t.typtype::text || ' ' "
        "|| format_type(t.typbasetype, t.typtypmod) || ' ' "
        "|| ARRAY(SELECT e.enumlabel FROM pg_enum AS e WHERE e.enumtypid = t.oid "
        "ORDER BY e.enumsortorder)::text FROM pg_type AS t "
        "JOIN pg_namespace AS n ON n.oid = t.typnamespace "
        "WHERE n.nspname = %(schema)s AND t.typrelid = 0 AND t.typcategory <> 'A'",
        "comment on": "SELECT o.type || ' ' || o.identity, d.description "
        "FROM pg_description AS d, pg_identify_object(d.classoid, d.objoid, d.objsubid) AS o "
        "WHERE o.schema = %(schema)s",
    }
    for kind, sql in queries.items():
        for name, definition in _rows(conn, sql, schema=schema):
            out[f"{kind} {name}"] = definition
    for table in SCHEMA_ROWS:
        if f"table {table}" in out:
            rows = conn.execute(f'SELECT * FROM "{schema}".{table} ORDER BY 1').fetchall()
            out[f"rows of {table}"] = "\n".join(map(repr, rows))
    return {
        key.replace(f'"{schema}"', "{schema}").replace(schema, "{schema}"): text.replace(
            f'"{schema}"', "{schema}"
        ).replace(schema, "{schema}")
        for key, text in out.items()
    }


def differences(migrated: dict[str, str], reference: dict[str, str]) -> dict[str, str]:
    """Per object that differs, a readable account of how."""
    out: dict[str, str] = {}
    for key in sorted(migrated.keys() | reference.keys()):
        if key not in reference:
            out[key] = f"{key}: in the migrated schema, missing from schema.sql"
        elif key not in migrated:
            out[key] = f"{key}: in schema.sql, not in the migrated schema"
        elif migrated[key] != reference[key]:
            diff = difflib.unified_diff(
                migrated[key].splitlines(),
                reference[key].splitlines(),
                "migrated to head",
                "schema.sql",
                lineterm="",
            )
            out[key] = f"{key} differs:\n" + "\n".join(diff)
    return out
