"""SQLite and PostgreSQL targets (PostgreSQL: a real server at $SLUICE_TEST_POSTGRES_DSN)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from integrations.errors import TargetUnavailable
from integrations.slices import Slices
from tasks.targets.base import Entity, Within, deletion_guard
from tasks.targets.sqlite import SqliteTarget


def entities(kind: str, ids: range, *, version: int = 1) -> list[Entity]:
    return [{"identifier": f"{kind}-{i}", "kind": kind, "source": "src",
             "data": {"id": i, "v": version}} for i in ids]


def postgres_dsn() -> str:
    dsn = os.environ.get("SLUICE_TEST_POSTGRES_DSN")
    if not dsn:
        pytest.skip("SLUICE_TEST_POSTGRES_DSN is not set (.ci/run sets it; CI fails without it)")
    return dsn


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def target(request, tmp_path) -> Iterator:
    if request.param == "sqlite":
        t = SqliteTarget(tmp_path / "t.db")
        yield t
        t.close()
        return
    from tasks.targets.postgres import PostgresTarget

    t = PostgresTarget(postgres_dsn(), table=f"sluice_test_{uuid.uuid4().hex[:8]}")
    yield t
    t._connect().execute(f"DROP TABLE IF EXISTS {t.table}, {t.table}_state,"
                         f" {t.table}_watermarks")
    t._conn.commit()
    t.close()


def rows(target) -> dict[str, dict]:
    if isinstance(target, SqliteTarget):
        import json

        return {i: json.loads(d) for i, d in target._conn.execute(
            "SELECT identifier, data FROM entities")}
    with target._connect().cursor() as cur:
        cur.execute(f"SELECT identifier, data FROM {target.table}")
        result = dict(cur.fetchall())
    target._conn.commit()
    return result


def test_watermarks_are_kept_beside_the_data_and_saved_with_the_deletion(target):
    assert target.watermarks("src", "a") == {}  # none yet (in PostgreSQL: not even the table)
    target.save_watermarks("src", "a", {"null": '"2024-01-01T00:00:00Z"', '"o/r"': "17"})
    target.upsert(entities("a", range(5)), run_id="r1", run_seq=1)
    target.upsert(entities("a", range(4)), run_id="r2", run_seq=2)
    # The deletion is refused (1 of 5 stale, over a 0.1 threshold): the watermarks advance all
    # the same, in its transaction; the run wrote every batch.
    refused = target.delete_stale("src", "a", run_seq=2, threshold=0.1,
                                  watermarks={"null": '"2024-02-01T00:00:00Z"'})
    assert refused.refused
    assert target.watermarks("src", "a") == {"null": '"2024-02-01T00:00:00Z"', '"o/r"': "17"}
    assert target.watermarks("src", "b") == {}


def test_upsert_is_idempotent_and_updates(target):
    target.upsert(entities("a", range(5)), run_id="r1", run_seq=1)
    target.upsert(entities("a", range(5)), run_id="r1", run_seq=1)  # a redelivered batch
    target.upsert(entities("a", range(3, 8), version=2), run_id="r1", run_seq=1)
    got = rows(target)
    assert len(got) == 8
    assert got["a-0"] == {"id": 0, "v": 1} and got["a-4"] == {"id": 4, "v": 2}


def test_delete_stale_deletes_what_the_run_did_not_see(target):
    target.upsert(entities("a", range(10)), run_id="r1", run_seq=1)
    target.upsert(entities("b", range(3)), run_id="r1", run_seq=1)
    target.upsert(entities("a", range(2, 10)), run_id="r2", run_seq=2)
    result = target.delete_stale("src", "a", run_seq=2, threshold=0.9)
    assert (result.deleted, result.refused) == (2, None)
    assert sorted(rows(target)) == sorted([f"a-{i}" for i in range(2, 10)] + ["b-0", "b-1", "b-2"])


# A sliced run's span, 2024-01-01 (ISO times): what its windows held.
SLICED = Slices(param_from="created[gte]", param_to="created[lt]", start="2024-01-01T00:00:00Z",
                end="2024-01-02T00:00:00Z", step="6h")
SPAN = SLICED.span(now=0)


def test_a_sliced_runs_deletion_covers_only_what_its_windows_held(target):
    """Stale entities are deleted only when their field falls in the run's span; those
    before it, after it, without the field or with one that is no time stay."""
    created = {0: "2024-01-01T03:00:00Z", 1: "2024-01-01T23:59:59Z", 2: "2023-12-31T23:59:59Z",
               3: "2024-01-02T00:00:00Z", 4: None, 5: "soon", 6: {"at": "2024-01-01"}}
    target.upsert([{"identifier": f"a-{i}", "kind": "a", "source": "src",
                    "data": {"id": i, "meta": {"created": c}}} for i, c in created.items()]
                  + entities("a", range(7, 20)), run_id="r1", run_seq=1)
    target.upsert(entities("a", range(7, 20)), run_id="r2", run_seq=2)
    within = Within("meta.created", SLICED.within(*SPAN))
    result = target.delete_stale("src", "a", run_seq=2, threshold=0.5, within=within)
    assert (result.deleted, result.refused) == (2, None)
    assert sorted(rows(target)) == sorted(f"a-{i}" for i in range(2, 20))
    # The guard weighs what the windows held: 3 of 4 stale within the span is refused.
    target.upsert(entities("b", range(10)), run_id="r1", run_seq=1)
    target.upsert([{"identifier": f"b-{i}", "kind": "b", "source": "src",
                    "data": {"id": i, "meta": {"created": "2024-01-01T12:00:00Z"}}}
                   for i in range(4)], run_id="r1", run_seq=1)
    target.upsert(entities("b", range(3, 10)), run_id="r2", run_seq=2)
    refused = target.delete_stale("src", "b", run_seq=2, threshold=0.2, within=within)
    assert refused.refused == "refused to delete 3 of 10 entities (30.0%): delete_threshold is 20%"


@pytest.mark.parametrize("field", ["meta.created", "meta.at.created", 'meta.a"b', "meta.a\\b",
                                   "meta.list.0", "meta.$"])
def test_a_sliced_runs_deletion_reads_its_field_as_the_cursor_path_is_read(target, field):
    """The field is found in the stored item as ``incremental.cursor_path`` finds it (a key
    that holds dots or quotes, a list index), by both targets alike: else an item the
    watermark reads is never deleted, or one target deletes what the other keeps."""
    def item(i: int, created: str) -> dict:
        return {"id": i, "meta": {"created": created, "at.created": created, 'a"b': created,
                                  "a\\b": created, "list": [created], "$": created}}

    target.upsert([{"identifier": f"a-{i}", "kind": "a", "source": "src", "data": item(i, c)}
                   for i, c in enumerate(["2024-01-01T03:00:00Z", "2023-12-31T23:59:59Z"])]
                  + entities("a", range(2, 20)), run_id="r1", run_seq=1)
    target.upsert(entities("a", range(2, 20)), run_id="r2", run_seq=2)
    result = target.delete_stale("src", "a", run_seq=2, threshold=0.5,
                                 within=Within(field, SLICED.within(*SPAN)))
    assert (result.deleted, result.refused) == (1, None)
    assert "a-0" not in rows(target) and "a-1" in rows(target)


def test_a_sliced_runs_deletion_keeps_a_boolean_in_a_numbered_span(target):
    """SQLite's json_extract gives true as 1: a boolean is no number, on either target."""
    numbered = Slices(param_from="f", param_to="t", start="0", end="10", step="5",
                      cursor_type="number")
    target.upsert([{"identifier": f"a-{i}", "kind": "a", "source": "src", "data": {"n": n}}
                   for i, n in enumerate([True, False, 3])] + entities("a", range(3, 20)),
                  run_id="r1", run_seq=1)
    target.upsert(entities("a", range(3, 20)), run_id="r2", run_seq=2)
    result = target.delete_stale("src", "a", run_seq=2, threshold=0.5,
                                 within=Within("n", numbered.within(*numbered.span(now=0))))
    assert (result.deleted, result.refused) == (1, None)
    assert sorted(i for i in rows(target) if i in ("a-0", "a-1", "a-2")) == ["a-0", "a-1"]


@pytest.mark.postgres
def test_a_row_written_again_while_a_sliced_deletion_chooses_stays():
    """The deletion chooses its rows, then deletes them: a row another transaction writes
    again in between (a webhook's batch, a newer run) is no longer stale and stays."""
    from tasks.targets.postgres import PostgresTarget

    t = PostgresTarget(postgres_dsn(), table=f"sluice_test_{uuid.uuid4().hex[:8]}")
    other = PostgresTarget(t.dsn, table=t.table)
    try:
        data = {"id": 0, "created": "2024-01-01T03:00:00Z"}
        t.upsert([{"identifier": "a-0", "kind": "a", "source": "src", "data": data},
                  *entities("a", range(1, 20))], run_id="r1", run_seq=1)
        t.upsert(entities("a", range(1, 20)), run_id="r2", run_seq=2)
        holds = SLICED.within(*SPAN)

        def written_again(value: object) -> bool:
            other.upsert([{"identifier": "a-0", "kind": "a", "source": "src",
                           "data": {**data, "v": 3}}], run_id="webhook", run_seq=3)
            return holds(value)

        result = t.delete_stale("src", "a", run_seq=2, threshold=0.5,
                                within=Within("created", written_again))
        assert result.deleted == 0
        assert rows(t)["a-0"]["v"] == 3
    finally:
        other.close()
        t._connect().execute(f"DROP TABLE IF EXISTS {t.table}, {t.table}_state,"
                             f" {t.table}_watermarks")
        t._conn.commit()
        t.close()


def test_delete_stale_refuses_past_the_threshold(target):
    target.upsert(entities("a", range(10)), run_id="r1", run_seq=1)
    result = target.delete_stale("src", "a", run_seq=2, threshold=0.9)  # run 2 saw nothing
    assert result.deleted == 0
    assert result.refused == "refused to delete 10 of 10 entities (100.0%): delete_threshold is 90%"
    assert len(rows(target)) == 10


def test_a_late_write_of_an_older_run_never_overwrites_or_restamps_a_newer_one(target):
    """Run 1 was declared stalled with retries pending; run 2 wrote everything; run 1's late
    retry lands afterwards. Run 2's data stays, and its deletion removes nothing it saw."""
    target.upsert(entities("a", range(10)), run_id="r1", run_seq=1)
    target.upsert(entities("a", range(9), version=2), run_id="r2", run_seq=2)  # a-9 is gone
    target.upsert(entities("a", range(10), version=1), run_id="r1", run_seq=1)  # late write
    assert {k: v["v"] for k, v in rows(target).items()} == {
        **{f"a-{i}": 2 for i in range(9)}, "a-9": 1}
    result = target.delete_stale("src", "a", run_seq=2, threshold=0.5)
    assert (result.deleted, result.refused) == (1, None)
    assert sorted(rows(target)) == [f"a-{i}" for i in range(9)]


def test_rows_a_run_created_do_not_dilute_the_guard(target):
    """An API that answers 5,000 items with new ids: the 1,000 rows that existed are all
    stale, 100% of what existed before the run, not 1,000 of 6,000."""
    target.upsert(entities("a", range(1000)), run_id="r1", run_seq=1)
    target.upsert(entities("a", range(1000, 6000)), run_id="r2", run_seq=2)
    result = target.delete_stale("src", "a", run_seq=2, threshold=0.2)
    assert result.refused == ("refused to delete 1000 of 1000 entities (100.0%): "
                              "delete_threshold is 20%")
    assert len(rows(target)) == 6000


def test_a_refused_run_s_rows_do_not_dilute_the_next_run_s_guard(target):
    """Two runs of an API answering all-new ids: the first is refused and leaves its 5,000
    rows; they must not make the 1,000 rows a clean run confirmed look like 17% next time."""
    target.upsert(entities("a", range(1000)), run_id="r1", run_seq=1)
    assert target.delete_stale("src", "a", run_seq=1, threshold=0.2).refused is None  # clean
    target.upsert(entities("a", range(1000, 6000)), run_id="r2", run_seq=2)
    assert target.delete_stale("src", "a", run_seq=2, threshold=0.2).refused
    target.upsert(entities("a", range(1000, 6000)), run_id="r3", run_seq=3)
    result = target.delete_stale("src", "a", run_seq=3, threshold=0.2)
    assert result.refused == ("refused to delete 1000 of 1000 entities (100.0%): "
                              "delete_threshold is 20%")
    assert len(rows(target)) == 6000


@pytest.mark.parametrize("stale,existing,threshold,refused", [
    (1, 10, 0.2, False), (2, 10, 0.2, True),  # the boundary (exactly 20%) is refused
    (199, 1000, 0.2, False), (200, 1000, 0.2, True),
    (4500, 5000, 0.9, True),  # the case that deleted 90% of a kind under `> 0.9`
    (10, 10, 0.9, True), (1, 10, 0.0, True), (0, 0, 0.0, False),
    (0, 10, 0.0, False), (10, 10, 1.0, False),  # 1 turns the guard off
])
def test_deletion_guard(stale, existing, threshold, refused):
    assert (deletion_guard(stale, existing, threshold) is not None) is refused


def test_values_postgres_cannot_store_are_named_per_entity():
    from tasks.targets.postgres import PostgresTarget

    target = PostgresTarget("postgresql://unused")
    ok, nul, lone = ({"identifier": i, "kind": "k", "source": "s", "data": d} for i, d in [
        ("1", {"t": "fine ü"}), ("2", {"t": "a\x00b"}), ("3", {"t": "x\ud800y"})])
    assert target.unstorable(ok) is None
    assert "NUL" in target.unstorable(nul) and "surrogate" in target.unstorable(lone)
    sqlite = SqliteTarget(":memory:")
    assert sqlite.unstorable(nul) is None and sqlite.unstorable(lone) is None  # JSON-escaped
    assert "surrogate" in sqlite.unstorable({**ok, "identifier": "x\udc00"})


@pytest.mark.postgres
def test_postgres_down_is_a_retryable_error():
    postgres_dsn()
    from tasks.targets.postgres import PostgresTarget

    target = PostgresTarget("postgresql://postgres@127.0.0.1:9/none?connect_timeout=2")
    with pytest.raises(TargetUnavailable, match="postgres"):
        target.upsert(entities("a", range(1)), run_id="r1", run_seq=1)


def test_sqlite_locked_past_the_busy_timeout_is_a_retryable_error(tmp_path):
    holder = SqliteTarget(tmp_path / "t.db")
    writer = SqliteTarget(tmp_path / "t.db", busy_timeout=0.2)
    holder._conn.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(TargetUnavailable, match="locked"):
            writer.upsert(entities("a", range(1)), run_id="r1", run_seq=1)
    finally:
        holder._conn.execute("ROLLBACK")
    # and it passes once the lock is gone
    writer.upsert(entities("a", range(1)), run_id="r1", run_seq=1)
    assert len(rows(writer)) == 1


# -- webhook events (the Ordered protocol)

def twin(target):
    """Another target on the same storage (its own connection)."""
    if isinstance(target, SqliteTarget):
        return SqliteTarget(target.path)
    from tasks.targets.postgres import PostgresTarget

    return PostgresTarget(target.dsn, table=target.table)


def test_holding_yields_what_is_stored_and_its_writes_land_or_roll_back_together(target):
    target.upsert(entities("a", range(3)), run_id="r1", run_seq=1)
    with target.holding("src", "a", ["a-0", "a-1", "a-9"]) as stored:
        assert stored == {"a-0": {"id": 0, "v": 1}, "a-1": {"id": 1, "v": 1}}
        target.upsert(entities("a", range(1), version=2), run_id="w", run_seq=2)
        assert target.delete("src", "a", ["a-1", "a-9"]) == 1
    assert rows(target) == {"a-0": {"id": 0, "v": 2}, "a-2": {"id": 2, "v": 1}}
    with pytest.raises(RuntimeError), target.holding("src", "a", ["a-0"]):
        target.delete("src", "a", ["a-0", "a-2"])
        target.upsert(entities("a", range(5, 6)), run_id="w", run_seq=3)
        raise RuntimeError("the batch failed half-way")
    assert rows(target) == {"a-0": {"id": 0, "v": 2}, "a-2": {"id": 2, "v": 1}}
    assert target.delete("src", "b", ["a-0"]) == 0  # another kind's identifiers are its own


def test_two_holders_of_one_kind_take_turns(target):
    import threading
    import time

    target.upsert(entities("a", range(1)), run_id="r1", run_seq=1)
    order: list[str] = []
    inside = threading.Event()

    def first() -> None:
        other = twin(target)
        with other.holding("src", "a", ["a-0"]):
            inside.set()
            time.sleep(0.5)
            order.append("first out")
        other.close()

    thread = threading.Thread(target=first)
    thread.start()
    assert inside.wait(10)
    with target.holding("src", "a", ["a-0"]):
        order.append("second in")
    thread.join()
    assert order == ["first out", "second in"]
