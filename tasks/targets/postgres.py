"""PostgreSQL target (the ``postgres`` extra, psycopg 3): ``INSERT ... ON CONFLICT`` per batch
in one transaction."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
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
from tasks.targets.pgschema import ASK_A_DBA, TYPE_OF, add_columns, own_tables, typed_table
from tasks.targets.typed import (
    FIXED,
    KEY,
    SeenColumns,
    StaleRows,
    check_table,
    check_table_name,
    ordered,
    property_columns,
    quote,
    schema_changes,
    stale_deletion,
    unstorable_text,
    utc,
)

try:
    import psycopg
except ImportError:  # pragma: no cover - depends on the extra being installed
    psycopg = None  # type: ignore[assignment]  # optional: the postgres extra


def q(name: str) -> str:
    """A quoted identifier for a query psycopg reads placeholders in (``%`` doubled): every
    query that holds one is run with parameters, even none, so that psycopg undoubles it."""
    return quote(name).replace("%", "%%")


class PostgresTarget(SeenColumns):
    supports_delete = True
    thread_safe = False

    def __init__(self, dsn: str, *, table: str = "sluice_entities") -> None:
        if psycopg is None:
            raise TargetRejected("the postgres target needs psycopg: pip install 'psycopg[binary]'"
                                 " (in a source checkout: pip install -e '.[postgres]')")
        self.dsn = dsn
        self.table = table  # validated as an identifier by the config model
        self._conn: Any = None
        self._seen = {}

    def _connect(self) -> Any:
        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(self.dsn, connect_timeout=10)
            try:
                with conn.transaction():
                    for name in (self.table, f"{self.table}_state"):
                        self._ensure(conn, name)
                    self._add_run_seq(conn)
            except BaseException:
                conn.close()  # the next call checks again, on a new connection
                raise
            self._conn = conn
        return self._conn

    def _ensure(self, conn: Any, name: str) -> None:
        """Make one of Sluice's own tables (``pgschema.own_tables``) when it is missing. Only
        what is missing is created: a role that may write rows but not create tables (a DBA
        made them) never tries; when one is missing, the error names it."""
        if conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0]:
            return
        # CREATE TABLE IF NOT EXISTS races when worker processes start together (a unique
        # violation in pg_type): one at a time, under an advisory lock.
        self._lock(conn, self.table)
        with _needs_right(f"table {name} does not exist and this role may not create it",
                          ASK_A_DBA):
            conn.execute(own_tables(self.table)[name])

    def _add_run_seq(self, conn: Any) -> None:
        """A table from before run stamps gets its ``run_seq`` and ``first_seq`` columns.
        Its columns are read where an unquoted name finds the table (in whichever schema of
        the search path, in whatever case it is written): a role that may not alter it must
        not find them missing."""
        have = {c for (c,) in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0"
            " AND NOT attisdropped", (self.table,)).fetchall()}
        for column in ("run_seq", "first_seq"):
            if column not in have:
                self._lock(conn, self.table)
                conn.execute(f"ALTER TABLE {self.table} ADD COLUMN IF NOT EXISTS"
                             f" {column} bigint NOT NULL DEFAULT 0")

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        try:
            conn = self._connect()
            with conn.transaction():
                yield conn
        except psycopg.OperationalError as exc:  # server down, connection lost: may pass
            self.close()
            raise TargetUnavailable(f"postgres: {exc}".strip()) from exc
        except psycopg.Error as exc:
            raise TargetRejected(f"postgres: {exc}".strip()) from exc
        except UnicodeEncodeError as exc:  # text that is not valid UTF-8 (a lone surrogate)
            raise TargetRejected(f"postgres: {exc}") from exc

    def upsert(self, entities: list[Entity], *, run_id: str, run_seq: int) -> None:
        """COPY the batch into a staging table of the session, then one INSERT … ON CONFLICT
        from it: a round trip for the rows, not one per row (``executemany``)."""
        with self._transaction() as conn, conn.cursor() as cur:
            stage = self._stage(cur)
            with cur.copy(f"COPY {stage} (source, kind, identifier, data) FROM STDIN") as copy:
                for e in entities:
                    copy.write_row((e["source"], e["kind"], e["identifier"],
                                    jsontext.dumps(e["data"])))
            # A row stamped by a newer run stays as it is (tasks/targets/base.py).
            cur.execute(
                f"INSERT INTO {self.table} (source, kind, identifier, data, run_id, run_seq,"
                f" first_seq) SELECT source, kind, identifier, data::jsonb, %s, %s, %s"
                f" FROM {stage} ON CONFLICT (source, kind, identifier)"
                " DO UPDATE SET data = EXCLUDED.data, run_id = EXCLUDED.run_id,"
                " run_seq = EXCLUDED.run_seq, updated_at = now()"
                f" WHERE {self.table}.run_seq <= EXCLUDED.run_seq", (run_id, run_seq, run_seq))

    def _stage(self, cur: Any) -> str:
        """The session's staging table for ``upsert`` (emptied at every commit)."""
        _temp_table(cur, "CREATE TEMP TABLE IF NOT EXISTS sluice_stage (source text, kind text,"
                         " identifier text, data text) ON COMMIT DELETE ROWS")
        return "sluice_stage"

    # Webhook events (the Ordered protocol in tasks/targets/base.py).

    def _where(self, source: str, kind: str, table: str | None) -> tuple[str, str, str,
                                                                       tuple[str, ...]]:
        """(table as SQL, the stored item's column, the rows of the kind, its arguments)."""
        if table is None:
            return self.table, "data", "source = %s AND kind = %s AND ", (source, kind)
        check_table_name(table, reserved=self._own_tables())
        return q(table), q("_raw"), "", ()

    @contextmanager
    def holding(self, source: str, kind: str, identifiers: list[str], *,
                table: str | None = None) -> Iterator[dict[str, Any]]:
        with self._transaction() as conn:
            # One batch of events of a kind at a time, until the transaction ends: two workers
            # with versions of one item cannot both find the older stored.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                         (f"sluice:events:{source}:{kind}",))
            name, column, scope, args = self._where(source, kind, table)
            stored: dict[str, Any] = {}
            if table is None or self._columns(conn, table) is not None:
                stored.update(conn.execute(
                    f"SELECT identifier, {column} FROM {name} WHERE {scope}"
                    "identifier = ANY(%s)", (*args, identifiers)).fetchall())
            yield stored

    def delete(self, source: str, kind: str, identifiers: list[str], *,
               table: str | None = None) -> int:
        name, _, scope, args = self._where(source, kind, table)
        with self._transaction() as conn:
            if table is not None and self._columns(conn, table) is None:
                return 0
            deleted: int = conn.execute(f"DELETE FROM {name} WHERE {scope}identifier = ANY(%s)",
                                        (*args, identifiers)).rowcount
        return deleted

    def unstorable(self, entity: Entity) -> str | None:
        """PostgreSQL text and jsonb hold neither NUL characters nor lone surrogates."""
        return bad_text(entity["identifier"], nul=True) or bad_text(entity["data"], nul=True)

    def _watermarks_table(self, conn: Any, *, create: bool) -> bool:
        """Whether ``{table}_watermarks`` exists; with ``create``, it does after this. Made on
        first use only: a role that may write rows but not create tables keeps working for
        every kind that is not incremental."""
        name = f"{self.table}_watermarks"
        if create:
            self._ensure(conn, name)
            return True
        return bool(conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0])

    def _save_watermarks(self, conn: Any, source: str, kind: str, marks: dict[str, str]
                         ) -> None:
        if marks and self._watermarks_table(conn, create=True):
            conn.cursor().executemany(
                f"INSERT INTO {self.table}_watermarks (source, kind, part, value)"
                " VALUES (%s, %s, %s, %s::jsonb) ON CONFLICT (source, kind, part)"
                " DO UPDATE SET value = EXCLUDED.value",
                [(source, kind, k, v) for k, v in marks.items()])

    def watermarks(self, source: str, kind: str) -> dict[str, str]:
        with self._transaction() as conn:
            if not self._watermarks_table(conn, create=False):
                return {}
            rows = conn.execute(f"SELECT part, value::text FROM {self.table}_watermarks"
                                " WHERE source = %s AND kind = %s", (source, kind)).fetchall()
        return {part: value for part, value in rows}

    def save_watermarks(self, source: str, kind: str, marks: dict[str, str]) -> None:
        with self._transaction() as conn:
            self._save_watermarks(conn, source, kind, marks)

    def secret(self, source: str, name: str) -> str | None:
        with self._transaction() as conn:
            if not conn.execute("SELECT to_regclass(%s)",
                                (f"{self.table}_secrets",)).fetchone()[0]:
                return None
            row = conn.execute(f"SELECT value FROM {self.table}_secrets WHERE source = %s"
                               " AND name = %s", (source, name)).fetchone()
        return None if row is None else str(row[0])

    def keep_secret(self, source: str, name: str, value: str) -> None:
        with self._transaction() as conn:
            self._ensure(conn, f"{self.table}_secrets")
            conn.execute(f"INSERT INTO {self.table}_secrets (source, name, value) VALUES"
                         " (%s, %s, %s) ON CONFLICT (source, name) DO UPDATE SET value ="
                         " EXCLUDED.value", (source, name, value))

    def clear_watermarks(self, source: str, kind: str) -> None:
        with self._transaction() as conn:
            if self._watermarks_table(conn, create=False):
                conn.execute(f"DELETE FROM {self.table}_watermarks WHERE source = %s"
                             " AND kind = %s", (source, kind))

    def delete_stale(self, source: str, kind: str, *, run_seq: int, threshold: float,
                     watermarks: dict[str, str] | None = None, within: Within | None = None
                     ) -> Deletion:
        rows = StaleRows(self.table, "source = %s AND kind = %s", (source, kind), "run_seq",
                          "first_seq", "entities", "data")
        with self._transaction() as conn:
            return self._delete_stale(conn, rows, source, kind, run_seq=run_seq,
                                      threshold=threshold, watermarks=watermarks, within=within)

    def _delete_stale(self, conn: Any, rows: StaleRows | None, source: str, kind: str, *,
                      run_seq: int, threshold: float, watermarks: dict[str, str] | None,
                      within: Within | None) -> Deletion:
        """``delete_stale`` of ``rows`` (None: a typed table not made yet, so none)."""
        self._save_watermarks(conn, source, kind, watermarks or {})
        row = conn.execute(f"SELECT clean_seq FROM {self.table}_state WHERE source = %s"
                           " AND kind = %s", (source, kind)).fetchone()
        done = stale_deletion(self, conn, rows, run_seq=run_seq, clean_seq=row[0] if row else 0,
                              threshold=threshold, within=within)
        if not done.refused:
            conn.execute(f"INSERT INTO {self.table}_state (source, kind, clean_seq)"
                         " VALUES (%s, %s, %s) ON CONFLICT (source, kind)"
                         " DO UPDATE SET clean_seq = EXCLUDED.clean_seq",
                         (source, kind, run_seq))
        return done

    def _stale_counts(self, conn: Any, rows: StaleRows, run_seq: int, clean_seq: int
                      ) -> tuple[int, int, int]:
        counted: tuple[int, int, int] = conn.execute(
            f"SELECT count(*) FILTER (WHERE {rows.first_seq} < %s),"
            f" count(*) FILTER (WHERE {rows.first_seq} <= %s),"
            f" count(*) FILTER (WHERE {rows.run_seq} < %s) FROM {rows.table}"
            f" WHERE {rows.where}", (run_seq, clean_seq, run_seq, *rows.args)).fetchone()
        return counted

    def _stale_items(self, conn: Any, rows: StaleRows, run_seq: int
                     ) -> Iterator[tuple[str, Any]]:
        # A server-side cursor: the stale items come in batches, not all at once.
        with conn.cursor(name="sluice_within") as cur:
            cur.execute(f"SELECT identifier, {rows.item} FROM {rows.table}"
                        f" WHERE {rows.where} AND {rows.run_seq} < %s", (*rows.args, run_seq))
            yield from cur

    def _delete_rows(self, conn: Any, rows: StaleRows, run_seq: int, chosen: list[str] | None
                     ) -> int:
        some = "" if chosen is None else " AND identifier = ANY(%s)"
        deleted: int = conn.execute(
            f"DELETE FROM {rows.table} WHERE {rows.where} AND {rows.run_seq} < %s{some}",
            (*rows.args, run_seq, *([] if chosen is None else [chosen]))).rowcount
        return deleted

    def counts(self) -> list[tuple[str, str, int]]:
        with self._transaction() as conn:
            rows: list[tuple[str, str, int]] = conn.execute(
                f"SELECT source, kind, count(*) FROM {self.table}"
                " GROUP BY source, kind ORDER BY source, kind").fetchall()
            return rows

    def read(self, source: str, kind: str | None, *, limit: int) -> list[Entity]:
        with self._transaction() as conn:
            rows = conn.execute(
                f"SELECT identifier, kind, data FROM {self.table} WHERE source = %s"
                " AND (%s::text IS NULL OR kind = %s) ORDER BY kind, identifier LIMIT %s",
                (source, kind, kind, limit)).fetchall()
        return [{"identifier": i, "kind": k, "source": source, "data": d} for i, k, d in rows]

    # Typed tables (the Typed protocol in tasks/targets/base.py).

    def _own_tables(self) -> tuple[str, ...]:
        return tuple(own_tables(self.table))

    def _declared(self, conn: Any, table: str) -> list[tuple[str, str]]:
        """(column, type) of a table as the unquoted name in a query finds it (the search
        path), in order; empty when there is no table."""
        rows: list[tuple[str, str]] = conn.execute(
            "SELECT attname, format_type(atttypid, NULL) FROM pg_attribute"
            " WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped"
            " ORDER BY attnum", (quote(table),)).fetchall()
        return rows

    def _columns(self, conn: Any, table: str) -> dict[str, ColumnType] | None:
        declared = self._declared(conn, table)
        if not declared:
            return None
        self._seen[table] = columns = property_columns(table, declared, TYPE_OF.get)
        return columns

    def table_columns(self, table: str) -> dict[str, ColumnType] | None:
        check_table_name(table, reserved=self._own_tables())
        with self._transaction() as conn:
            return self._columns(conn, table)

    def _lock(self, conn: Any, table: str) -> None:
        """Creating and altering tables races when workers start together (a unique violation
        in pg_type, a column added twice): one at a time, until the transaction ends."""
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"sluice:{table}",))

    def _evolve(self, conn: Any, table: Table) -> None:
        """Make the table or add the columns it lacks (``pgschema``). Only what is missing is
        created or altered (a role that may write rows but not create tables keeps working),
        and what is missing is looked at again under the lock: another worker may have made
        it. The columns this target read last stand for the table's while they lack nothing
        (no catalog query per batch): a write that fails forgets them (``_forgetting``), so
        the retry reads the table again."""
        seen = self._seen.get(table.name)
        if seen is not None and not schema_changes(table, seen):
            return
        have = self._columns(conn, table.name)
        if have is None:
            self._lock(conn, table.name)
            with _needs_right(f"typed table {table.name} does not exist and this role may not"
                              " create it", ASK_A_DBA):
                conn.execute(typed_table(table))
            have = self._columns(conn, table.name) or {}
        if not schema_changes(table, have):
            return
        self._lock(conn, table.name)
        missing = schema_changes(table, have=self._columns(conn, table.name) or {})
        if missing:
            alter = add_columns(table, missing)
            with _needs_right(f"typed table {table.name} lacks columns {', '.join(missing)} and"
                              " this role may not add them (only its owner may)",
                              f"have its owner run: {' '.join(alter.split())}"):
                conn.execute(alter)

    def upsert_rows(self, table: Table, rows: list[Row], *, run_id: str, run_seq: int) -> None:
        """COPY the batch into a staging table shaped like the typed table, then one
        INSERT … ON CONFLICT from it, as ``upsert`` does for ``entities``."""
        check_table(table, reserved=self._own_tables())
        names = [KEY, *table.columns, *FIXED]  # FIXED: _raw, _synced_at, _run_id, ...
        copied = [c for c in names if c != "_synced_at"]  # now(), the staging default
        # A row stamped by a newer run stays as it is; _first_seq is set on insert only.
        updated = [c for c in names if c not in (KEY, "_first_seq")]
        with self._forgetting(table.name), self._transaction() as conn, conn.cursor() as cur:
            self._evolve(conn, table)
            if not rows:
                return
            stage = self._typed_stage(cur, table)
            # quote(), not q(): COPY takes no parameters, so a % stays as it is written.
            # A value as COPY writes it into its column: most as they are, json and timestamp
            # ones converted (None stays None: NULL).
            columns = [(c, _ELEMENT.get(t)) for c, t in table.columns.items()]
            with cur.copy(f"COPY {stage} ({', '.join(map(quote, copied))}) FROM STDIN"
                          ) as copy:
                for r in rows:
                    values = r["values"]
                    copy.write_row((r["identifier"],
                                    *[values.get(c) if convert is None else convert(values.get(c))
                                      for c, convert in columns],
                                    jsontext.dumps(r["raw"]), run_id, run_seq, run_seq))
            cur.execute(f"INSERT INTO {q(table.name)} ({', '.join(map(q, names))})"
                        f" SELECT {', '.join(map(q, names))} FROM {stage}"
                        f" ON CONFLICT ({q(KEY)}) DO UPDATE SET"
                        f" {', '.join(f'{q(c)} = EXCLUDED.{q(c)}' for c in updated)}"
                        f" WHERE {q(table.name)}.{q('_run_seq')} <= EXCLUDED.{q('_run_seq')}",
                        ())

    def _typed_stage(self, cur: Any, table: Table) -> str:
        """The session's staging table for ``table`` with these columns (its name changes
        with them: a table that gained a column gets a new one); emptied at every commit."""
        shape = hashlib.sha1(f"{table.name}\0{sorted(table.columns.items())}".encode())
        stage = f"sluice_stage_{shape.hexdigest()[:16]}"
        _temp_table(cur, f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {quote(table.name)}"
                         " INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
        return stage

    def delete_stale_rows(self, table: str, source: str, kind: str, *, run_seq: int,
                          threshold: float, watermarks: dict[str, str] | None = None,
                          within: Within | None = None) -> Deletion:
        check_table_name(table, reserved=self._own_tables())
        with self._transaction() as conn:
            exists = self._columns(conn, table) is not None
            rows = StaleRows(q(table), "TRUE", (), q("_run_seq"), q("_first_seq"),
                              f"rows of {table}", q("_raw"))
            return self._delete_stale(conn, rows if exists else None, source, kind,
                                      run_seq=run_seq, threshold=threshold,
                                      watermarks=watermarks, within=within)

    def delete_moved(self, table: str, source: str, kind: str, *, run_seq: int,
                     threshold: float, written_only: bool = False) -> Deletion:
        check_table_name(table, reserved=self._own_tables())
        with self._transaction() as conn:
            if written_only:
                if self._columns(conn, table) is None:
                    return Deletion()
                gone: int = conn.execute(
                    f"DELETE FROM {self.table} WHERE source = %s AND kind = %s AND identifier"
                    f" IN (SELECT identifier FROM {q(table)} WHERE {q('_run_seq')} >= %s)",
                    (source, kind, run_seq)).rowcount
                return Deletion(deleted=gone)
            (held,) = conn.execute(f"SELECT count(*) FROM {self.table} WHERE source = %s"
                                   " AND kind = %s", (source, kind)).fetchone()
            if not held:
                return Deletion()
            written = 0
            if self._columns(conn, table) is not None:
                (written,) = conn.execute(f"SELECT count(*) FROM {q(table)} WHERE"
                                          f" {q('_run_seq')} >= %s", (run_seq,)).fetchone()
            refused = move_guard(held, written, threshold, kind=kind, table=table)
            if refused:
                return Deletion(refused=refused)
            deleted: int = conn.execute(f"DELETE FROM {self.table} WHERE source = %s"
                                        " AND kind = %s", (source, kind)).rowcount
            return Deletion(deleted=deleted)

    def table_counts(self) -> list[tuple[str, int]]:
        own = {t.lower() for t in self._own_tables()}
        with self._transaction() as conn:
            # The tables of the schema an unquoted name finds (as _declared does) that have
            # every column Sluice gives a typed table.
            names = [n for (n,) in conn.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid"
                " WHERE c.relkind IN ('r', 'p') AND c.relnamespace = current_schema()::regnamespace"
                " AND a.attnum > 0 AND NOT a.attisdropped AND a.attname = ANY(%s)"
                " GROUP BY c.relname HAVING count(*) = %s ORDER BY c.relname",
                ([KEY, *FIXED], len(FIXED) + 1)).fetchall() if n.lower() not in own]
            found = []
            for name in names:
                (count,) = conn.execute(f"SELECT count(*) FROM {q(name)}", ()).fetchone()
                found.append((name, count))
            return found

    def unstorable_row(self, row: Row) -> str | None:
        """PostgreSQL text and jsonb hold neither NUL characters nor lone surrogates."""
        return unstorable_text(row, nul=True, json=True)

    def read_rows(self, table: str, *, limit: int) -> list[dict[str, Any]]:
        check_table_name(table, reserved=self._own_tables())
        with self._transaction() as conn:
            if self._columns(conn, table) is None:
                return []
            cursor = conn.execute(f"SELECT * FROM {q(table)} ORDER BY {q(KEY)} LIMIT %s",
                                  (limit,))
            columns = [d.name for d in cursor.description]
            return [ordered(columns, values, _loaded) for values in cursor.fetchall()]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@contextmanager
def _needs_right(what: str, fix: str) -> Iterator[None]:
    """DDL a role may lack the right for: its error says what was missing and who can help."""
    try:
        yield
    except psycopg.errors.InsufficientPrivilege as exc:
        raise TargetRejected(f"postgres: {what} ({exc.diag.message_primary}): {fix}") from exc


def _temp_table(cur: Any, create: str) -> None:
    """Make a session's staging table (temporary: gone with the connection, in a schema of
    the session's own, so no CREATE on any schema; TEMPORARY on the database, which every
    role has unless a DBA revoked it from PUBLIC)."""
    with _needs_right("this role may not create the temporary table COPY stages a batch in",
                      "GRANT TEMPORARY ON DATABASE to it (`sluice schema --sql --role ROLE`"
                      " prints the grant)"):
        cur.execute(create)


def _json(value: Any) -> str | None:
    return None if value is None else jsontext.dumps(value)  # None: NULL, not the JSON null


def _timestamp(value: Any) -> Any:
    return utc(value) if isinstance(value, datetime) else value


_ELEMENT: dict[str, Callable[[Any], Any]] = {"json": _json, "timestamp": _timestamp}


def _loaded(column: str, value: Any) -> Any:
    """A value read back (timestamps in UTC, whatever the session's time zone)."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    return value
