"""Incremental kinds with real workers: the first run reads everything, later runs only what
changed since the watermark (minus the lookback), the watermark moves only when a run ends
clean, and it lives in the target, so losing Redis loses nothing."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from integrations.fakeapi import FakeAPI, at
from tests.support.asked import queries_asked
from tests.support.configs import (
    QUICK_RETRIES,
    SINCE_2M,
    cursor_kind,
    rest_source,
    sqlite_target,
    toml,
)
from tests.support.workers import SLUICE, Client, Workers

pytestmark = pytest.mark.integration

NEWEST = """[sources.api.kinds.newest]
path = "/link/newest"
params = { sort = "updated", direction = "desc" }
paginator = { type = "link", limit = 50 }
incremental = { cursor_path = "updated_at", stop_when_older = true }
"""


def config_text(db: Path, url: str) -> str:
    return toml(sqlite_target(db), rest_source(url, "delete_threshold = 0.9", QUICK_RETRIES),
                cursor_kind("inc", SINCE_2M, limit=100), cursor_kind("again", SINCE_2M, limit=100),
                NEWEST)


class Bench:
    def __init__(self, api: FakeAPI, workers: Workers, client: Client, db: Path) -> None:
        self.api, self.workers, self.client, self.db = api, workers, client, db

    def rows(self, kind: str) -> dict[str, str]:
        with sqlite3.connect(self.db) as conn:
            return {i: t for i, t in conn.execute(
                "SELECT identifier, json_extract(data, '$.title') FROM entities"
                " WHERE source = 'api' AND kind = ?", (kind,))}

    def watermarks(self, kind: str) -> dict[str, str]:
        with sqlite3.connect(self.db) as conn:
            return dict(conn.execute("SELECT part, value FROM sluice_watermarks"
                                     " WHERE source = 'api' AND kind = ?", (kind,)).fetchall())

    def asked(self, path: str) -> list[dict[str, str]]:
        """The query of every GET of ``path`` so far (and forget them)."""
        return queries_asked(self.api, path)


def start(tmp: Path, api: FakeAPI, url: str) -> tuple[Workers, Client, Path]:
    db = tmp / "db.sqlite"
    config = tmp / "sluice.toml"
    config.write_text(config_text(db, api.url))
    workers = Workers(config=config, redis_url=url, log=tmp / "worker.log").start()
    return workers, Client(url), db


@pytest.fixture(scope="module")
def bench(tmp_path_factory, redis_url: str) -> Iterator[Bench]:
    tmp = tmp_path_factory.mktemp("incremental")
    url = redis_url
    with FakeAPI() as api:
        workers, client, db = start(tmp, api, url)
        try:
            yield Bench(api, workers, client, db)
        finally:
            client.close()
            workers.stop()


def test_the_next_run_reads_only_what_changed_and_the_target_matches_the_api(bench: Bench):
    items = bench.api.set_timed_items("inc", 1000)
    first = bench.client.resync("api", "inc")
    assert (first.state, first.incremental, first.items_written) == ("succeeded", False, 1000)
    assert all("since" not in q for q in bench.asked("/cursor/inc"))  # the first run: all
    assert bench.watermarks("inc") == {"null": f'"{at(999)}"'}

    bench.api.change("inc", list(range(200)), when=100_000)  # 200 change ...
    bench.api.add("inc", 50, when=100_000)  # ... and 50 are new
    second = bench.client.resync("api", "inc")
    asked = bench.asked("/cursor/inc")
    # Only what changed since the watermark minus the 2 minute lookback: items 879..999 again
    # (the overlap: `since` is inclusive), the 200 changed, the 50 new; 4 requests, not 11.
    assert {q["since"] for q in asked} == {at(999 - 120)}
    assert len(asked) == 4
    assert second.state == "succeeded" and second.incremental
    assert second.items_fetched == 121 + 200 + 50 and second.deleted == 0
    assert "incremental run" in second.deletion_skipped
    rows = bench.rows("inc")
    assert rows == {i["id"]: i["title"] for i in items}  # the target matches the API, once each
    assert len(rows) == 1050
    assert bench.watermarks("inc") == {"null": f'"{at(100_000)}"'}
    assert at(100_000) in second.watermark and "state table" in second.watermark


def test_a_run_that_fails_halfway_leaves_the_watermark_and_the_next_reads_the_window(
        bench: Bench):
    bench.api.set_timed_items("again", 500)
    assert bench.client.resync("api", "again").state == "succeeded"
    kept = bench.watermarks("again")
    bench.asked("/cursor/again")
    bench.api.change("again", list(range(300)), when=50_000)
    since = at(499 - 120)
    bench.api.fail("/cursor/again", 400, when={"cursor": "200"})  # page 3 of the window
    failed = bench.client.resync("api", "again")
    assert failed.state == "failed" and failed.incremental
    assert bench.watermarks("again") == kept  # nothing is skipped by the next run
    assert {q["since"] for q in bench.asked("/cursor/again")} == {since}
    again = bench.client.resync("api", "again")
    assert again.state == "succeeded"
    assert {q["since"] for q in bench.asked("/cursor/again")} == {since}  # the same window
    assert again.items_fetched == 121 + 300
    assert all("changed at 50000" in t for i, t in bench.rows("again").items()
               if int(i.split("-")[1]) < 300)
    assert bench.watermarks("again") == {"null": f'"{at(50_000)}"'}


def test_newest_first_paging_stops_at_the_first_item_older_than_the_watermark(bench: Bench):
    bench.api.set_timed_items("newest", 400)
    first = bench.client.resync("api", "newest")
    assert (first.state, first.items_written) == ("succeeded", 400)
    assert len(bench.asked("/link/newest")) == 8
    bench.api.change("newest", [5, 17, 300], when=9_000)
    second = bench.client.resync("api", "newest")
    asked = bench.asked("/link/newest")
    assert second.state == "succeeded" and second.incremental
    # The three changed ones come first, then the newest unchanged one (at the watermark:
    # kept, as `since` would keep it); the next one is older and ends the paging: four
    # items, nothing deleted, and the paging goes no further than the one page it may have
    # asked for ahead of time (8 pages before).
    assert len(asked) <= 2 and all(q.get("sort") == "updated" for q in asked)
    assert second.items_fetched == 4 and second.deleted == 0
    assert "changed at 9000" in bench.rows("newest")["newest-300"]


def test_a_full_run_reads_everything_and_deletes_what_the_api_no_longer_has(bench: Bench):
    # The API now holds 250 of the 1,050 items the target has: an incremental run cannot
    # see what is gone; a full one can.
    items = bench.api.set_timed_items("inc", 250)
    bench.asked("/cursor/inc")
    done = subprocess.run([*SLUICE, "run", "api", "--kind", "inc", "--full", "--wait"],
                          env=bench.workers.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "(full)" in done.stdout
    assert all("since" not in q for q in bench.asked("/cursor/inc"))
    assert set(bench.rows("inc")) == {i["id"] for i in items}  # 800 of 1,050 deleted


def test_the_watermark_outlives_redis_with_a_database_target(tmp_path: Path,
                                                            own_redis_url: str):
    url = own_redis_url
    with FakeAPI() as api:
        api.set_timed_items("inc", 300)
        workers, client, _ = start(tmp_path, api, url)
        try:
            assert client.resync("api", "inc").state == "succeeded"
        finally:
            workers.stop()
        client.redis.flushdb()  # Redis lost everything: runs, locks, the queue
        client.close()
        api.change("inc", [0, 1], when=70_000)
        api.state.log.clear()
        workers, client, _ = start(tmp_path, api, url)
        try:
            run = client.resync("api", "inc")
        finally:
            client.close()
            workers.stop()
        asked = [dict(parse_qsl(urlsplit(r[2]).query)) for r in api.requests("/cursor/inc")]
    assert run.state == "succeeded" and run.incremental  # not a silent full read
    assert {q["since"] for q in asked} == {at(299 - 120)}
    assert run.items_fetched == 121 + 2
