"""The PostgreSQL target's tables as SQL, from one place: what the target runs to make a table
it lacks (when its role may), and what ``sluice schema --sql`` prints for a DBA to run (when
it may not: a role with SELECT, INSERT, UPDATE and DELETE on these tables, and TEMPORARY on
the database for COPY's staging tables, runs every kind).

Sluice's own tables are named after the target's ``table`` unquoted (PostgreSQL folds the
name to lower case), the typed tables of mapped kinds quoted. Every statement is idempotent
(``IF NOT EXISTS``), so the printed SQL may be run again after a mapping gains a column.
"""

from __future__ import annotations

from collections.abc import Iterable

from tasks.targets.base import ColumnType, Table
from tasks.targets.typed import KEY, quote

# Typed tables (tasks/targets/typed.py): each Sluice type's column, and back from
# format_type() (a few more, for a table an administrator made).
DECLARED: dict[ColumnType, str] = {"text": "text", "integer": "bigint",
                                   "number": "double precision", "boolean": "boolean",
                                   "timestamp": "timestamptz", "json": "jsonb"}
TYPE_OF: dict[str, ColumnType] = {
    "text": "text", "character varying": "text", "bigint": "integer", "integer": "integer",
    "smallint": "integer", "double precision": "number", "real": "number",
    "boolean": "boolean", "timestamp with time zone": "timestamp", "jsonb": "json"}

# What a role without CREATE is told when a table it needs is missing.
ASK_A_DBA = ("have a role that may create tables run what `sluice schema --sql` prints"
             " (`--role ROLE` adds the grants)")


def own_tables(table: str) -> dict[str, str]:
    """Sluice's own tables for the target's ``table``: name -> its CREATE statement."""
    return {
        # Items of every kind without a mapping; (source, kind, identifier) is the key.
        table: f"""CREATE TABLE IF NOT EXISTS {table} (
    source text NOT NULL,
    kind text NOT NULL,
    identifier text NOT NULL,
    data jsonb NOT NULL,
    run_id text NOT NULL,
    run_seq bigint NOT NULL DEFAULT 0,
    first_seq bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, kind, identifier)
)""",
        # The last run of each kind that ended clean (the deletion guard's baseline).
        f"{table}_state": f"""CREATE TABLE IF NOT EXISTS {table}_state (
    source text NOT NULL,
    kind text NOT NULL,
    clean_seq bigint NOT NULL,
    PRIMARY KEY (source, kind)
)""",
        # The watermarks of incremental kinds: partition key -> newest cursor value.
        f"{table}_watermarks": f"""CREATE TABLE IF NOT EXISTS {table}_watermarks (
    source text NOT NULL,
    kind text NOT NULL,
    part text NOT NULL,
    value jsonb NOT NULL,
    PRIMARY KEY (source, kind, part)
)""",
        # A source's secrets (a rotated OAuth 2.0 refresh token), sealed: nothing in clear.
        f"{table}_secrets": f"""CREATE TABLE IF NOT EXISTS {table}_secrets (
    source text NOT NULL,
    name text NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (source, name)
)""",
    }


def typed_table(table: Table) -> str:
    """The CREATE statement of a mapped kind's table, with ``table.columns``."""
    columns = [f"{quote(KEY)} text PRIMARY KEY",
               *(f"{quote(c)} {DECLARED[t]}" for c, t in table.columns.items()),
               f"{quote('_raw')} jsonb NOT NULL",
               f"{quote('_synced_at')} timestamptz NOT NULL DEFAULT now()",
               f"{quote('_run_id')} text NOT NULL", f"{quote('_run_seq')} bigint NOT NULL",
               f"{quote('_first_seq')} bigint NOT NULL"]
    body = ",\n    ".join(columns)
    return f"CREATE TABLE IF NOT EXISTS {quote(table.name)} (\n    {body}\n)"


def add_columns(table: Table, columns: Iterable[str]) -> str:
    """The ALTER statement that gives ``table`` these of its columns it lacks."""
    added = ",\n    ".join(f"ADD COLUMN IF NOT EXISTS {quote(c)} {DECLARED[table.columns[c]]}"
                           for c in columns)
    return f"ALTER TABLE {quote(table.name)}\n    {added}"


def grants(tables: Iterable[str], role: str) -> list[str]:
    """What ``role`` needs and nothing more: the rows of ``tables`` (names as SQL), and
    TEMPORARY on the database (COPY stages each batch in a temporary table, which lives in
    the session's own schema and goes with it: no CREATE on any schema)."""
    who = quote(role)
    literal = "'" + quote(role).replace("'", "''") + "'"
    return [f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE {', '.join(tables)} TO {who}",
            # GRANT names the database; current_database() is the one these tables are in.
            "DO $grant$ BEGIN EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO %s',"
            f" current_database(), {literal}); END $grant$"]
