"""Child kinds with real workers: every parent a run writes fans out to its children, fetched
in parallel as tasks of the same run and written in batches of useful size; a full run deletes
the children no parent gives any more, an incremental run fans out only the parents that
changed and deletes nothing."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from integrations.fakeapi import FakeAPI
from tests.support.configs import (
    SINCE,
    comments_of,
    cursor_kind,
    rest_source,
    sqlite_target,
    toml,
)
from tests.support.workers import SLUICE, Client, Workers

pytestmark = pytest.mark.integration

def config_text(db: Path, url: str) -> str:
    return toml(sqlite_target(db),
                rest_source(url, "delete_threshold = 0.9", "max_concurrency = 8"),
                cursor_kind("post", SINCE, limit=100),
                comments_of("post", 'include_from_parent = ["id", "title"]'))


class Setup:
    def __init__(self, api: FakeAPI, workers: Workers, client: Client, db: Path) -> None:
        self.api, self.workers, self.client, self.db = api, workers, client, db

    def rows(self, kind: str) -> dict[str, dict]:
        with sqlite3.connect(self.db) as conn:
            return {i: json.loads(d) for i, d in conn.execute(
                "SELECT identifier, data FROM entities WHERE source = 'api' AND kind = ?",
                (kind,))}

    def parents_asked(self) -> list[str]:
        """The parents whose children were asked for (and forget the requests)."""
        with self.api.server.lock:
            got = [urlsplit(r[2]).path.split("/")[3] for r in self.api.state.log
                   if r[1] == "GET" and r[2].startswith("/sub/")]
            self.api.state.log.clear()
        return got


@pytest.fixture(scope="module")
def setup(tmp_path_factory, redis_url: str) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("children")
    url = redis_url
    with FakeAPI() as api:
        config = tmp / "sluice.toml"
        config.write_text(config_text(tmp / "db.sqlite", api.url))
        with Workers(config=config, redis_url=url, log=tmp / "worker.log") as workers:
            client = Client(url)
            try:
                yield Setup(api, workers, client, tmp / "db.sqlite")
            finally:
                client.close()


def test_children_of_2000_parents_are_fetched_in_parallel_and_written_in_batches(setup: Setup):
    posts = setup.api.set_timed_items("post", 2000)
    comments = setup.api.set_children("comment", posts, 3)
    run = setup.client.resync("api", "post", timeout=120)
    assert run.state == "succeeded", run
    assert run.kind == "post" and set(run.children) == {"comment"}  # one run record
    counts = run.children["comment"]
    assert counts["items_fetched"] == counts["items_written"] == 6000
    # One task per parent batch (20 of 100 parents) fetched their children, and each wrote
    # them as one batch of 300: not 2,000 batches of 3.
    assert counts["batches_enqueued"] == counts["batches_done"] == 20 + 20
    assert run.items_written == 2000 + 6000 and run.own("items_written") == 2000
    assert sorted(setup.parents_asked()) == sorted(str(p["id"]) for p in posts for _ in (1, 2))
    rows = setup.rows("comment")
    assert set(rows) == {c["id"] for c in comments}
    first = rows["comment-post-7-0"]
    assert first["_parent_id"] == "post-7" and first["_parent_title"] == "post number 7"
    assert len(setup.rows("post")) == 2000


def test_an_incremental_run_fans_out_only_the_parents_that_changed(setup: Setup):
    setup.api.change("post", [3, 1500], when=500_000)
    setup.api.state.children["comment"]["post-3"].append({"id": "comment-post-3-new",
                                                          "body": "a new one"})
    run = setup.client.resync("api", "post", timeout=120)
    assert run.state == "succeeded" and run.incremental and run.deleted == 0
    # The watermark is post 1999's time: posts 3 and 1500 changed after it, 1999 is at it.
    assert sorted(set(setup.parents_asked())) == ["post-1500", "post-1999", "post-3"]
    assert "comment-post-3-new" in setup.rows("comment")


def test_a_full_run_deletes_the_children_no_parent_gives_any_more(setup: Setup):
    del setup.api.state.children["comment"]["post-5"][1:]  # two of its three comments go
    done = subprocess.run([*SLUICE, "run", "api", "--kind", "comment", "--full", "--wait"],
                          env=setup.workers.env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "api/post" in done.stdout  # a child kind runs with its parent
    rows = setup.rows("comment")
    assert "comment-post-5-0" in rows
    assert "comment-post-5-1" not in rows and "comment-post-5-2" not in rows
    assert len(rows) == 6000 + 1 - 2


def test_a_parent_whose_children_page_in_circles_is_rejected_alone(setup: Setup):
    # One post's comments answer the same cursor for ever: that post is rejected with the
    # reason, the run ends, every other post's comments land, and none is deleted.
    setup.api.fail("/sub/comment/post-1999", 200, times=10_000,
                   body='{"data": [{"id": "loop"}], "next_cursor": "2"}')
    run = setup.client.resync("api", "post", timeout=120, full=True)
    setup.api.state.faults.clear()
    assert run.children["comment"]["items_rejected"] == 1, run
    # Nothing is deleted of a kind whose children were not all read: the run is partial.
    assert run.state == "partial" and "comment" in run.deletion_refused, run
    listed = subprocess.run([*SLUICE, "failed", "list", run.run_id], env=setup.workers.env,
                            capture_output=True, text=True, timeout=60).stdout
    assert "PagingCycle" in listed and "post-1999" in listed


def test_children_paging_that_may_miss_some_deletes_nothing(setup: Setup):
    # An empty page that still hands out a cursor: the paging may have stopped short.
    setup.api.fail("/sub/comment/post-1998", 200, times=10_000,
                   body='{"data": [], "next_cursor": "2"}')
    before = setup.rows("comment")
    done = subprocess.run([*SLUICE, "run", "api", "--full", "--wait", "--json"],
                          env=setup.workers.env, capture_output=True, text=True, timeout=180)
    setup.api.state.faults.clear()
    run = json.loads(done.stdout.splitlines()[-1])
    assert run["state"] == "partial" and "paging may be incomplete" in run["reason"], run
    assert set(setup.rows("comment")) == set(before)  # post-1998's were not deleted
