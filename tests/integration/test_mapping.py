"""jq mappings into typed tables, with real workers: the fields chosen, typed, in a table per
kind; every item that did not fit is rejected alone with why; tables evolve while workers
write; frozen ones refuse; stale deletion works on them; preview writes nothing."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.configs import cursor_kind, rest_source, sqlite_target, toml
from tests.support.rewritten import Rewritten, rewritten
from tests.support.workers import SLUICE

pytestmark = pytest.mark.integration

ISSUE_MAPPING = """[sources.api.kinds.issue.mapping]
selector = '.title != "issue number 13"'
relations = { project = ".project.key" }
[sources.api.kinds.issue.mapping.properties]
title = ".title"
n = { jq = ".n", type = "integer" }
updated = ".updated_at"
even = ".n % 2 == 0"
size = ".size"
"""

THREAD_MAPPING = """[sources.api.kinds.thread.mapping]
items_to_parse = ".posts"
identifier = '"\\(.id)/\\(.item.n)"'
properties = { body = ".item.body", thread = ".id" }
table = "thread_posts"
"""


def config_text(db: Path, url: str, grow: str, frozen: str) -> str:
    return toml(
        sqlite_target(db), rest_source(url, "delete_threshold = 0.9", "max_rejected = 0.05"),
        cursor_kind("issue", ISSUE_MAPPING), cursor_kind("thread", THREAD_MAPPING),
        cursor_kind("grow", "[sources.api.kinds.grow.mapping]",
                    f'properties = {{ title = ".title"{grow} }}', limit=20),
        cursor_kind("frozen", "[sources.api.kinds.frozen.mapping]", 'schema = "freeze"',
                    f'properties = {{ title = ".title"{frozen} }}'))


class Setup(Rewritten):
    def write(self, *, grow: str = "", frozen: str = "") -> None:
        self.config.write_text(config_text(self.db, self.api.url, grow, frozen))

    def rows(self, table: str) -> dict[str, dict]:
        with sqlite3.connect(self.db) as conn:
            conn.row_factory = sqlite3.Row
            return {r["identifier"]: dict(r) for r in conn.execute(f"SELECT * FROM {table}")}

    def types(self, table: str) -> dict[str, str]:
        with sqlite3.connect(self.db) as conn:
            return {r[1]: r[2] for r in conn.execute(f"PRAGMA table_info({table})")}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, redis_url: str) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("mapping")
    url = redis_url
    with rewritten(Setup, tmp, url) as s:
        yield s


def test_a_mapped_kind_lands_typed_in_its_own_table_and_bad_items_alone_are_rejected(
        setup: Setup):
    items = setup.api.set_timed_items("issue", 120)
    for i, item in enumerate(items):
        item["project"] = {"key": f"P{i % 3}"}
        item["size"] = 1.5 * i
    items[7]["n"] = 7.5  # does not fit integer
    items[9]["project"] = 5  # .project.key on a number: jq fails for this item
    run = setup.client.resync("api", "issue")
    assert run.state == "succeeded", run
    assert (run.items_written, run.items_rejected, run.items_skipped) == (117, 2, 1)
    rows = setup.rows("api_issue")
    assert len(rows) == 117 and "issue-13" not in rows  # the selector skipped it
    assert rows["issue-4"]["n"] == 4 and rows["issue-4"]["even"] == 1
    assert rows["issue-4"]["project"] == "P1" and rows["issue-4"]["size"] == 6.0
    assert rows["issue-4"]["updated"].startswith("2024-01-01T00:00:04")
    assert json.loads(rows["issue-4"]["_raw"])["title"] == "issue number 4"
    types = setup.types("api_issue")
    assert {types[c] for c in ("title", "project")} == {"TEXT"}
    assert types["n"] == "INTEGER" and types["size"] == "REAL"
    listed = subprocess.run([*SLUICE, "failed", "list", run.run_id], env=setup.workers.env,
                            capture_output=True, text=True, timeout=60).stdout
    assert "issue issue-7: 7.5 does not fit integer" in listed
    assert "issue issue-9: relations.project: Cannot index number" in listed


def test_items_to_parse_makes_many_rows_of_one_item(setup: Setup):
    setup.api.state.items["thread"] = [
        {"id": f"t{i}", "posts": [{"n": j, "body": f"post {j} of t{i}"} for j in range(3)]}
        for i in range(10)]
    run = setup.client.resync("api", "thread")
    assert run.state == "succeeded" and run.items_written == 30
    rows = setup.rows("thread_posts")
    assert rows["t4/2"]["body"] == "post 2 of t4" and rows["t4/2"]["thread"] == "t4"


def test_a_new_property_adds_a_column_while_two_worker_processes_write(setup: Setup):
    setup.api.set_items("grow", 600)
    assert setup.client.resync("api", "grow").state == "succeeded"
    # The run is under way (page 3 is held) when sluice.toml gains the property; the pages
    # after it are written once the workers took the edit (at their next task).
    held = setup.api.hold("/cursor/grow", after=2)
    start = setup.client.start("api", "grow")
    try:
        assert held.arrived.wait(60), "the run never asked for page 3"
        setup.write(grow=', n = ".n"')
    finally:
        held.release()
    run = setup.client.wait(start.run_id, timeout=90)
    assert run.state == "succeeded", run
    rows = setup.rows("api_grow")
    assert "n" in setup.types("api_grow") and len(rows) == 600
    assert any(r["n"] is not None for r in rows.values())


def test_a_frozen_table_refuses_a_new_column_in_check_and_in_the_run(setup: Setup):
    setup.api.set_items("frozen", 60)
    assert setup.client.resync("api", "frozen").state == "succeeded"
    setup.write(frozen=', n = ".n"')
    check = subprocess.run([*SLUICE, "check"], env=setup.workers.env, capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 2 and "frozen" in check.stderr and "n" in check.stderr
    run = setup.client.resync("api", "frozen")
    assert run.state == "failed"
    listed = subprocess.run([*SLUICE, "failed", "list", run.run_id], env=setup.workers.env,
                            capture_output=True, text=True, timeout=60).stdout
    assert "SchemaFrozen" in listed and "api_frozen" in listed
    setup.write()
    assert "n" not in setup.types("api_frozen")


def test_stale_rows_of_a_typed_table_are_deleted_within_the_guard(setup: Setup):
    items = setup.api.set_timed_items("issue", 100)
    del items[90:]
    run = setup.client.resync("api", "issue")
    # 117 rows before (120 but the 2 rejected and the 1 skipped); items 90-119 are gone.
    assert run.state == "succeeded" and run.deleted == 30, run
    assert set(setup.rows("api_issue")) == {i["id"] for i in items if i["id"] != "issue-13"}


def test_preview_prints_rows_and_rejections_and_writes_nothing(setup: Setup, tmp_path: Path):
    items = setup.api.set_timed_items("issue", 30)
    items[2]["n"] = 2.5
    empty = tmp_path / "never.db"
    config = (setup.tmp / "sluice.toml").read_text().replace(str(setup.db), str(empty))
    (tmp_path / "sluice.toml").write_text(config)
    done = subprocess.run([*SLUICE, "preview", "api", "issue", "--limit", "2", "--config",
                           str(tmp_path / "sluice.toml")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "30 items on the first page -> 28 rows into api_issue, 1 rejected, 1 skipped" \
        in lines[0]
    assert lines[1].startswith("columns: identifier, title (text), n (integer)")
    assert lines[2].startswith('{"identifier": "issue-0", "title": "issue number 0"')
    assert any("issue issue-2: 2.5 does not fit integer" in line for line in lines)
    assert not empty.exists()
