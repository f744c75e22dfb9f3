"""SQLite target (the embedded default): WAL and a busy timeout so worker processes can write
at once; one transaction per batch."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from integrations.errors import TargetRejected, TargetUnavailable
from tasks.targets.base import Deletion, Entity, bad_text, deletion_guard

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


class SqliteTarget:
    supports_delete = True
    thread_safe = False

    def __init__(self, path: str | Path, *, busy_timeout: float = 30.0) -> None:
        self.path = str(path)
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
            self._conn.execute(SCHEMA)
            self._conn.execute(STATE)
            self._conn.execute(WATERMARKS)
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
            # IMMEDIATE takes the write lock up front: waiting happens in busy_timeout, not in
            # a deadlock between two readers that both want to write.
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def upsert(self, entities: list[Entity], *, run_id: str, run_seq: int) -> None:
        now = time.time()
        # json.dumps escapes what is not ASCII, so any string in the data can be stored.
        rows = [(e["source"], e["kind"], e["identifier"], json.dumps(e["data"]), run_id, run_seq,
                 run_seq, now) for e in entities]
        with self._transaction() as conn:
            conn.executemany(UPSERT, rows)

    def unstorable(self, entity: Entity) -> str | None:
        return bad_text(entity["identifier"])

    def watermarks(self, source: str, kind: str) -> dict[str, str]:
        with self._translated():
            rows = self._conn.execute("SELECT part, value FROM sluice_watermarks WHERE source = ?"
                                      " AND kind = ?", (source, kind)).fetchall()
        return dict(rows)

    def save_watermarks(self, source: str, kind: str, marks: dict[str, str]) -> None:
        with self._transaction() as conn:
            conn.executemany(SAVE_WATERMARK, [(source, kind, k, v) for k, v in marks.items()])

    def delete_stale(self, source: str, kind: str, *, run_seq: int, threshold: float,
                     watermarks: dict[str, str] | None = None) -> Deletion:
        with self._transaction() as conn:
            conn.executemany(SAVE_WATERMARK,
                             [(source, kind, k, v) for k, v in (watermarks or {}).items()])
            row = conn.execute("SELECT clean_seq FROM sluice_state WHERE source = ? AND kind = ?",
                               (source, kind)).fetchone()
            existing, confirmed, stale = conn.execute(
                "SELECT COALESCE(SUM(first_seq < ?), 0), COALESCE(SUM(first_seq <= ?), 0),"
                " COALESCE(SUM(run_seq < ?), 0) FROM entities WHERE source = ? AND kind = ?",
                (run_seq, row[0] if row else 0, run_seq, source, kind)).fetchone()
            refused = deletion_guard(stale, confirmed or existing, threshold)
            if refused:
                return Deletion(refused=refused)
            deleted = 0
            if stale:
                deleted = conn.execute("DELETE FROM entities WHERE source = ? AND kind = ?"
                                       " AND run_seq < ?", (source, kind, run_seq)).rowcount
            conn.execute("INSERT INTO sluice_state (source, kind, clean_seq) VALUES (?, ?, ?)"
                         " ON CONFLICT (source, kind) DO UPDATE SET clean_seq = excluded.clean_seq",
                         (source, kind, run_seq))
            return Deletion(deleted=deleted)

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

    def close(self) -> None:
        self._conn.close()
