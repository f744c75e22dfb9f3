"""What the SQLite and PostgreSQL targets share for typed tables (``Table``, ``Typed`` in
tasks/targets/base.py): which names are safe, the fixed columns, and values in UTC.

A table name is a plain SQL identifier (letters, digits and ``_``, not starting with a digit)
and is quoted all the same. A property name may be any text a column can be named by, quoted
everywhere: at most 63 bytes of UTF-8 (PostgreSQL cuts longer names silently, and two
properties could become one column), no NUL, and none of the fixed columns nor two properties
that differ only in case (SQLite's names ignore case).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from integrations.errors import TargetRejected
from tasks.targets.base import (
    COLUMN_TYPES,
    ColumnType,
    ColumnTypeChanged,
    Deletion,
    Row,
    SchemaFrozen,
    Table,
    Within,
    bad_text,
    deletion_guard,
)

TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_NAME = 63  # bytes: PostgreSQL's NAMEDATALEN - 1

# Every typed table has these besides its properties, in this order after them.
FIXED = ("_raw", "_synced_at", "_run_id", "_run_seq", "_first_seq")
KEY = "identifier"

# The largest integer a bigint (PostgreSQL) or an INTEGER (SQLite) holds.
INT64 = (-(2**63), 2**63 - 1)


class SeenColumns:
    """What a target last read of its typed tables' columns, so that a batch need not read
    them again before it writes (``known_columns``). Sluice adds columns and never drops
    them, so what was seen is still there; it may lack a column another worker added since.
    A write that fails forgets its table (an operator may have dropped a column)."""

    _seen: dict[str, dict[str, ColumnType]]

    def known_columns(self, table: str) -> dict[str, ColumnType] | None:
        """The table's property columns as last read by this target (None: not read yet)."""
        return self._seen.get(table)

    @contextmanager
    def _forgetting(self, table: str) -> Iterator[None]:
        try:
            yield
        except BaseException:
            self._seen.pop(table, None)
            raise


class StaleRows(NamedTuple):
    """Where a target's stale deletion counts and deletes: a table (as SQL), the rows of the
    kind in it (a WHERE clause and its arguments), its run stamps' columns, and what the
    guard's message calls them (``entities``, or the rows of a typed table), and the column
    that holds the item as the API gave it (``data``, ``_raw``)."""

    table: str
    where: str
    args: tuple[Any, ...]
    run_seq: str
    first_seq: str
    what: str
    item: str


class StaleSql(Protocol):
    """A target's SQL for ``stale_deletion``, on one connection inside its transaction."""

    def _stale_counts(self, conn: Any, rows: StaleRows, run_seq: int, clean_seq: int
                      ) -> tuple[int, int, int]:
        """The rows written before this run, those a clean run confirmed (before
        ``clean_seq``, or at it), and the stale ones (their run stamp below ``run_seq``)."""
        ...

    def _stale_items(self, conn: Any, rows: StaleRows, run_seq: int
                     ) -> Iterable[tuple[str, Any]]:
        """(identifier, decoded item) of each stale row, read in batches."""
        ...

    def _delete_rows(self, conn: Any, rows: StaleRows, run_seq: int, chosen: list[str] | None
                     ) -> int:
        """Delete the stale rows (``chosen``: only those with these identifiers), each still
        stamped below ``run_seq`` when deleted; how many went."""
        ...


def stale_deletion(sql: StaleSql, conn: Any, rows: StaleRows | None, *, run_seq: int,
                   clean_seq: int, threshold: float, within: Within | None) -> Deletion:
    """``delete_stale``'s decision, the same on every SQL target: count, keep only the stale
    rows whose field falls ``within`` a sliced run's span, weigh them with the guard, delete
    (``rows`` None: a typed table not made yet, so nothing)."""
    existing = confirmed = stale = 0
    if rows:
        existing, confirmed, stale = sql._stale_counts(conn, rows, run_seq, clean_seq)
    chosen = None
    if rows and stale and within:
        chosen = [i for i, item in sql._stale_items(conn, rows, run_seq) if within.takes(item)]
        stale = len(chosen)
    refused = deletion_guard(stale, confirmed or existing, threshold,
                             what=rows.what if rows else "rows")
    if refused:
        return Deletion(refused=refused)
    return Deletion(deleted=sql._delete_rows(conn, rows, run_seq, chosen)
                    if rows and stale else 0)


def quote(name: str) -> str:
    """``name`` as a quoted SQL identifier (SQLite and PostgreSQL: ``"`` doubled)."""
    return '"' + name.replace('"', '""') + '"'


def check_table_name(name: str, *, reserved: Iterable[str] = (), prefix: str | None = None
                     ) -> None:
    """Refuse a table name that is not a plain identifier, or that is one of Sluice's own
    tables (``reserved``, compared ignoring case: SQLite ignores it, PostgreSQL folds the
    unquoted names Sluice's own tables are made with), or starts with ``prefix`` (a name the
    database keeps for itself)."""
    if not isinstance(name, str) or not TABLE_NAME.fullmatch(name):
        raise TargetRejected(f"typed table {name!r}: not a safe SQL identifier (letters, digits"
                             " and _, not starting with a digit)")
    if len(name) > MAX_NAME:
        raise TargetRejected(f"typed table {name!r}: longer than {MAX_NAME} characters")
    if name.lower() in {r.lower() for r in reserved}:
        raise TargetRejected(f"typed table {name!r}: the name of one of Sluice's own tables")
    if prefix and name.lower().startswith(prefix.lower()):
        raise TargetRejected(f"typed table {name!r}: names that start with {prefix} are the"
                             " database's own")


def check_table(table: Table, *, reserved: Iterable[str] = (), prefix: str | None = None
                ) -> None:
    """Refuse a table whose name, schema mode, property names or types are not safe."""
    check_table_name(table.name, reserved=reserved, prefix=prefix)
    if table.schema not in ("evolve", "freeze"):
        raise TargetRejected(f"typed table {table.name}: schema is {table.schema!r}, not"
                             ' "evolve" or "freeze"')
    seen = {c.lower(): c for c in (KEY, *FIXED)}
    for name, type_ in table.columns.items():
        where = f"typed table {table.name}, column {name!r}"
        if not isinstance(name, str) or not name:
            raise TargetRejected(f"{where}: a column needs a name")
        if bad_text(name, nul=True):
            raise TargetRejected(f"{where}: holds a NUL character or a lone surrogate")
        if len(name.encode("utf-8")) > MAX_NAME:
            raise TargetRejected(f"{where}: longer than {MAX_NAME} bytes")
        if name.lower() in seen:
            clash = seen[name.lower()]
            what = ("one of the columns every typed table has" if clash in (KEY, *FIXED)
                    else f"the same column as {clash!r} (names ignore case)")
            raise TargetRejected(f"{where}: {what}")
        if type_ not in COLUMN_TYPES:
            raise TargetRejected(f"{where}: type {type_!r} is not one of"
                                 f" {', '.join(COLUMN_TYPES)}")
        seen[name.lower()] = name


def property_columns(table: str, declared: Iterable[tuple[str, str]],
                     type_of: Callable[[str], ColumnType | None]) -> dict[str, ColumnType]:
    """A typed table's property columns from its (column, declared type) pairs; refuses a
    table that lacks the fixed columns (not one Sluice made) or has a type Sluice cannot map."""
    columns = dict(declared)
    lacking = [c for c in (KEY, *FIXED) if c not in columns]
    if lacking:
        raise TargetRejected(f"table {table} exists but is not a typed table of Sluice's"
                             f" (it lacks {', '.join(lacking)})")
    result: dict[str, ColumnType] = {}
    for name, declared_type in columns.items():
        if name in (KEY, *FIXED):
            continue
        type_ = type_of(declared_type)
        if type_ is None:
            raise TargetRejected(f"table {table}, column {name!r}: type {declared_type!r}"
                                 " is not one Sluice maps")
        result[name] = type_
    return result


def schema_changes(table: Table, have: dict[str, ColumnType]) -> list[str]:
    """The columns ``table`` has that the table as it is (``have``) lacks, in mapping order.
    Raises SchemaFrozen for those under ``freeze``, and TargetRejected for a column whose type
    the mapping changed (a column is added, never altered: migrating it is the operator's)."""
    changed = [f"{name} ({have[name]}, the mapping makes it {type_})"
               for name, type_ in table.columns.items() if name in have and have[name] != type_]
    if changed:
        raise ColumnTypeChanged(f"typed table {table.name}: the type of a column changed, which"
                             f" Sluice does not migrate: {'; '.join(changed)}")
    missing = [name for name in table.columns if name not in have]
    if missing and table.schema == "freeze":
        raise SchemaFrozen(f'typed table {table.name} has schema = "freeze" and lacks'
                           f" columns of the mapping: {', '.join(missing)}")
    return missing


def utc(value: datetime) -> datetime:
    """An aware datetime in UTC (a naive one is taken to be UTC already)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def iso(value: datetime) -> str:
    """ISO-8601 in UTC with microseconds (text that sorts as the instants do)."""
    if value.tzinfo is not UTC:  # most values are UTC already (an ISO time ending in Z)
        value = utc(value)
    # What isoformat(timespec="microseconds") gives, with Z, in half its time (it runs for
    # every timestamp of every row).
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (  # noqa: UP031
        value.year, value.month, value.day, value.hour, value.minute, value.second,
        value.microsecond)


def unstorable_text(row: Row, *, nul: bool, json: bool) -> str | None:
    """Why ``row`` cannot be stored, as far as its text and integers go: a lone surrogate (or,
    with ``nul``, a NUL) in the identifier or a value, anywhere in JSON values and the raw
    item too with ``json`` (else JSON is stored escaped); an integer no 64-bit column holds.
    Which column a value goes to is not known here: a str or int at the top of a json value is
    judged as text or an integer would be (this is asked of a rejected batch only)."""
    problem = bad_text(row["identifier"], nul=nul)
    if problem:
        return f"identifier {problem}"
    for name, value in row["values"].items():
        problem = None
        if isinstance(value, str) or (json and isinstance(value, dict | list)):
            problem = bad_text(value, nul=nul)
        elif isinstance(value, int) and not isinstance(value, bool) and not (
                INT64[0] <= value <= INT64[1]):
            problem = f"{value} does not fit in 64 bits"
        if problem:
            return f"{name}: {problem}"
    if json and (problem := bad_text(row["raw"], nul=nul)):
        return f"_raw: {problem}"
    return None


def ordered(columns: list[str], values: Iterable[Any],
            decode: Callable[[str, Any], Any]) -> dict[str, Any]:
    """One row read back: identifier, the properties in table order, then the fixed columns."""
    got = {c: decode(c, v) for c, v in zip(columns, values, strict=True)}
    rest = [c for c in columns if c != KEY and c not in FIXED]
    return {c: got[c] for c in (KEY, *rest, *FIXED) if c in got}
