"""``sluice schema [--sql] [--role ROLE]``: the tables a configuration's target needs, so that
a DBA can make them and Sluice's own role needs no CREATE.

The SQL is the targets' own (``tasks/targets/pgschema.py``, ``tasks/targets/sqlite.py``): what
a worker runs when a table is missing is what is printed. A typed table gets the columns its
mapping declares a type for; a column whose type is inferred from the first values it gets
is left out, with a comment (an existing column's type is the one Sluice writes to, so a DBA
may add it with the type they choose).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from integrations.registry import load
from tasks.config import PostgresConfig, SluiceConfig, SqliteConfig
from tasks.targets.base import ColumnType, Table
from tasks.targets.typed import quote


@dataclass
class Mapped:
    """The typed tables of a configuration's mapped kinds."""

    tables: dict[str, Table] = field(default_factory=dict)
    kinds: dict[str, list[str]] = field(default_factory=dict)  # table -> SOURCE/KIND
    inferred: dict[str, list[str]] = field(default_factory=dict)  # table -> its columns


def mapped(config: SluiceConfig) -> Mapped:
    """Every mapped kind's table with the columns whose type its mapping declares (a table
    two kinds map to has the columns of both). Raises MappingError for a mapping jq does
    not compile."""
    found = Mapped()
    for source, settings in config.sources.items():
        integration = load(settings)
        for kind in settings.kind_names():
            mapping = integration.mapping(kind)
            if mapping is None:
                continue
            name = mapping.table(source)
            table = found.tables.get(name)
            columns: dict[str, ColumnType] = dict(table.columns) if table else {}
            for column, type_ in mapping.settings.declared().items():
                if type_ is not None:
                    columns.setdefault(column, type_)
                else:
                    found.inferred.setdefault(name, []).append(column)
            found.tables[name] = Table(name, columns, mapping.settings.schema_mode)
            found.kinds.setdefault(name, []).append(f"{source}/{kind}")
    return found


def _typed(found: Mapped, name: str) -> list[str]:
    """The comment lines above a typed table's SQL."""
    lines = [f"-- {', '.join(found.kinds[name])} (mapping)"]
    for column in found.inferred.get(name, []):
        lines += [f"-- column {column!r} is not here: its type is inferred from its first",
                  '-- values; declare one (type = "text", ...) or add it with the type you want']
    return lines


def postgres_sql(settings: PostgresConfig, found: Mapped, *, role: str | None) -> list[str]:
    from tasks.targets import pgschema

    own = pgschema.own_tables(settings.table)
    out = [f'-- Sluice\'s tables for the PostgreSQL target (table = "{settings.table}").',
           "-- Run as a role that may create tables, in the schema the target's role finds",
           "-- first on its search_path. Every statement may run again (after a mapping",
           "-- gains a column, say).",
           *(f"{create};" for create in own.values())]
    for name, table in found.tables.items():
        out += ["", *_typed(found, name), f"{pgschema.typed_table(table)};"]
        if table.columns:  # a table made before the mapping gained a column gets it
            out.append(f"{pgschema.add_columns(table, table.columns)};")
    out.append("")
    names = [*own, *(quote(n) for n in found.tables)]
    if role is None:
        out.append("-- The grants Sluice's role needs: sluice schema --sql --role ROLE")
    else:
        out += [f"-- What role {role!r} needs, and no more (and USAGE on the schema, which",
                "-- PUBLIC has on public). TEMPORARY: COPY stages each batch in a temporary",
                "-- table, in the session's own schema (PUBLIC has it too, unless revoked).",
                *(f"{grant};" for grant in pgschema.grants(names, role))]
    return out


def sqlite_sql(settings: SqliteConfig, found: Mapped) -> list[str]:
    from tasks.targets import sqlite

    out = [f"-- Sluice's tables in the SQLite file {settings.path}. Nothing to run: a worker",
           "-- makes what is missing when it opens the file (a file has no roles; its",
           "-- permissions decide who writes). For reference:",
           *(f"{create.strip()};" for create in sqlite.OWN_SCHEMA)]
    for name, table in found.tables.items():
        out += ["", *_typed(found, name), f"{sqlite.typed_table(table)};"]
    return out


def sql(config: SluiceConfig, *, role: str | None) -> list[str]:
    """The lines of ``sluice schema --sql`` for a SQLite or PostgreSQL target."""
    target = config.target
    if isinstance(target, PostgresConfig):
        return postgres_sql(target, mapped(config), role=role)
    assert isinstance(target, SqliteConfig)
    return sqlite_sql(target, mapped(config))


def tables(config: SluiceConfig) -> list[str]:
    """The lines of ``sluice schema`` without ``--sql``: each table and what it holds."""
    from tasks.targets import pgschema, sqlite

    target = config.target
    own = (pgschema.own_tables(target.table) if isinstance(target, PostgresConfig)
           else sqlite.OWN_TABLES)
    what = ["entities of kinds without a mapping", "the last clean run of each kind",
            "the watermarks of incremental kinds", "sealed secrets (rotated refresh tokens)"]
    found = mapped(config)
    return ([f"{name}: {purpose}" for name, purpose in zip(own, what, strict=True)]
            + [f"{name}: {', '.join(found.kinds[name])}" for name in found.tables])
