"""Typed tables (a kind with a mapping) in SQLite and PostgreSQL (PostgreSQL: a real server at
$SLUICE_TEST_POSTGRES_DSN, see tests/unit/test_targets.py)."""

from __future__ import annotations

import multiprocessing
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from integrations.errors import TargetRejected
from tasks.targets.base import (
    COLUMN_TYPES,
    Deletion,
    Row,
    SchemaFrozen,
    Table,
    Typed,
    Within,
)
from tasks.targets.sqlite import SqliteTarget
from tests.unit.test_targets import SLICED, SPAN, postgres_dsn

EVERY_TYPE: dict[str, Any] = {"title": "text", "count": "integer", "score": "number",
                              "open": "boolean", "created": "timestamp", "labels": "json"}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def target(request, tmp_path) -> Iterator:
    """A target whose typed tables are named ``f"{target.prefix}..."``; in PostgreSQL every
    table with that prefix is dropped afterwards."""
    if request.param == "sqlite":
        t = SqliteTarget(tmp_path / "t.db")
        t.prefix = "src_"
        yield t
        t.close()
        return
    from tasks.targets.postgres import PostgresTarget

    t = PostgresTarget(postgres_dsn(), table=f"sluice_test_{uuid.uuid4().hex[:8]}")
    t.prefix = f"{t.table}_t_"
    yield t
    drop_tables(t, t.table)


def drop_tables(target, prefix: str) -> None:
    conn = target._connect()
    names = [n for (n,) in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        " AND starts_with(tablename, %s)", (prefix,)).fetchall()]
    for name in names:
        conn.execute(f'DROP TABLE IF EXISTS "{name}"')
    conn.commit()
    target.close()


def row(identifier: str, raw: Any = None, **values: Any) -> Row:
    return {"identifier": identifier, "values": values,
            "raw": {"id": identifier} if raw is None else raw}


def by_id(target, table: str) -> dict[str, dict[str, Any]]:
    return {r["identifier"]: r for r in target.read_rows(table, limit=1000)}


def test_sqlite_and_postgres_are_typed_targets_and_http_is_not():
    from tasks.targets.http import HttpTarget
    from tasks.targets.postgres import PostgresTarget

    assert isinstance(SqliteTarget(":memory:"), Typed)
    assert isinstance(PostgresTarget("postgresql://unused"), Typed)
    assert not issubclass(HttpTarget, Typed)


def test_every_column_type_round_trips(target):
    table = Table(f"{target.prefix}issues", dict(EVERY_TYPE))
    assert set(EVERY_TYPE.values()) == set(COLUMN_TYPES)
    assert target.table_columns(table.name) is None  # no table yet
    assert target.read_rows(table.name, limit=10) == []
    created = datetime(2024, 3, 1, 12, 30, 15, 250000, tzinfo=timezone(timedelta(hours=2)))
    labels = {"names": ["bug", "ü ✓"], "n": 5, "nested": {"x": None, "y": 1.5}}
    raw = {"id": 1, "title": "Ünïcode ✓", "extra": [1, "two", {"three": 3.0}], "n": None}
    target.upsert_rows(table, [
        row("i-1", raw, title="Ünïcode ✓", count=2**62, score=0.1, open=True, created=created,
            labels=labels),
        row("i-2", title="", count=-7, score=3, open=False,
            created=datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC), labels=5),
        row("i-3", labels="text"),  # missing values: NULL
        row("i-4", title=None, labels=[]),
    ], run_id="r1", run_seq=1)

    assert target.table_columns(table.name) == EVERY_TYPE
    got = target.read_rows(table.name, limit=10)
    assert [r["identifier"] for r in got] == ["i-1", "i-2", "i-3", "i-4"]
    assert list(got[0]) == ["identifier", *EVERY_TYPE, "_raw", "_synced_at", "_run_id",
                            "_run_seq", "_first_seq"]
    one, two, three, four = got
    assert {k: one[k] for k in EVERY_TYPE} == {
        "title": "Ünïcode ✓", "count": 2**62, "score": 0.1, "open": True, "created": created,
        "labels": labels}
    assert one["created"].utcoffset() == timedelta(0)  # read back in UTC
    assert one["_raw"] == raw and (one["_run_id"], one["_run_seq"], one["_first_seq"]) == (
        "r1", 1, 1)
    assert isinstance(one["_synced_at"], datetime)
    assert abs(one["_synced_at"] - datetime.now(UTC)) < timedelta(minutes=5)
    assert {k: two[k] for k in EVERY_TYPE} == {
        "title": "", "count": -7, "score": 3.0, "open": False,
        "created": datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC), "labels": 5}
    assert type(two["score"]) is float and type(two["open"]) is bool
    assert {k: three[k] for k in EVERY_TYPE} == {**dict.fromkeys(EVERY_TYPE), "labels": "text"}
    assert (four["title"], four["labels"]) == (None, [])
    assert target.read_rows(table.name, limit=2) == got[:2]


def test_a_name_sqlite_keeps_is_refused_not_retried(tmp_path):
    target = SqliteTarget(tmp_path / "t.db")
    with pytest.raises(TargetRejected, match="start with sqlite_ are the database's own"):
        target.upsert_rows(Table("SQLite_things", {"v": "text"}), [row("a", v="x")],
                           run_id="r1", run_seq=1)


def test_a_column_name_that_needs_quoting_round_trips(target):
    table = Table(f"{target.prefix}odd", {'we"ird %s name': "text", "select": "integer",
                                          "Ünï": "json", "_id": "text"})
    target.upsert_rows(table, [row("a", **{'we"ird %s name': "x%s", "select": 1, "Ünï": [1],
                                           "_id": "a"})], run_id="r1", run_seq=1)
    assert target.table_columns(table.name) == table.columns
    assert {k: v for k, v in target.read_rows(table.name, limit=1)[0].items()
            if k in table.columns} == {'we"ird %s name': "x%s", "select": 1, "Ünï": [1],
                                       "_id": "a"}


def test_upsert_is_idempotent_and_a_newer_run_s_row_is_not_overwritten(target):
    table = Table(f"{target.prefix}issues", {"title": "text", "v": "integer"})
    batch = [row(f"i-{n}", title=f"t{n}", v=1) for n in range(5)]
    target.upsert_rows(table, batch, run_id="r1", run_seq=1)
    first = by_id(target, table.name)
    target.upsert_rows(table, batch, run_id="r1", run_seq=1)  # a redelivered batch
    again = by_id(target, table.name)
    assert len(again) == 5
    assert {i: {k: v for k, v in r.items() if k != "_synced_at"} for i, r in again.items()} == {
        i: {k: v for k, v in r.items() if k != "_synced_at"} for i, r in first.items()}

    target.upsert_rows(table, [row(f"i-{n}", title=f"t{n}", v=2) for n in range(3)],
                       run_id="r2", run_seq=2)
    # The late write of run 1 (a retry of a run declared stalled) changes none of run 2's rows.
    target.upsert_rows(table, [row(f"i-{n}", title="late", v=1) for n in range(5)],
                       run_id="r1", run_seq=1)
    got = by_id(target, table.name)
    assert {i: (r["title"], r["v"], r["_run_id"], r["_run_seq"], r["_first_seq"])
            for i, r in got.items()} == {
        **{f"i-{n}": (f"t{n}", 2, "r2", 2, 1) for n in range(3)},  # _first_seq stays
        **{f"i-{n}": ("late", 1, "r1", 1, 1) for n in (3, 4)}}
    # The same run writes a row again (its later batch, or a retry): it is updated.
    target.upsert_rows(table, [row("i-0", title="again", v=3)], run_id="r2", run_seq=2)
    assert by_id(target, table.name)["i-0"]["title"] == "again"


def test_a_new_property_adds_a_column_and_old_rows_read_null_there(target):
    name = f"{target.prefix}issues"
    target.upsert_rows(Table(name, {"title": "text"}), [row("i-1", title="old")],
                       run_id="r1", run_seq=1)
    wider = Table(name, {"title": "text", "state": "text", "closed": "timestamp"})
    when = datetime(2024, 5, 1, tzinfo=UTC)
    target.upsert_rows(wider, [row("i-2", title="new", state="open", closed=when)],
                       run_id="r1", run_seq=1)
    assert target.table_columns(name) == wider.columns
    got = by_id(target, name)
    assert (got["i-1"]["title"], got["i-1"]["state"], got["i-1"]["closed"]) == ("old", None, None)
    assert (got["i-2"]["state"], got["i-2"]["closed"]) == ("open", when)
    # A mapping that has fewer properties (a worker on the older configuration) still writes,
    # and leaves the columns it does not know as they are.
    target.upsert_rows(Table(name, {"title": "text"}), [row("i-2", title="newer")],
                       run_id="r2", run_seq=2)
    assert (by_id(target, name)["i-2"]["title"], by_id(target, name)["i-2"]["state"]) == (
        "newer", "open")


def test_a_changed_column_type_is_refused_not_migrated(target):
    name = f"{target.prefix}issues"
    target.upsert_rows(Table(name, {"n": "integer"}), [row("i-1", n=1)], run_id="r1", run_seq=1)
    with pytest.raises(TargetRejected, match=r"n \(integer, the mapping makes it number\)"):
        target.upsert_rows(Table(name, {"n": "number"}), [row("i-1", n=1.5)], run_id="r1",
                           run_seq=1)
    assert by_id(target, name)["i-1"]["n"] == 1


def test_freeze_refuses_a_new_column_and_names_it(target):
    name = f"{target.prefix}issues"
    frozen = Table(name, {"title": "text"}, schema="freeze")
    # A table that does not exist yet is made under freeze too: it guards changes, not the
    # first shape.
    target.upsert_rows(frozen, [row("i-1", title="a")], run_id="r1", run_seq=1)
    target.upsert_rows(frozen, [row("i-2", title="b")], run_id="r1", run_seq=1)
    wider = Table(name, {"title": "text", "state": "text", "votes": "integer"}, schema="freeze")
    with pytest.raises(SchemaFrozen, match=f"{name} .*freeze.*: state, votes$"):
        target.upsert_rows(wider, [row("i-3", title="c", state="open", votes=1)],
                           run_id="r1", run_seq=1)
    assert target.table_columns(name) == {"title": "text"}
    assert sorted(by_id(target, name)) == ["i-1", "i-2"]  # nothing of the batch was written
    # With evolve, the same mapping adds them.
    target.upsert_rows(Table(name, wider.columns), [row("i-3", title="c", state="open", votes=1)],
                       run_id="r1", run_seq=1)
    assert target.table_columns(name) == wider.columns


def test_stale_deletion_on_a_typed_table(target):
    name = f"{target.prefix}issues"
    other = f"{target.prefix}other"
    table = Table(name, {"v": "integer"})
    target.upsert_rows(table, [row(f"i-{n}", v=1) for n in range(10)], run_id="r1", run_seq=1)
    target.upsert_rows(Table(other, {"v": "integer"}), [row("o-1", v=1)], run_id="r1",
                       run_seq=1)
    target.upsert_rows(table, [row(f"i-{n}", v=2) for n in range(2, 10)], run_id="r2",
                       run_seq=2)
    result = target.delete_stale_rows(name, "src", "issues", run_seq=2, threshold=0.3,
                                      watermarks={"null": '"2024-02-01T00:00:00Z"'})
    assert (result.deleted, result.refused) == (2, None)
    assert sorted(by_id(target, name)) == [f"i-{n}" for n in range(2, 10)]
    assert sorted(by_id(target, other)) == ["o-1"]  # another table is not touched
    assert target.watermarks("src", "issues") == {"null": '"2024-02-01T00:00:00Z"'}

    # Run 3 sees 1 of 8: refused, nothing deleted, the watermarks saved all the same.
    target.upsert_rows(table, [row("i-2", v=3)], run_id="r3", run_seq=3)
    refused = target.delete_stale_rows(name, "src", "issues", run_seq=3, threshold=0.3,
                                       watermarks={"null": '"2024-03-01T00:00:00Z"'})
    assert refused.deleted == 0
    assert refused.refused == (f"refused to delete 7 of 8 rows of {name} (87.5%):"
                               " delete_threshold is 30%")
    assert len(by_id(target, name)) == 8
    assert target.watermarks("src", "issues") == {"null": '"2024-03-01T00:00:00Z"'}

    # The rows a refused run created do not dilute the next guard (the clean_seq baseline:
    # run 2 ended clean, so only rows created by then count).
    target.upsert_rows(table, [row(f"n-{n}", v=4) for n in range(100)], run_id="r4", run_seq=4)
    assert target.delete_stale_rows(name, "src", "issues", run_seq=4, threshold=0.3).refused
    target.upsert_rows(table, [row(f"n-{n}", v=5) for n in range(100)], run_id="r5", run_seq=5)
    again = target.delete_stale_rows(name, "src", "issues", run_seq=5, threshold=0.3)
    assert again.refused == (f"refused to delete 8 of 8 rows of {name} (100.0%):"
                             " delete_threshold is 30%")


def test_a_sliced_runs_deletion_on_a_typed_table_reads_the_field_from_the_raw_item(target):
    name = f"{target.prefix}sliced"
    table = Table(name, {"v": "integer"})  # the field is no column: it is read from _raw
    created = ["2024-01-01T01:00:00Z", "2023-06-01T00:00:00Z", "2024-01-01T02:00:00Z"]
    target.upsert_rows(table, [row(f"i-{n}", {"id": n, "created": c}, v=1)
                               for n, c in enumerate(created)]
                       + [row(f"k-{n}", v=1) for n in range(10)], run_id="r1", run_seq=1)
    target.upsert_rows(table, [row(f"k-{n}", v=2) for n in range(10)], run_id="r2", run_seq=2)
    within = Within("created", SLICED.within(*SPAN))
    result = target.delete_stale_rows(name, "src", "sliced", run_seq=2, threshold=0.5,
                                      within=within)
    assert (result.deleted, result.refused) == (2, None)
    assert sorted(by_id(target, name)) == ["i-1", *(f"k-{n}" for n in range(10))]


def test_stale_deletion_of_a_table_not_made_yet_deletes_nothing(target):
    result = target.delete_stale_rows(f"{target.prefix}none", "src", "none", run_seq=1,
                                      threshold=0.1, watermarks={"null": "1"})
    assert (result.deleted, result.refused) == (0, None)
    assert target.watermarks("src", "none") == {"null": "1"}


def entity(kind: str, identifier: str, source: str = "src") -> dict[str, Any]:
    return {"source": source, "kind": kind, "identifier": identifier, "data": {"id": identifier}}


def test_a_sliced_run_moves_only_the_rows_it_wrote_into_the_table(target):
    """``written_only``: of the kind's rows in entities, those whose identifier the run wrote
    into the table go, without a guard; the rest (outside its windows) stay, not lost."""
    name = f"{target.prefix}sliced_moved"
    assert target.delete_moved(name, "src", "issue", run_seq=2, threshold=0.3,
                               written_only=True) == Deletion()  # no table, no entities
    target.upsert([entity("issue", f"i-{n}") for n in range(10)] + [entity("user", "i-1")],
                  run_id="r1", run_seq=1)
    assert target.delete_moved(name, "src", "issue", run_seq=2, threshold=0.3,
                               written_only=True) == Deletion()  # no table yet
    table = Table(name, {"v": "integer"})
    target.upsert_rows(table, [row(f"i-{n}", v=1) for n in range(5)], run_id="r1", run_seq=1)
    target.upsert_rows(table, [row(f"i-{n}", v=2) for n in (1, 2)], run_id="r2", run_seq=2)
    moved = target.delete_moved(name, "src", "issue", run_seq=2, threshold=0.3,
                                written_only=True)
    assert (moved.deleted, moved.refused) == (2, None)
    assert sorted(e["identifier"] for e in target.read("src", "issue", limit=100)) == [
        f"i-{n}" for n in (0, *range(3, 10))]
    assert [e["identifier"] for e in target.read("src", "user", limit=10)] == ["i-1"]


def test_a_kind_moved_to_its_table_leaves_entities_once_the_table_holds_it(target):
    name = f"{target.prefix}issues"
    table = Table(name, {"v": "integer"})
    # Before the mapping: 10 issues in entities, and other kinds and sources beside them.
    target.upsert([entity("issue", f"i-{n}") for n in range(10)]
                  + [entity("user", "u-1"), entity("issue", "i-1", source="other")],
                  run_id="r1", run_seq=1)
    assert target.delete_moved(name, "src", "issue", run_seq=2, threshold=0.3).refused == (
        "refused to delete the 10 rows of issue left in entities from before its mapping: this"
        f" run wrote 0 rows into {name}, 100.0% fewer (delete_threshold is 30%); the next run"
        " reads everything again")  # no table yet: nothing moved
    # The run with the mapping wrote 8 of them into the table: within the guard (20% < 30%).
    target.upsert_rows(table, [row(f"i-{n}", v=1) for n in range(5)], run_id="r0", run_seq=1)
    target.upsert_rows(table, [row(f"i-{n}", v=2) for n in range(2)], run_id="r2", run_seq=2)
    refused = target.delete_moved(name, "src", "issue", run_seq=2, threshold=0.3)
    assert "this run wrote 2 rows" in refused.refused  # rows of an older run do not count
    target.upsert_rows(table, [row(f"i-{n}", v=2) for n in range(2, 8)], run_id="r2", run_seq=2)
    moved = target.delete_moved(name, "src", "issue", run_seq=2, threshold=0.3)
    assert (moved.deleted, moved.refused) == (10, None)
    assert sorted((e["source"], e["kind"]) for e in target.read("src", None, limit=100)) == [
        ("src", "user")]
    assert [e["identifier"] for e in target.read("other", "issue", limit=10)] == ["i-1"]
    assert len(by_id(target, name)) == 8  # the table is not touched
    # Nothing left: nothing to do, whatever the table holds.
    assert target.delete_moved(f"{target.prefix}none", "src", "issue", run_seq=3,
                               threshold=0.1) == Deletion()
    # threshold 1 turns the guard off.
    target.upsert([entity("thread", "t-1")], run_id="r3", run_seq=3)
    assert target.delete_moved(f"{target.prefix}none", "src", "thread", run_seq=3,
                               threshold=1).deleted == 1


def test_every_typed_table_is_counted_and_no_other(target):
    mine = lambda: [(n, c) for n, c in target.table_counts()  # noqa: E731
                    if n.startswith(target.prefix)]
    assert mine() == []
    target.upsert([entity("user", "u-1")], run_id="r1", run_seq=1)
    target.upsert_rows(Table(f"{target.prefix}b", {"v": "integer"}),
                       [row(f"b-{n}", v=n) for n in range(3)], run_id="r1", run_seq=1)
    target.upsert_rows(Table(f"{target.prefix}a", {}), [row("a-1")], run_id="r1", run_seq=1)
    conn = target._conn if isinstance(target, SqliteTarget) else target._connect()
    conn.execute(f"CREATE TABLE {target.prefix}plain (identifier text, x text)")
    if not isinstance(target, SqliteTarget):
        conn.commit()
    assert mine() == [(f"{target.prefix}a", 1), (f"{target.prefix}b", 3)]
    own = ("entities", "sluice_state", "sluice_watermarks", getattr(target, "table", ""))
    assert not [n for n, _ in target.table_counts() if n in own or n.startswith("sqlite_")]


def test_watermarks_of_a_kind_can_be_forgotten(target):
    target.clear_watermarks("src", "issue")  # none yet (PostgreSQL: no table yet either)
    target.save_watermarks("src", "issue", {"null": "1", "mapping": '"abc"'})
    target.save_watermarks("src", "user", {"null": "2"})
    target.clear_watermarks("src", "issue")
    assert target.watermarks("src", "issue") == {}
    assert target.watermarks("src", "user") == {"null": "2"}


@pytest.mark.parametrize("name", ["", "1abc", "has space", "x;drop table entities", 'q"uote',
                                  "ünï", "a" * 64, "own:0", "own:1", "own:1:upper", "own:2"])
def test_an_unsafe_table_name_is_refused(target, name):
    if name.startswith("own:"):  # one of the target's own tables
        own = (("entities", "sluice_state", "sluice_watermarks")
               if isinstance(target, SqliteTarget) else
               (target.table, f"{target.table}_state", f"{target.table}_watermarks"))
        _, index, *upper = name.split(":")
        name = own[int(index)].upper() if upper else own[int(index)]
    with pytest.raises(TargetRejected, match=r"typed table .*: (not a safe SQL identifier|longer"
                                             r"|the name of one of Sluice's own tables)"):
        target.upsert_rows(Table(name, {"v": "text"}), [row("a", v="x")], run_id="r1",
                           run_seq=1)
    for call in (lambda: target.table_columns(name), lambda: target.read_rows(name, limit=1),
                 lambda: target.delete_stale_rows(name, "s", "k", run_seq=1, threshold=1)):
        with pytest.raises(TargetRejected, match="typed table"):
            call()


@pytest.mark.parametrize("columns,message", [
    ({"identifier": "text"}, "one of the columns every typed table has"),
    ({"_raw": "json"}, "one of the columns every typed table has"),
    ({"_RUN_SEQ": "integer"}, "one of the columns every typed table has"),
    ({"Title": "text", "title": "text"}, "the same column as 'Title'"),
    ({"": "text"}, "a column needs a name"),
    ({"a\x00b": "text"}, "NUL"),
    ({"é" * 32: "text"}, "longer than 63 bytes"),
    ({"v": "uuid"}, "type 'uuid' is not one of"),
])
def test_an_unsafe_column_is_refused(target, columns, message):
    name = f"{target.prefix}issues"
    with pytest.raises(TargetRejected, match=message):
        target.upsert_rows(Table(name, columns), [row("a")], run_id="r1", run_seq=1)
    assert target.table_columns(name) is None  # nothing was made


def test_a_table_sluice_did_not_make_is_not_taken_for_a_typed_table(target):
    name = f"{target.prefix}foreign"
    if isinstance(target, SqliteTarget):
        target._conn.execute(f"CREATE TABLE {name} (identifier TEXT PRIMARY KEY, v TEXT)")
    else:
        conn = target._connect()
        conn.execute(f"CREATE TABLE {name} (identifier text PRIMARY KEY, v text)")
        conn.commit()
    with pytest.raises(TargetRejected, match=f"{name} exists but is not a typed table"):
        target.table_columns(name)
    with pytest.raises(TargetRejected, match="it lacks _raw"):
        target.upsert_rows(Table(name, {"v": "text"}), [row("a", v="x")], run_id="r1",
                           run_seq=1)


def test_values_a_target_cannot_store_are_named_per_row(target):
    name = f"{target.prefix}issues"
    table = Table(name, {"title": "text", "labels": "json", "n": "integer"})
    ok = row("ok", title="fine ü", labels={"a": ["ü"]}, n=2**63 - 1)
    lone = row("lone", title="x\ud800y")
    assert target.unstorable_row(ok) is None
    assert "surrogate" in target.unstorable_row(lone)
    assert "identifier" in target.unstorable_row(row("x\udc00"))
    assert "64 bits" in target.unstorable_row(row("big", n=2**63))
    nul = [row("nul-text", title="a\x00b"), row("nul-json", labels={"k": ["a\x00"]}),
           row("nul-raw", raw={"k": "a\x00"}), row("nul\x00id")]
    if isinstance(target, SqliteTarget):
        # SQLite stores NUL in text, and JSON escaped (a lone surrogate too).
        assert [target.unstorable_row(r) for r in nul[:3]] == [None, None, None]
        assert target.unstorable_row(row("j", labels={"k": "x\ud800"})) is None
        rejected = [lone, row("big", n=2**63)]
    else:
        assert all("NUL" in target.unstorable_row(r) for r in nul)
        assert "surrogate" in target.unstorable_row(row("j", labels={"k": "x\ud800"}))
        rejected = [lone, row("big", n=2**63), *nul]
    # Each is rejected with its batch, which is written without it (tasks/write/mapped.py).
    for bad in rejected:
        with pytest.raises(TargetRejected):
            target.upsert_rows(table, [ok, bad], run_id="r1", run_seq=1)
        assert target.unstorable_row(bad)
    target.upsert_rows(table, [ok], run_id="r1", run_seq=1)
    assert sorted(by_id(target, name)) == ["ok"]


def add_columns(kind: str, where: str, table: str, barrier: Any, rounds: int) -> None:
    """In a process of its own: write to ``table`` with one more column each round, at the same
    moment as the other process."""
    if kind == "sqlite":
        target: Any = SqliteTarget(where)
    else:
        from tasks.targets.postgres import PostgresTarget

        target = PostgresTarget(where, table=table.rsplit("_t_", 1)[0])
    try:
        for n in range(rounds):
            columns = {f"c{i}": "integer" for i in range(n + 1)}
            barrier.wait(timeout=60)
            target.upsert_rows(Table(table, columns), [row(f"{kind}-{n}", **{f"c{n}": n})],
                               run_id="r1", run_seq=1)
    except BaseException:
        barrier.abort()  # the other process fails at once instead of waiting out the timeout
        raise
    finally:
        target.close()


@pytest.mark.integration  # two processes
def test_two_processes_adding_the_same_column_at_once_both_succeed(target, tmp_path: Path):
    name = f"{target.prefix}race"
    if isinstance(target, SqliteTarget):
        where = target.path
    else:
        where = target.dsn
        target._connect().close()  # its own tables exist before the race (they race too)
    ctx = multiprocessing.get_context("spawn")
    rounds = 4
    barrier = ctx.Barrier(2)
    kind = "sqlite" if isinstance(target, SqliteTarget) else "postgres"
    processes = [ctx.Process(target=add_columns, args=(kind, where, name, barrier, rounds))
                 for _ in range(2)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=120)
    assert [p.exitcode for p in processes] == [0, 0]
    # The table was made once and each column added once (a duplicate could not be made).
    assert target.table_columns(name) == {f"c{i}": "integer" for i in range(rounds)}
    got = target.read_rows(name, limit=100)
    assert [r["identifier"] for r in got] == [f"{kind}-{n}" for n in range(rounds)]
    assert [r[f"c{n}"] for n, r in enumerate(got)] == list(range(rounds))


def test_known_columns_are_what_the_target_last_read_and_a_failed_write_forgets_them(target
                                                                                     ) -> None:
    name = f"{target.prefix}known"
    assert target.known_columns(name) is None
    table = Table(name, {"title": "text"})
    target.upsert_rows(table, [row("1", title="a")], run_id="r", run_seq=1)
    assert target.table_columns(name) == {"title": "text"}
    assert target.known_columns(name) == {"title": "text"}
    wider = Table(name, {"title": "text", "count": "integer"})
    target.upsert_rows(wider, [row("2", title="b", count=2)], run_id="r", run_seq=1)
    # Read under the write lock before the column was added: a column may be missing from
    # what is known, never one the table lacks.
    assert target.known_columns(name) in ({"title": "text"},
                                          {"title": "text", "count": "integer"})
    with pytest.raises(TargetRejected):  # the type of a column changed: refused
        target.upsert_rows(Table(name, {"title": "integer"}), [row("3", title=3)],
                           run_id="r", run_seq=1)
    assert target.known_columns(name) is None
    assert target.table_columns(name) == {"title": "text", "count": "integer"}


def test_holding_and_delete_on_a_typed_table(target):
    table = Table(f"{target.prefix}hooked", {"title": "text"})
    with target.holding("src", "hooked", ["i-1"], table=table.name) as stored:
        assert stored == {}  # no table yet: nothing stored, nothing created
    assert target.delete("src", "hooked", ["i-1"], table=table.name) == 0
    assert target.table_columns(table.name) is None
    with target.holding("src", "hooked", ["i-1", "i-2"], table=table.name):
        target.upsert_rows(table, [row("i-1", {"id": "i-1", "v": 1}, title="one"),
                                   row("i-2", title="two")], run_id="w", run_seq=5)
    with target.holding("src", "hooked", ["i-1", "i-3"], table=table.name) as stored:
        assert stored == {"i-1": {"id": "i-1", "v": 1}}  # the raw item, as written
        assert target.delete("src", "hooked", ["i-2", "i-3"], table=table.name) == 1
    assert set(by_id(target, table.name)) == {"i-1"}


def test_a_typed_table_dropped_behind_the_targets_back_is_made_again(tmp_path):
    """SQLite skips the schema look when it saw every column: a table gone meanwhile is
    made again rather than failing the batch."""
    import sqlite3

    target = SqliteTarget(tmp_path / "t.db")
    table = Table("src_dropped", {"title": "text"})
    target.upsert_rows(table, [row("i-1", title="one")], run_id="r", run_seq=1)
    with sqlite3.connect(tmp_path / "t.db") as other:
        other.execute('DROP TABLE "src_dropped"')
    target.upsert_rows(table, [row("i-2", title="two")], run_id="r", run_seq=2)
    assert set(by_id(target, table.name)) == {"i-2"}
    target.close()
