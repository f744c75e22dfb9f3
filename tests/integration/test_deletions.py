"""Deletion tombstones and typed watermarks with real workers, on SQLite and PostgreSQL.

An API whose watermark is in epoch milliseconds and whose incremental reads list deleted
items as tombstones (``{"id", "deleted": true, "updated_at"}``; a full read leaves them out):
the second run asks since the watermark minus 120000 (lookback 2m), the tombstones delete
their rows (in ``entities`` and in a typed table) and are counted, never stored, and a full
run after it neither brings them back nor fails."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from integrations.fakeapi import FakeAPI, at_ms
from tests.support.asked import queries_asked
from tests.support.databases import RedisDatabases
from tests.support.workers import Client, Workers

pytestmark = pytest.mark.integration

KIND = """
[sources.api.kinds.NAME]
path = "/cursor/NAME"
items = "data"
paginator = {{ type = "cursor", cursor_path = "next_cursor", limit = 100 }}
deleted = '.deleted == true'
[sources.api.kinds.NAME.incremental]
cursor_path = "updated_at"
param = "since"
lookback = "2m"
cursor_type = "epoch_ms"
"""

CONFIG = """
[target]
{target}

[sources.api]
integration = "rest"
base_url = "{url}"
delete_threshold = 0.9
http = {{ retries = 1, backoff = 0.05, max_backoff = 0.1 }}
""" + KIND.replace("NAME", "ms") + KIND.replace("NAME", "typed") + """
[sources.api.kinds.typed.mapping]
table = "{table}"
properties = {{ title = ".title" }}
"""


class Bench:
    def __init__(self, api: FakeAPI, client: Client, target: Any, table: str) -> None:
        self.api, self.client, self.target, self.table = api, client, target, table

    def rows(self, kind: str) -> dict[str, Any]:
        """identifier -> the item stored (entities) or its title (the typed table)."""
        if kind == "typed":
            return {r["identifier"]: r["title"]
                    for r in self.target.read_rows(self.table, limit=10_000)}
        return {e["identifier"]: e["data"] for e in self.target.read("api", kind, limit=10_000)}

    def asked(self, path: str) -> list[dict[str, str]]:
        """The query of every GET of ``path`` so far (and forget them)."""
        return queries_asked(self.api, path)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres",
                                                               marks=pytest.mark.postgres)])
def bench(request, tmp_path_factory, redis_databases: RedisDatabases) -> Iterator[Bench]:
    tmp = tmp_path_factory.mktemp("deletions")
    suffix = uuid.uuid4().hex[:8]
    table = f"tomb_{suffix}"
    if request.param == "sqlite":
        from tasks.targets.sqlite import SqliteTarget

        db = tmp / "db.sqlite"
        spec, target, dsn = f'path = "{db}"', SqliteTarget(db), ""
    else:
        from tasks.targets.postgres import PostgresTarget
        from tests.unit.test_targets import postgres_dsn

        dsn, name = postgres_dsn(), f"sluice_tomb_{suffix}"
        spec = f'type = "postgres"\ndsn = "{dsn}"\ntable = "{name}"'
        target = PostgresTarget(dsn, table=name)
    with FakeAPI() as api, redis_databases.lease() as url:
        config = tmp / "sluice.toml"
        config.write_text(CONFIG.format(target=spec, url=api.url, table=table))
        workers = Workers(config=config, redis_url=url, log=tmp / "worker.log").start()
        client = Client(url)
        try:
            yield Bench(api, client, target, table)
        finally:
            client.close()
            workers.stop()
            target.close()
            if dsn:
                import psycopg

                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute(f"DROP TABLE IF EXISTS {name}, {name}_state, "
                                 f"{name}_watermarks, {table}")


@pytest.mark.parametrize("kind", ["ms", "typed"])
def test_tombstones_of_an_epoch_ms_incremental_read_delete_and_a_full_run_keeps_it_so(
        bench: Bench, kind: str):
    bench.api.set_timed_items(kind, 300, epoch_ms=True)
    first = bench.client.resync("api", kind)
    assert (first.state, first.items_written, first.items_deleted) == ("succeeded", 300, 0)
    assert all("since" not in q for q in bench.asked(f"/cursor/{kind}"))
    # The status line shows the epoch with its time: item 299 is at 00:04:59.
    assert f"{at_ms(299)} (2024-01-01T00:04:59Z)" in first.watermark

    bench.api.change(kind, [0, 1], when=1_000)
    bench.api.remove(kind, [5, 6, 7], when=1_000)
    second = bench.client.resync("api", kind)
    asked = bench.asked(f"/cursor/{kind}")
    # The lookback of 2m is 120000 in the watermark's milliseconds (not 120).
    assert {q["since"] for q in asked} == {str(at_ms(299) - 120_000)}
    assert second.state == "succeeded" and second.incremental
    assert second.items_fetched == 121 + 5  # 179..299 again, 2 changed, 3 tombstones
    assert (second.items_written, second.items_deleted, second.items_rejected) == (123, 3, 0)
    rows = bench.rows(kind)
    assert len(rows) == 297 and not {f"{kind}-5", f"{kind}-6", f"{kind}-7"} & set(rows)
    assert all("deleted" not in str(v) for v in rows.values())  # never stored as data
    assert f"{at_ms(1_000)} (2024-01-01T00:16:40Z)" in second.watermark

    full = bench.client.resync("api", kind, full=True)
    assert all("since" not in q for q in bench.asked(f"/cursor/{kind}"))
    assert (full.state, full.items_fetched, full.deleted) == ("succeeded", 297, 0)
    assert set(bench.rows(kind)) == set(rows)  # nothing comes back

    # A tombstone read again (a later incremental run's lookback) deletes nothing more, and
    # an item deleted and created again later is written again.
    with bench.api.server.lock:
        bench.api.state.items[kind][5] = {"id": f"{kind}-5", "title": "back", "n": 5,
                                          "updated_at": at_ms(2_000)}
    again = bench.client.resync("api", kind)
    assert (again.state, again.items_deleted) == ("succeeded", 0)
    assert f"{kind}-5" in bench.rows(kind) and len(bench.rows(kind)) == 298

