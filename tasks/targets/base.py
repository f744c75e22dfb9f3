"""The Target protocol: where entities land, idempotently.

An entity is ``{"identifier", "kind", "source", "data"}``; (source, kind, identifier) is its key.
``upsert`` writes one batch in one transaction (a redelivered batch writes the same rows again)
and stamps each row with the sequence number of the run that saw it (``run_seq``, which only
grows), and with the run that created it (``first_seq``). A row is only ever overwritten by a
run at least as new as its stamp, so the late write of an older run (a retry of a run that was
declared stalled) never hides what a newer run saw; ``delete_stale`` deletes the rows stamped
older than the finishing run, and the guard weighs them against the rows a clean run confirmed:
those created no later than the last run of the kind that ended clean (kept in a small state
table, written in the deletion's transaction), or, before any clean run, all that existed
before this one. Rows that runs since created do not dilute the share: an API that answers
with new ids for everything cannot wipe the old ones, in one run or over several. Errors are
translated into the tree: TargetUnavailable (retry) or TargetRejected; a batch rejected
because of some of its values is written again without the items ``unstorable`` names.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypedDict, runtime_checkable

from integrations.errors import TargetRejected
from integrations.jsonpath import dig
from integrations.mapping import COLUMN_TYPES, ColumnType

__all__ = ["COLUMN_TYPES", "ColumnType"]  # and the rest, as defined here


class Entity(TypedDict):
    identifier: str
    kind: str
    source: str
    data: Any


# The types a property's column may have (a mapping gives one, or it is inferred):
# ColumnType and COLUMN_TYPES, from integrations.mapping.


@dataclass(frozen=True)
class Table:
    """A kind's typed table (a kind with a mapping). Besides ``columns`` every such table has
    ``identifier`` (the primary key), ``_raw`` (the API item: JSONB in PostgreSQL, JSON text in
    SQLite), ``_synced_at``, and the run bookkeeping stale deletion needs (``_run_id``,
    ``_run_seq``, ``_first_seq``), with the same meaning as in ``entities``."""

    name: str
    columns: dict[str, ColumnType]  # property -> its column's type, in mapping order
    schema: Literal["evolve", "freeze"] = "evolve"


class Row(TypedDict):
    """One mapped item: its identifier, its property values already of their column's Python
    type (str, int, float, bool, an aware ``datetime`` for a timestamp, JSON-able for json;
    None for a missing value), and the API item."""

    identifier: str
    values: dict[str, Any]
    raw: Any


class SchemaFrozen(TargetRejected):
    """A table with ``schema = "freeze"`` lacks columns the mapping has."""


class ColumnTypeChanged(TargetRejected):
    """A batch's rows give a column another type than the table has (a column whose type is
    inferred, created meanwhile by another batch from other values)."""


@runtime_checkable
class Typed(Protocol):
    """Targets that land mapped kinds in tables of their own (SQLite, PostgreSQL)."""

    def table_columns(self, table: str) -> dict[str, ColumnType] | None:
        """A table's property columns and their types as they are now (None: no table yet)."""
        ...

    def known_columns(self, table: str) -> dict[str, ColumnType] | None:
        """``table_columns`` as this target last read them, without a query: every column
        in it exists (columns are never dropped), but others may have been added since."""
        ...

    def upsert_rows(self, table: Table, rows: list[Row], *, run_id: str, run_seq: int) -> None:
        """Create the table, or add the columns it lacks (safe when workers race; with
        ``freeze``, SchemaFrozen names them instead), then upsert the rows in one transaction;
        a row stamped by a newer run stays as it is."""
        ...

    def delete_stale_rows(self, table: str, source: str, kind: str, *, run_seq: int,
                          threshold: float, watermarks: dict[str, str] | None = None,
                          within: Within | None = None) -> Deletion:
        """``delete_stale`` for a typed table (the guard's baseline in the same state table,
        by source and kind)."""
        ...

    def unstorable_row(self, row: Row) -> str | None:
        """Why this target cannot store the row (asked only of a rejected batch)."""
        ...

    def read_rows(self, table: str, *, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` rows of a typed table, by identifier (``sluice entities``)."""
        ...

    def table_counts(self) -> list[tuple[str, int]]:
        """(table, number of rows) of every typed table in the database (those with the
        columns Sluice gives one), by name (``sluice entities``)."""
        ...

    def delete_moved(self, table: str, source: str, kind: str, *, run_seq: int,
                     threshold: float, written_only: bool = False) -> Deletion:
        """A kind that has a mapping now: delete its rows left in ``entities`` (from before
        the mapping) in one transaction, once run ``run_seq`` read everything and wrote the
        kind into ``table``; ``move_guard`` weighs them against the rows of ``table`` that
        run wrote, and refuses when too few landed there. ``written_only`` (a sliced run,
        which read only its windows): only the rows whose identifier that run wrote into
        ``table`` go, without a guard (each is in the table); the others stay."""
        ...


@runtime_checkable
class Ordered(Protocol):
    """Targets that apply webhook events in order and delete by identifier (SQLite,
    PostgreSQL). ``table``: the kind's typed table (None: the kind lands in ``entities``)."""

    def holding(self, source: str, kind: str, identifiers: list[str], *,
                table: str | None = None) -> AbstractContextManager[dict[str, Any]]:
        """One transaction in which no other batch of events of (source, kind) writes; it
        yields the stored item (``data``, or ``_raw``) of each identifier the target holds.
        ``upsert``, ``upsert_rows`` and ``delete`` called within take part in it."""
        ...

    def delete(self, source: str, kind: str, identifiers: list[str], *,
               table: str | None = None) -> int:
        """Delete these identifiers of (source, kind); returns how many rows were deleted."""
        ...


@dataclass(frozen=True)
class Within:
    """What a sliced run read: a stale row is deleted only when the item's ``field`` (a dot
    path, as the API gave the item) ``holds`` (falls in the run's windows); the rows it did
    not ask for, and those without the field, stay."""

    field: str
    holds: Callable[[Any], bool]

    def takes(self, item: Any) -> bool:
        """Whether the stored item falls in the windows: its field is found as
        ``incremental.cursor_path`` finds it (``dig``: a key that holds dots, a list index),
        in Python, so that both targets read it alike and no key is spelled into SQL."""
        return self.holds(dig(item, self.field))


@dataclass(frozen=True)
class Deletion:
    """What ``delete_stale`` did: rows deleted, or why it refused (``refused`` is then set)."""

    deleted: int = 0
    refused: str | None = None


class Target(Protocol):
    supports_delete: bool
    # True: one instance serves every thread of a process (else one per thread, as SQLite
    # and psycopg connections must not be shared between threads).
    thread_safe: bool

    def upsert(self, entities: list[Entity], *, run_id: str, run_seq: int) -> None:
        """Insert or update every entity in one transaction; a row stamped by a newer run
        than ``run_seq`` is left as it is."""
        ...

    def delete_stale(self, source: str, kind: str, *, run_seq: int, threshold: float,
                     watermarks: dict[str, str] | None = None, within: Within | None = None
                     ) -> Deletion:
        """Delete entities of (source, kind) stamped before ``run_seq`` (and ``within`` the
        run's windows, when given), within the guard; ``watermarks`` are saved in the same
        transaction (``Stateful``), deleted or not."""
        ...

    def unstorable(self, entity: Entity) -> str | None:
        """Why this target cannot store the entity, or None (asked only of a rejected batch)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Stateful(Protocol):
    """Targets that keep the watermarks of incremental kinds beside the data (a small state
    table), so that losing Redis loses none of them."""

    def watermarks(self, source: str, kind: str) -> dict[str, str]:
        """Partition key (JSON) -> the newest cursor value a clean run saw (JSON)."""
        ...

    def save_watermarks(self, source: str, kind: str, marks: dict[str, str]) -> None:
        """Set these watermarks (others of the kind are kept), in one transaction."""
        ...

    def clear_watermarks(self, source: str, kind: str) -> None:
        """Forget every watermark of the kind (they belong to a mapping it no longer has)."""
        ...


@runtime_checkable
class Vault(Protocol):
    """Targets that keep a source's secrets beside the data (a rotated OAuth 2.0 refresh
    token must outlive Redis and every worker). Values come sealed; the target stores text."""

    def secret(self, source: str, name: str) -> str | None:
        """The value kept under (source, name), or None."""
        ...

    def keep_secret(self, source: str, name: str, value: str) -> None:
        """Keep ``value`` under (source, name), replacing what was there, in one transaction."""
        ...


@runtime_checkable
class Readable(Protocol):
    """Targets that can show what they hold (``sluice entities``)."""

    def counts(self) -> list[tuple[str, str, int]]:
        """(source, kind, number of entities), sorted."""
        ...

    def read(self, source: str, kind: str | None, *, limit: int) -> list[Entity]:
        """Up to ``limit`` entities of a source (and kind), ordered by kind and identifier."""
        ...


def deletion_guard(stale: int, existing: int, threshold: float, *,
                   what: str = "entities") -> str | None:
    """Why deleting ``stale`` of ``existing`` entities (or ``what``: the rows of a typed table)
    is refused, or None when it is allowed: a share of ``threshold`` or more is refused (the
    boundary too); 1 turns the guard off."""
    if stale == 0 or threshold >= 1:
        return None
    share = stale / existing if existing else float("inf")
    if share >= threshold:
        return (f"refused to delete {stale} of {existing} {what} ({share:.1%}): "
                f"delete_threshold is {threshold:.0%}")
    return None


def move_guard(held: int, written: int, threshold: float, *, kind: str,
               table: str) -> str | None:
    """Why deleting the ``held`` rows of ``kind`` left in ``entities`` is refused when the run
    that read everything wrote ``written`` rows into ``table``, or None when it is allowed.
    Moving a kind is not stale deletion, but an API that answered with little must not wipe
    what it used to give all the same: the rows ``table`` lacks against ``entities`` weigh as
    stale ones would (``deletion_guard``'s threshold; 1 turns it off). More rows in the table
    (``items_to_parse``) is fine."""
    missing = max(0, held - written)
    if not deletion_guard(missing, held, threshold):
        return None
    return (f"refused to delete the {held} rows of {kind} left in entities from before its"
            f" mapping: this run wrote {written} rows into {table}, {missing / held:.1%} fewer"
            f" (delete_threshold is {threshold:.0%}); the next run reads everything again")


def bad_text(node: Any, *, nul: bool = False) -> str | None:
    """The first string (or key) in JSON-like ``node`` that cannot be stored as UTF-8 text
    (a lone surrogate), or, with ``nul``, that holds a NUL character; None if there is none."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                return f"{item[max(0, exc.start - 10):exc.end + 10]!r} holds a lone surrogate"
            if nul and "\x00" in item:
                return f"{item[:40]!r} holds a NUL character"
    return None
