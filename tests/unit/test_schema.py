"""`sluice schema`: the tables a configuration's target needs, and their SQL, which is the
targets' own (a SQLite file made from it is one the target opens as it is)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from tasks.operator.cli import sluice
from tasks.targets import pgschema
from tasks.targets.sqlite import SqliteTarget
from tests.unit.test_config import ISSUE_EXAMPLE, write

MAPPED = """
[sources.tracker.kinds.issue.mapping]
relations = { project = ".project.key" }
properties = { title = ".title", n = { jq = ".n", type = "integer" } }

[sources.tracker.kinds.comment]
parent = "issue"
path = "/sub/comment/{parent.id}"
items = "data"
paginator = { type = "cursor", cursor_path = "next_cursor" }
mapping = { table = "notes", properties = { body = { jq = ".body", type = "text" } } }
"""


def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str) -> Path:
    monkeypatch.setenv("TRACKER_TOKEN", "t")
    rest = ISSUE_EXAMPLE.split("[sources.tracker]", 1)[1]
    return write(tmp_path, f"[target]\n{target}\n\n[sources.tracker]{rest}{MAPPED}")


def schema(path: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(sluice, ["schema", "--config", str(path), *args])
    return result.exit_code, result.output


def test_postgres_lists_and_prints_every_table_with_its_grants(tmp_path, monkeypatch):
    path = config(tmp_path, monkeypatch,
                  'type = "postgres"\ndsn = "postgresql://x@127.0.0.1/db"\ntable = "t"')
    code, out = schema(path)
    assert code == 0, out
    assert out.splitlines() == [
        "t: entities of kinds without a mapping", "t_state: the last clean run of each kind",
        "t_watermarks: the watermarks of incremental kinds",
        "t_secrets: sealed secrets (rotated refresh tokens)",
        "tracker_issue: tracker/issue", "notes: tracker/comment"]
    code, out = schema(path, "--sql", "--role", "sluice writer")
    assert code == 0, out
    for create in pgschema.own_tables("t").values():
        assert f"{create};" in out
    assert '"n" bigint,\n    "project" text,\n    "_raw" jsonb NOT NULL' in out
    assert "column 'title' is not here: its type is inferred" in out  # no type declared
    assert 'ALTER TABLE "notes"\n    ADD COLUMN IF NOT EXISTS "body" text;' in out
    assert ('GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE t, t_state, t_watermarks, t_secrets,'
            ' "tracker_issue", "notes" TO "sluice writer";') in out
    assert "GRANT TEMPORARY ON DATABASE %I TO %s', current_database(), '\"sluice writer\"'" in out
    code, out = schema(path, "--sql")
    assert "GRANT" not in out and "sluice schema --sql --role ROLE" in out


def test_sqlite_says_nothing_is_needed_and_its_sql_is_what_the_target_makes(tmp_path,
                                                                              monkeypatch):
    db = tmp_path / "made.db"
    path = config(tmp_path, monkeypatch, f'type = "sqlite"\npath = "{db}"')
    code, out = schema(path, "--sql")
    assert code == 0, out
    assert "Nothing to run: a worker" in out
    with sqlite3.connect(db) as conn:
        conn.executescript(out)
        made = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"))
    assert set(made) == {"entities", "sluice_state", "sluice_watermarks", "sluice_secrets",
                         "tracker_issue", "notes"}
    SqliteTarget(db).close()  # opens the file as it is, changing nothing
    with sqlite3.connect(db) as conn:
        assert dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'")
                    ) == made
        assert [c for _, c, *_ in conn.execute("PRAGMA table_info(notes)")] == [
            "identifier", "body", "_raw", "_synced_at", "_run_id", "_run_seq", "_first_seq"]


def test_the_http_target_has_no_tables_and_role_needs_postgres(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACKER_TOKEN", "t")
    (tmp_path / "http").mkdir()
    code, out = schema(write(tmp_path / "http", ISSUE_EXAMPLE), "--sql")
    assert code == 2 and "the http target keeps no tables" in out
    path = config(tmp_path, monkeypatch, f'type = "sqlite"\npath = "{tmp_path / "x.db"}"')
    code, out = schema(path, "--sql", "--role", "w")
    assert code == 2 and "--role goes with --sql on a PostgreSQL target" in out
