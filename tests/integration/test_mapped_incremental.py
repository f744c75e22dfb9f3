"""Mappings and incremental kinds, with real workers: a watermark belongs to the mapping it
was read with, so a mapping added, changed or removed makes the next run read everything
once; the kind's rows left in ``entities`` go once its table holds it; ``sluice entities``
counts and reads the table."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from integrations.fakeapi import at
from tests.support.asked import queries_asked
from tests.support.configs import (
    QUICK_RETRIES,
    SINCE_2M,
    cursor_kind,
    rest_source,
    sqlite_target,
    toml,
)
from tests.support.rewritten import Rewritten, rewritten
from tests.support.workers import SLUICE

pytestmark = pytest.mark.integration

def config_text(db: Path, url: str, mapping: str, few: str) -> str:
    return toml(sqlite_target(db), rest_source(url, "delete_threshold = 0.5", QUICK_RETRIES),
                cursor_kind("inc", SINCE_2M, mapping, limit=100),
                cursor_kind("few", SINCE_2M, few, limit=100))

MAPPED = """[sources.api.kinds.inc.mapping]
properties = {{ title = ".title", updated = ".updated_at"{more} }}
"""


class Bench(Rewritten):
    def write(self, mapping: str = "", few: str = "") -> None:
        self.config.write_text(config_text(self.db, self.api.url, mapping, few))

    def query(self, sql: str, *args: object) -> list[tuple]:
        with sqlite3.connect(self.db) as conn:
            return conn.execute(sql, args).fetchall()

    def in_entities(self) -> int:
        return self.query("SELECT COUNT(*) FROM entities WHERE kind = 'inc'")[0][0]

    def table(self) -> dict[str, tuple]:
        return {r[0]: r[1:] for r in self.query("SELECT identifier, title FROM api_inc")}

    def asked(self) -> list[dict[str, str]]:
        """The query of every GET of the kind so far (and forget them)."""
        return queries_asked(self.api, "/cursor/inc")

    def sluice(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "SLUICE_REDIS_URL": self.workers.redis_url,
               "SLUICE_CONFIG": str(self.config)}
        return subprocess.run([*SLUICE, *args], env=env, capture_output=True, text=True,
                              timeout=120)


@pytest.fixture(scope="module")
def bench(tmp_path_factory, redis_url: str) -> Iterator[Bench]:
    tmp = tmp_path_factory.mktemp("mapped-incremental")
    url = redis_url
    redis.Redis.from_url(url).flushdb()
    with rewritten(Bench, tmp, url) as b:
        yield b


def test_a_mapping_added_changed_or_removed_reads_everything_once_and_moves_the_kind(
        bench: Bench):
    items = bench.api.set_timed_items("inc", 300)
    first = bench.client.resync("api", "inc")
    assert (first.state, first.incremental, first.items_written) == ("succeeded", False, 300)
    assert bench.in_entities() == 300
    bench.api.change("inc", list(range(10)), when=10_000)
    second = bench.client.resync("api", "inc")  # unmapped and incremental, as before
    assert second.incremental and second.items_fetched == 121 + 10
    bench.asked()

    # A mapping added: the watermark was read without it, so everything is read again (not
    # only since the watermark), into the table; the kind's rows in entities are gone.
    bench.api.change("inc", [20], when=20_000)
    bench.write(MAPPED.format(more=""))
    added = bench.client.resync("api", "inc")
    assert added.state == "succeeded", added
    assert all("since" not in q for q in bench.asked())
    assert (added.incremental, added.items_fetched, added.items_written) == (False, 300, 300)
    assert added.moved == 300 and added.deleted == 0
    assert bench.in_entities() == 0
    assert bench.table() == {i["id"]: (i["title"],) for i in items}
    assert bench.query("SELECT value FROM sluice_watermarks WHERE kind = 'inc' AND part"
                       " = 'null'") == [(f'"{at(20_000)}"',)]

    # The same mapping: the watermark belongs to it, the next run reads only the window.
    bench.api.change("inc", [30], when=30_000)
    again = bench.client.resync("api", "inc")
    assert again.incremental and again.items_fetched == 2  # 20 (the lookback) and 30
    assert {q["since"] for q in bench.asked()} == {at(20_000 - 120)}

    # The mapping changed: everything once more, every row with the new column.
    bench.write(MAPPED.format(more=', n = { jq = ".n", type = "integer" }'))
    changed = bench.client.resync("api", "inc")
    assert (changed.state, changed.incremental, changed.items_fetched) == ("succeeded", False,
                                                                           300)
    assert all("since" not in q for q in bench.asked())
    assert changed.moved == 0
    assert bench.query("SELECT COUNT(*) FROM api_inc WHERE n IS NOT NULL") == [(300,)]

    # sluice entities: the table's count, and the kind's rows read from it.
    listed = bench.sluice("entities")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == ["api/inc: 300 in table api_inc"]
    read = bench.sluice("entities", "api", "inc", "--limit", "2")
    assert read.returncode == 0, read.stderr
    rows = [json.loads(line) for line in read.stdout.splitlines()]
    first_two = sorted(items, key=lambda i: i["id"])[:2]
    assert [(r["table"], r["row"]["identifier"], r["row"]["title"], r["row"]["n"])
            for r in rows] == [("api_inc", i["id"], i["title"], i["n"]) for i in first_two]

    # The mapping removed: back to entities, read whole once; the table stays as it was.
    bench.write()
    removed = bench.client.resync("api", "inc")
    assert (removed.state, removed.incremental, removed.items_written) == ("succeeded", False,
                                                                           300)
    assert all("since" not in q for q in bench.asked())
    assert bench.in_entities() == 300
    assert bench.sluice("entities").stdout.splitlines() == ["api/inc: 300", "table api_inc: 300"]
    after = bench.client.resync("api", "inc")
    assert after.incremental  # and incremental again after that


def test_a_table_that_got_too_few_rows_keeps_the_entities_and_the_next_run_reads_all_again(
        bench: Bench):
    bench.api.set_timed_items("few", 100)
    assert bench.client.resync("api", "few").state == "succeeded"
    with bench.api.server.lock:  # the API now answers with a tenth of what it had
        del bench.api.state.items["few"][10:]
    bench.write(few="[sources.api.kinds.few.mapping]\nproperties = { title = \".title\" }")
    refused = bench.client.resync("api", "few")
    assert (refused.state, refused.incremental, refused.moved) == ("partial", False, 0)
    assert "refused to delete the 100 rows of few left in entities" in refused.reason
    assert "wrote 10 rows into api_few" in refused.reason
    assert bench.query("SELECT COUNT(*) FROM entities WHERE kind = 'few'") == [(100,)]
    assert bench.query("SELECT part FROM sluice_watermarks WHERE kind = 'few'") == []
    again = bench.client.resync("api", "few")  # everything again, not since a watermark
    assert (again.state, again.incremental, again.items_fetched) == ("partial", False, 10)
    bench.write()
