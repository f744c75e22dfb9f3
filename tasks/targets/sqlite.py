"""SQLite target (the embedded default): WAL and a busy timeout so worker processes can write
at once; one transaction per batch."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from integrations import jsontext
from integrations.errors import TargetRejected, TargetUnavailable
from tasks.targets.base import (
    ColumnType,
    Deletion,
    Entity,
    Row,
    Table,
    Within,
    bad_text,
    move_guard,
)
from tasks.targets.typed import (
    FIXED,
    KEY,
    SeenColumns,
    StaleRows,
    check_table,
    check_table_name,
    iso,
    ordered,
    property_columns,
    quote,
    schema_changes,
    stale_deletion,
    unstorable_text,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS entities (
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    identifier TEXT NOT NULL,
    data TEXT NOT NULL,
    run_id TEXT NOT NULL,
    run_seq INTEGER NOT NULL DEFAULT 0,
    first_seq INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL,
    PRIMARY KEY (source, kind, identifier)
)
"""

# The last run of each kind that ended clean (tasks/targets/base.py: the guard's baseline).
STATE = """
CREATE TABLE IF NOT EXISTS sluice_state (
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    clean_seq INTEGER NOT NULL,
    PRIMARY KEY (source, kind)
)
"""

# The watermarks of incremental kinds: partition key -> newest cursor value (both JSON).
WATERMARKS = """
CREATE TABLE IF NOT EXISTS sluice_watermarks (
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    part TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (source, kind, part)
)
"""
SAVE_WATERMARK = """
INSERT INTO sluice_watermarks (source, kind, part, value) VALUES (?, ?, ?, ?)
ON CONFLICT (source, kind, part) DO UPDATE SET value = excluded.value
"""

# A row stamped by a newer run stays as it is (tasks/targets/base.py).
UPSERT = """
INSERT INTO entities (source, kind, identifier, data, run_id, run_seq, first_seq, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (source, kind, identifier) DO UPDATE SET
    data = excluded.data, run_id = excluded.run_id, run_seq = excluded.run_seq,
    updated_at = excluded.updated_at
WHERE excluded.run_seq >= entities.run_seq
"""

# Typed tables (tasks/targets/typed.py). The declared type is kept in PRAGMA table_info, so
# it names the Sluice type: BOOLEAN (0/1) and TIMESTAMP (ISO-8601 UTC text, never mistaken
# for a number) have NUMERIC affinity, harmless for what they hold; json is JSON TEXT, whose
# TEXT affinity keeps the JSON text 5 from becoming the integer 5.
DECLARED: dict[ColumnType, str] = {"text": "TEXT", "integer": "INTEGER", "number": "REAL",
                                   "boolean": "BOOLEAN", "timestamp": "TIMESTAMP",
                                   "json": "JSON TEXT"}
TYPE_OF: dict[str, ColumnType] = {v: k for k, v in DECLARED.items()} | {"JSON": "json"}
TYPED_SCHEMA = (f"{quote(KEY)} TEXT NOT NULL PRIMARY KEY, {{columns}}"
                f"{quote('_raw')} JSON TEXT NOT NULL, {quote('_synced_at')} TIMESTAMP NOT NULL,"
                f" {quote('_run_id')} TEXT NOT NULL, {quote('_run_seq')} INTEGER NOT NULL,"
                f" {quote('_first_seq')} INTEGER NOT NULL")
# Sluice's own tables, which no typed table may be (nor may a name SQLite keeps: sqlite_*).
# Secrets a source keeps (a rotated OAuth 2.0 refresh token), sealed: nothing in clear.
SECRETS = """
CREATE TABLE IF NOT EXISTS sluice_secrets (
    source TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (source, name)
)
"""

OWN_TABLES = ("entities", "sluice_state", "sluice_watermarks", "sluice_secrets")
OWN_SCHEMA = (SCHEMA, STATE, WATERMARKS, SECRETS)  # in OWN_TABLES' order
OWN_PREFIX = "sqlite_"


def typed_table(table: Table) -> str:
    """The CREATE statement of a mapped kind's table, with ``table.columns``."""
    columns = "".join(f"{quote(c)} {DECLARED[t]}, " for c, t in table.columns.items())
    return (f"CREATE TABLE IF NOT EXISTS {quote(table.name)}"
            f" ({TYPED_SCHEMA.format(columns=columns)})")


class SqliteTarget(SeenColumns):
    supports_delete = True
    thread_safe = False

    def __init__(self, path: str | Path, *, busy_timeout: float = 30.0) -> None:
        self.path = str(path)
        self.busy_timeout = busy_timeout
        self._seen = {}
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TargetRejected(f"sqlite {self.path}: cannot create its directory: {exc}") from exc
        with self._translated():
            # One connection per thread (thread_safe is False); check_same_thread is off only
            # so that the process can close every thread's connection when it shuts down.
            self._conn = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None,
                                         check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            for create in OWN_SCHEMA:
                self._conn.execute(create)
            columns = {row[1] for row in self._conn.execute("PRAGMA table_info(entities)")}
            for column in ("run_seq", "first_seq"):  # a database from before run stamps
                if column in columns:
                    continue
                try:
                    self._conn.execute(f"ALTER TABLE entities ADD COLUMN {column} INTEGER"
                                       " NOT NULL DEFAULT 0")
                except sqlite3.OperationalError as exc:  # another process added it first
                    if "duplicate column" not in str(exc):
                        raise

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:  # locked, busy, disk I/O: may pass
            raise TargetUnavailable(f"sqlite {self.path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise TargetRejected(f"sqlite {self.path}: {exc}") from exc
        except UnicodeEncodeError as exc:  # an identifier that is not valid UTF-8
            raise TargetRejected(f"sqlite {self.path}: {exc}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._translated():
            if self._conn.in_transaction:  # within holding(): a part of its transaction
                self._conn.execute("SAVEPOINT sluice")
                try:
                    yield self._conn
                except BaseException:
                    self._conn.execute("ROLLBACK TO sluice")
                    self._conn.execute("RELEASE sluice")
                    raise
                self._conn.execute("RELEASE sluice")
                return
            # The threads of this process take turns on a lock of their own first: one that
            # is let go wakes the next at once, where SQLite's busy handler sleeps up to
            # 100 ms a try. IMMEDIATE then takes the write lock up front (another process
            # may hold it): waiting happens in busy_timeout, not in a deadlock between two
            # readers that both want to write.
            writers = _writers(self.path)
            if not writers.acquire(timeout=self.busy_timeout):
                raise sqlite3.OperationalError("database is locked (by this process)")
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            finally:
                writers.release()

    def upsert(self, entities: list[Entity], *, run_id: str, run_seq: int) -> None:
        now = time.time()
        # jsontext.dumps escapes a lone surrogate (UTF-8 text cannot hold one), so any string
        # in the data can be stored.
        rows = [(e["source"], e["kind"], e["identifier"], jsontext.dumps(e["data"]), run_id,
                 run_seq, run_seq, now) for e in entities]
        with self._transaction() as conn:
            conn.executemany(UPSERT, rows)

    def unstorable(self, entity: Entity) -> str | None:
        return bad_text(entity["identifier"])

    # Webhook events (the Ordered protocol in tasks/targets/base.py).

    def _where(self, source: str, kind: str, table: str | None) -> tuple[str, str, tuple[str, ...]]:
        """(table as SQL, the stored item's column, the WHERE clause's leading arguments)."""
        if table is None:
            return "entities", "data", (source, kind)
        check_table_name(table, reserved=OWN_TABLES, prefix=OWN_PREFIX)
        return quote(table), quote("_raw"), ()

    @contextmanager
    def holding(self, source: str, kind: str, identifiers: list[str], *,
                table: str | None = None) -> Iterator[dict[str, Any]]:
        with self._transaction() as conn:  # the write lock: no other writer meanwhile
            name, column, args = self._where(source, kind, table)
            stored: dict[str, Any] = {}
            if table is None or self._columns(conn, table) is not None:
                scope = "source = ? AND kind = ? AND " if table is None else ""
                for part in _chunks(identifiers):
                    stored.update((i, json.loads(d)) for i, d in conn.execute(
                        f"SELECT identifier, {column} FROM {name} WHERE {scope}identifier IN"
                        f" ({', '.join('?' * len(part))})", (*args, *part)))
            yield stored

    def delete(self, source: str, kind: str, identifiers: list[str], *,
               table: str | None = None) -> int:
        name, _, args = self._where(source, kind, table)
        deleted = 0
        with self._transaction() as conn:
            if table is not None and self._columns(conn, table) is None:
                return 0
            scope = "source = ? AND kind = ? AND " if table is None else ""
            for part in _chunks(identifiers):
                deleted += conn.execute(
                    f"DELETE FROM {name} WHERE {scope}identifier IN"
                    f" ({', '.join('?' * len(part))})", (*args, *part)).rowcount
        return deleted

    def watermarks(self, source: str, kind: str) -> dict[str, str]:
        with self._translated():
            rows = self._conn.execute("SELECT part, value FROM sluice_watermarks WHERE source = ?"
                                      " AND kind = ?", (source, kind)).fetchall()
        return dict(rows)

    def save_watermarks(self, source: str, kind: str, marks: dict[str, str]) -> None:
        with self._transaction() as conn:
            conn.executemany(SAVE_WATERMARK, [(source, kind, k, v) for k, v in marks.items()])

    def secret(self, source: str, name: str) -> str | None:
        with self._translated():
            row = self._conn.execute("SELECT value FROM sluice_secrets WHERE source = ? AND"
                                     " name = ?", (source, name)).fetchone()
        return None if row is None else str(row[0])

    def keep_secret(self, source: str, name: str, value: str) -> None:
        with self._transaction() as conn:
            conn.execute("INSERT INTO sluice_secrets (source, name, value) VALUES (?, ?, ?)"
                         " ON CONFLICT (source, name) DO UPDATE SET value = excluded.value",
                         (source, name, value))

    def clear_watermarks(self, source: str, kind: str) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM sluice_watermarks WHERE source = ? AND kind = ?",
                         (source, kind))

    def delete_stale(self, source: str, kind: str, *, run_seq: int, threshold: float,
                     watermarks: dict[str, str] | None = None, within: Within | None = None
                     ) -> Deletion:
        rows = StaleRows("entities", "source = ? AND kind = ?", (source, kind), "run_seq",
                          "first_seq", "entities", "data")
        with self._transaction() as conn:
            return self._delete_stale(conn, rows, source, kind, run_seq=run_seq,
                                      threshold=threshold, watermarks=watermarks, within=within)

    def _delete_stale(self, conn: sqlite3.Connection, rows: StaleRows | None, source: str,
                      kind: str, *, run_seq: int, threshold: float,
                      watermarks: dict[str, str] | None, within: Within | None) -> Deletion:
        """``delete_stale`` of ``rows`` (None: a typed table not made yet, so none)."""
        conn.executemany(SAVE_WATERMARK,
                         [(source, kind, k, v) for k, v in (watermarks or {}).items()])
        row = conn.execute("SELECT clean_seq FROM sluice_state WHERE source = ? AND kind = ?",
                           (source, kind)).fetchone()
        done = stale_deletion(self, conn, rows, run_seq=run_seq, clean_seq=row[0] if row else 0,
                              threshold=threshold, within=within)
        if not done.refused:
            conn.execute("INSERT INTO sluice_state (source, kind, clean_seq) VALUES (?, ?, ?)"
                         " ON CONFLICT (source, kind) DO UPDATE SET"
                         " clean_seq = excluded.clean_seq", (source, kind, run_seq))
        return done

    def _stale_counts(self, conn: sqlite3.Connection, rows: StaleRows, run_seq: int,
                      clean_seq: int) -> tuple[int, int, int]:
        counted: tuple[int, int, int] = conn.execute(
            f"SELECT COALESCE(SUM({rows.first_seq} < ?), 0),"
            f" COALESCE(SUM({rows.first_seq} <= ?), 0),"
            f" COALESCE(SUM({rows.run_seq} < ?), 0) FROM {rows.table} WHERE {rows.where}",
            (run_seq, clean_seq, run_seq, *rows.args)).fetchone()
        return counted

    def _stale_items(self, conn: sqlite3.Connection, rows: StaleRows, run_seq: int
                     ) -> Iterator[tuple[str, Any]]:
        for ident, item in conn.execute(f"SELECT identifier, {rows.item} FROM {rows.table}"
                                        f" WHERE {rows.where} AND {rows.run_seq} < ?",
                                        (*rows.args, run_seq)):
            if item is not None:
                yield ident, json.loads(item)

    def _delete_rows(self, conn: sqlite3.Connection, rows: StaleRows, run_seq: int,
                     chosen: list[str] | None) -> int:
        delete = f"DELETE FROM {rows.table} WHERE {rows.where} AND {rows.run_seq} < ?"
        if chosen is None:
            return conn.execute(delete, (*rows.args, run_seq)).rowcount
        return sum(conn.execute(f"{delete} AND identifier IN ({', '.join('?' * len(some))})",
                                (*rows.args, run_seq, *some)).rowcount
                   for some in _chunks(chosen))

    def counts(self) -> list[tuple[str, str, int]]:
        with self._translated():
            return self._conn.execute("SELECT source, kind, COUNT(*) FROM entities"
                                      " GROUP BY source, kind ORDER BY source, kind").fetchall()

    def read(self, source: str, kind: str | None, *, limit: int) -> list[Entity]:
        with self._translated():
            rows = self._conn.execute(
                "SELECT identifier, kind, data FROM entities WHERE source = ?"
                " AND (? IS NULL OR kind = ?) ORDER BY kind, identifier LIMIT ?",
                (source, kind, kind, limit)).fetchall()
        return [{"identifier": i, "kind": k, "source": source, "data": json.loads(d)}
                for i, k, d in rows]

    # Typed tables (the Typed protocol in tasks/targets/base.py).

    def _declared(self, conn: sqlite3.Connection, table: str) -> list[tuple[str, str]]:
        """(column, declared type) of a table, in order; empty when there is no table."""
        rows: list[tuple[str, str]] = conn.execute(
            "SELECT name, upper(type) FROM pragma_table_info(?)", (table,)).fetchall()
        return rows

    def _columns(self, conn: sqlite3.Connection, table: str) -> dict[str, ColumnType] | None:
        declared = self._declared(conn, table)
        if not declared:
            return None
        self._seen[table] = columns = property_columns(table, declared, TYPE_OF.get)
        return columns

    def table_columns(self, table: str) -> dict[str, ColumnType] | None:
        check_table_name(table, reserved=OWN_TABLES, prefix=OWN_PREFIX)
        with self._translated():
            return self._columns(self._conn, table)

    def _evolve(self, conn: sqlite3.Connection, table: Table) -> None:
        """Make the table or add the columns it lacks (in the write transaction, which no other
        connection holds at the same time)."""
        have = self._columns(conn, table.name)
        if have is None:
            conn.execute(typed_table(table))
            return
        for column in schema_changes(table, have):
            try:
                conn.execute(f"ALTER TABLE {quote(table.name)} ADD COLUMN {quote(column)}"
                             f" {DECLARED[table.columns[column]]}")
            except sqlite3.OperationalError as exc:
                # The same name but for case (SQLite's names ignore it); no other process
                # adds columns meanwhile: this runs under the write lock.
                if "duplicate column" not in str(exc):
                    raise

    def upsert_rows(self, table: Table, rows: list[Row], *, run_id: str, run_seq: int) -> None:
        check_table(table, reserved=OWN_TABLES, prefix=OWN_PREFIX)
        names = [KEY, *table.columns, *FIXED]
        now = iso(datetime.now(UTC))
        stored = [(c, _STORED.get(t)) for c, t in table.columns.items()]
        try:
            params = [(r["identifier"], *_values(r["values"], stored),
                       jsontext.dumps(r["raw"]), now, run_id, run_seq, run_seq) for r in rows]
        except (TypeError, ValueError) as exc:  # a value json cannot write
            raise TargetRejected(f"sqlite {self.path}: typed table {table.name}: {exc}") from exc
        # A row stamped by a newer run stays as it is; _first_seq is set on insert only.
        updated = [c for c in names if c not in (KEY, "_first_seq")]
        sql = (f"INSERT INTO {quote(table.name)} ({', '.join(map(quote, names))})"
               f" VALUES ({', '.join('?' * len(names))}) ON CONFLICT ({quote(KEY)}) DO UPDATE SET"
               f" {', '.join(f'{quote(c)} = excluded.{quote(c)}' for c in updated)}"
               f" WHERE excluded.{quote('_run_seq')} >= {quote(table.name)}.{quote('_run_seq')}")
        # Columns are added, never dropped: a table seen with every column of this batch
        # needs no look under the write lock (which every writer waits for). A table an
        # operator dropped or altered meanwhile is looked at after all.
        seen = self._seen.get(table.name)
        known = seen is not None and all(seen.get(c) == t for c, t in table.columns.items())
        with self._forgetting(table.name), self._transaction() as conn:
            if not known:
                self._evolve(conn, table)
            try:
                try:
                    conn.executemany(sql, params)
                except sqlite3.OperationalError as exc:
                    gone = "no such table" in str(exc) or "has no column" in str(exc)
                    if not known or not gone:
                        raise
                    self._evolve(conn, table)
                    conn.executemany(sql, params)
            except OverflowError as exc:  # an integer past 64 bits
                raise TargetRejected(f"sqlite {self.path}: typed table {table.name}: {exc}"
                                     ) from exc

    def delete_stale_rows(self, table: str, source: str, kind: str, *, run_seq: int,
                          threshold: float, watermarks: dict[str, str] | None = None,
                          within: Within | None = None) -> Deletion:
        check_table_name(table, reserved=OWN_TABLES, prefix=OWN_PREFIX)
        with self._transaction() as conn:
            exists = self._columns(conn, table) is not None
            rows = StaleRows(quote(table), "1", (), quote("_run_seq"), quote("_first_seq"),
                              f"rows of {table}", quote("_raw"))
            return self._delete_stale(conn, rows if exists else None, source, kind,
                                      run_seq=run_seq, threshold=threshold,
                                      watermarks=watermarks, within=within)

    def delete_moved(self, table: str, source: str, kind: str, *, run_seq: int,
                     threshold: float, written_only: bool = False) -> Deletion:
        check_table_name(table, reserved=OWN_TABLES, prefix=OWN_PREFIX)
        with self._transaction() as conn:
            if written_only:
                if self._columns(conn, table) is None:
                    return Deletion()
                return Deletion(deleted=conn.execute(
                    "DELETE FROM entities WHERE source = ? AND kind = ? AND identifier IN"
                    f" (SELECT identifier FROM {quote(table)} WHERE {quote('_run_seq')} >= ?)",
                    (source, kind, run_seq)).rowcount)
            (held,) = conn.execute("SELECT COUNT(*) FROM entities WHERE source = ? AND kind = ?",
                                   (source, kind)).fetchone()
            if not held:
                return Deletion()
            written = 0
            if self._columns(conn, table) is not None:
                (written,) = conn.execute(f"SELECT COUNT(*) FROM {quote(table)} WHERE"
                                          f" {quote('_run_seq')} >= ?", (run_seq,)).fetchone()
            refused = move_guard(held, written, threshold, kind=kind, table=table)
            if refused:
                return Deletion(refused=refused)
            return Deletion(deleted=conn.execute(
                "DELETE FROM entities WHERE source = ? AND kind = ?", (source, kind)).rowcount)

    def table_counts(self) -> list[tuple[str, int]]:
        found = []
        with self._translated():
            names = [n for (n,) in self._conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
            for name in names:
                if name in OWN_TABLES or name.lower().startswith(OWN_PREFIX):
                    continue
                have = {c for c, _ in self._declared(self._conn, name)}
                if {KEY, *FIXED} <= have:  # a typed table of Sluice's
                    (count,) = self._conn.execute(f"SELECT COUNT(*) FROM {quote(name)}"
                                                  ).fetchone()
                    found.append((name, count))
        return found

    def unstorable_row(self, row: Row) -> str | None:
        """Text goes to SQLite as UTF-8 (a lone surrogate cannot); JSON is stored escaped."""
        return unstorable_text(row, nul=False, json=False)

    def read_rows(self, table: str, *, limit: int) -> list[dict[str, Any]]:
        check_table_name(table, reserved=OWN_TABLES, prefix=OWN_PREFIX)
        with self._translated():
            declared = self._declared(self._conn, table)
            if not declared:
                return []
            types = property_columns(table, declared, TYPE_OF.get)
            types.update({"_raw": "json", "_synced_at": "timestamp"})
            cursor = self._conn.execute(
                f"SELECT * FROM {quote(table)} ORDER BY {quote(KEY)} LIMIT ?", (limit,))
            columns = [d[0] for d in cursor.description]
            return [ordered(columns, values, lambda c, v: _loaded(types.get(c), v))
                    for values in cursor.fetchall()]

    def close(self) -> None:
        self._conn.close()


# How a property's value is stored, by its column's type (the others are stored as they are):
# jsontext.dumps escapes a lone surrogate, so any string can be stored.
_STORED: dict[ColumnType, Callable[[Any], Any]] = {
    "json": jsontext.dumps, "timestamp": lambda v: iso(v) if isinstance(v, datetime) else v}


_WRITERS: dict[str, threading.Lock] = {}
_WRITERS_LOCK = threading.Lock()
os.register_at_fork(after_in_child=_WRITERS.clear)  # a forked child holds none of them


def _writers(path: str) -> threading.Lock:
    """The lock this process's connections to ``path`` take turns on to write."""
    with _WRITERS_LOCK:
        return _WRITERS.setdefault(os.path.realpath(path), threading.Lock())


def _chunks(identifiers: list[str], size: int = 500) -> Iterator[list[str]]:
    """Identifiers a few hundred at a time (SQLite binds at most 32,766 parameters)."""
    for start in range(0, len(identifiers), size):
        yield identifiers[start:start + size]


def _values(values: dict[str, Any], stored: list[tuple[str, Callable[[Any], Any] | None]]
            ) -> list[Any]:
    """A row's property values as SQLite stores them, in column order."""
    out = []
    for column, store in stored:
        value = values.get(column)
        out.append(value if store is None or value is None else store(value))
    return out


def _loaded(type_: ColumnType | None, value: Any) -> Any:
    """A stored value read back as its column's Python type."""
    if value is None or type_ is None:
        return value
    if type_ == "json":
        return json.loads(value)
    if type_ == "timestamp" and isinstance(value, str):
        return datetime.fromisoformat(value)
    if type_ == "boolean":
        return bool(value)
    return value
