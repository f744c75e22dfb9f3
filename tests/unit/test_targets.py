"""SQLite and PostgreSQL targets (PostgreSQL: a real server at $SLUICE_TEST_POSTGRES_DSN)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from integrations.errors import TargetUnavailable
from tasks.targets.base import Entity, deletion_guard
from tasks.targets.sqlite import SqliteTarget


def entities(kind: str, ids: range, *, version: int = 1) -> list[Entity]:
    return [{"identifier": f"{kind}-{i}", "kind": kind, "source": "src",
             "data": {"id": i, "v": version}} for i in ids]


def postgres_dsn() -> str:
    dsn = os.environ.get("SLUICE_TEST_POSTGRES_DSN")
    if not dsn:
        pytest.skip("SLUICE_TEST_POSTGRES_DSN is not set (.ci/run sets it; CI fails without it)")
    return dsn


@pytest.fixture(params=["sqlite", "postgres"])
def target(request, tmp_path) -> Iterator:
    if request.param == "sqlite":
        t = SqliteTarget(tmp_path / "t.db")
        yield t
        t.close()
        return
    from tasks.targets.postgres import PostgresTarget

    t = PostgresTarget(postgres_dsn(), table=f"sluice_test_{uuid.uuid4().hex[:8]}")
    yield t
    t._connect().execute(f"DROP TABLE IF EXISTS {t.table}")
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


def test_upsert_is_idempotent_and_updates(target):
    target.upsert(entities("a", range(5)), run_id="r1")
    target.upsert(entities("a", range(5)), run_id="r1")  # a redelivered batch
    target.upsert(entities("a", range(3, 8), version=2), run_id="r1")
    got = rows(target)
    assert len(got) == 8
    assert got["a-0"] == {"id": 0, "v": 1} and got["a-4"] == {"id": 4, "v": 2}


def test_delete_stale_deletes_what_the_run_did_not_see(target):
    target.upsert(entities("a", range(10)), run_id="r1")
    target.upsert(entities("b", range(3)), run_id="r1")
    target.upsert(entities("a", range(2, 10)), run_id="r2")
    result = target.delete_stale("src", "a", run_id="r2", threshold=0.9)
    assert (result.deleted, result.refused) == (2, None)
    assert sorted(rows(target)) == sorted([f"a-{i}" for i in range(2, 10)] + ["b-0", "b-1", "b-2"])


def test_delete_stale_refuses_past_the_threshold(target):
    target.upsert(entities("a", range(10)), run_id="r1")
    result = target.delete_stale("src", "a", run_id="r2", threshold=0.9)  # r2 saw nothing
    assert result.deleted == 0
    assert result.refused == "refused to delete 10 of 10 entities (100%): more than delete_threshold 90%"
    assert len(rows(target)) == 10


@pytest.mark.parametrize("stale,existing,threshold,refused", [
    (9, 10, 0.9, False), (10, 10, 0.9, True), (1, 10, 0.0, True), (0, 0, 0.0, False),
    (0, 10, 0.0, False), (10, 10, 1.0, False),
])
def test_deletion_guard(stale, existing, threshold, refused):
    assert (deletion_guard(stale, existing, threshold) is not None) is refused


def test_postgres_down_is_a_retryable_error():
    postgres_dsn()
    from tasks.targets.postgres import PostgresTarget

    target = PostgresTarget("postgresql://postgres@127.0.0.1:9/none?connect_timeout=2")
    with pytest.raises(TargetUnavailable, match="postgres"):
        target.upsert(entities("a", range(1)), run_id="r1")


def test_sqlite_locked_past_the_busy_timeout_is_a_retryable_error(tmp_path):
    holder = SqliteTarget(tmp_path / "t.db")
    writer = SqliteTarget(tmp_path / "t.db", busy_timeout=0.2)
    holder._conn.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(TargetUnavailable, match="locked"):
            writer.upsert(entities("a", range(1)), run_id="r1")
    finally:
        holder._conn.execute("ROLLBACK")
    writer.upsert(entities("a", range(1)), run_id="r1")  # and it passes once the lock is gone
    assert len(rows(writer)) == 1
