"""The next_url and keyset paginators through real workers on real Redis: every item lands, a
cycle fails the run naming it, a next URL on another origin is refused (or fetched without the
source's credentials where allowed), and a truncated paging deletes nothing."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from integrations.fakeapi import FakeAPI, make_items
from tasks.targets.sqlite import SqliteTarget
from tests.support.configs import QUICK_RETRIES, api_and_open, sqlite_target, toml
from tests.support.twoorigins import TwoOrigins, two_origins
from tests.support.workers import ROOT, SLUICE

pytestmark = pytest.mark.integration

TOKEN = "tok-77ab2e-paginators-never-log-me"

def keyset_kind(source: str, kind: str) -> str:
    """Stripe's paging: ``starting_after`` the last id while ``has_more``, 20 a page."""
    return f"""[sources.{source}.kinds.{kind}]
path = "/keyset/{kind}"
items = "data"
[sources.{source}.kinds.{kind}.paginator]
type = "keyset"
param = "starting_after"
field = "id"
has_more_path = "has_more"
limit = 20
"""


def kinds(source: str) -> str:
    """The kinds that ``api`` and ``open`` both have."""
    return f"""
[sources.{source}.kinds.nu]         # the next URL in the body, under a key with a dot
path = "/nexturl/nu"
items = "value"
paginator = {{ type = "next_url", path = "@odata.nextLink", limit_param = "top", limit = 20 }}

[sources.{source}.kinds.nurel]      # a relative next URL, at a dot path
path = "/nexturl/nurel"
items = "value"
paginator = {{ type = "next_url", path = "links.next", limit_param = "top", limit = 20 }}

[sources.{source}.kinds.nh]         # the next URL in a header (Kinto's Next-Page)
path = "/nexthdr/nh"
items = "data"
paginator = {{ type = "next_url", header = "Next-Page", limit_param = "_limit", limit = 20 }}

{keyset_kind(source, "ks")}
# the same, for the truncation case (rows of its own)
{keyset_kind(source, "kstr")}

[sources.{source}.kinds.ksshort]    # keyset without has_more: a short page ends it
path = "/keyset/ksshort"
items = "data"
paginator = {{ type = "keyset", param = "starting_after", field = "id", limit = 20 }}
"""


def write_config(path: Path, *, api: FakeAPI, other: FakeAPI, db: Path) -> Path:
    text = toml(sqlite_target(db), api_and_open(api.url, other.url, api_lines=(QUICK_RETRIES,)),
                kinds("api"), kinds("open"))
    path.write_text(text)
    return path


class Setup(TwoOrigins):
    def ids(self, source: str, kind: str) -> set[str]:
        with sqlite3.connect(self.db) as conn:
            return {i for (i,) in conn.execute(
                "SELECT identifier FROM entities WHERE source = ? AND kind = ?", (source, kind))}

    def seed(self, kind: str, ids: list[str]) -> None:
        """Rows a clean run wrote earlier."""
        target = SqliteTarget(self.db)
        target.upsert([{"identifier": i, "kind": kind, "source": "api", "data": {"id": i}}
                       for i in ids], run_id="seed", run_seq=0)
        target.close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, redis_url: str) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("paginators")
    env = {"SLUICE_TEST_TOKEN": TOKEN, "SLUICE_PRODUCER_SLICE_PAGES": "2"}
    with two_origins(Setup, tmp, redis_url, write_config, env=env, flush=True) as setup:
        yield setup


@pytest.fixture(autouse=True)
def fresh(setup: Setup) -> None:
    """Each case scripts its own faults."""
    for api in (setup.api, setup.other):
        with api.server.lock:
            api.state.faults.clear()
            api.state.log.clear()


@pytest.mark.parametrize("kind", ["nu", "nurel", "nh", "ks", "ksshort"])
def test_every_item_lands_and_the_limit_goes_on_the_first_request_only(setup: Setup,
                                                                       kind: str):
    items = setup.api.set_items(kind, 110)  # 6 pages of 20, the last short
    setup.api.state.params_seen.clear()
    run = setup.client.resync("api", kind)
    assert (run.state, run.items_written, run.pages) == ("succeeded", 110, 6), run
    assert setup.ids("api", kind) == {i["id"] for i in items}
    asked = setup.api.state.params_seen
    assert len(asked) == 6
    if kind.startswith("ks"):  # keyset: the kind's request each time, plus the last id
        assert [q.get("starting_after") for q in asked] == [
            None, *(f"{kind}-{n}" for n in (19, 39, 59, 79, 99))]
    else:  # as the API gave them: its own page size and position after the first request
        size, where = ("top", "skip") if kind.startswith("nu") else ("_limit", "_token")
        assert [q.get(where) for q in asked] == [None, "20", "40", "60", "80", "100"]
        assert all(q[size] == "20" for q in asked)


def test_a_next_url_that_leads_back_fails_the_run_naming_it(setup: Setup):
    items = setup.api.set_items("nu", 100)
    back = f"{setup.api.url}/nexturl/nu?top=20&skip=20"  # page 3 leads back to page 2
    setup.api.fail("/nexturl/nu", 200, times=20, when={"skip": "40"},
                   body=json.dumps({"value": items[40:60], "@odata.nextLink": back}))
    run = setup.client.resync("api", "nu")
    assert run.state == "failed", run
    assert "PagingCycle" in run.reason and "skip=20" in run.reason, run.reason
    assert run.pages <= 5


def test_a_keyset_api_that_ignores_the_key_fails_the_run_naming_it(setup: Setup):
    items = setup.api.set_items("ks", 100)
    setup.api.fail("/keyset/ks", 200, times=20, when={"starting_after": "ks-19"},
                   body=json.dumps({"data": items[:20], "has_more": True}))
    run = setup.client.resync("api", "ks")
    assert run.state == "failed", run
    assert "PagingCycle" in run.reason, run.reason
    assert "'ks-19'" in run.reason or "very items of page 1" in run.reason, run.reason


def script_away(setup: Setup, kind: str) -> list[dict]:
    """Page 1 of /nexturl/KIND names page 2 on the other API (another origin)."""
    items = make_items(kind, 100)
    setup.other.state.items[kind] = items
    setup.other.state.auth_seen.clear()
    setup.other.state.log.clear()
    away = f"{setup.other.url}/nexturl/{kind}?top=20&skip=20"
    setup.api.fail(f"/nexturl/{kind}", 200,
                   body=json.dumps({"value": items[:20], "@odata.nextLink": away}))
    return items


def test_a_next_url_to_another_origin_fails_the_run_and_sends_nothing_there(setup: Setup):
    script_away(setup, "nu")
    run = setup.client.resync("api", "nu")
    assert run.state == "failed", run
    assert "ForeignOrigin" in run.reason and setup.other.url in run.reason
    assert "allow_origins" in run.reason
    assert setup.other.requests("/nexturl/") == []


def test_an_allowed_origin_is_followed_without_the_source_credentials(setup: Setup):
    items = script_away(setup, "nu")
    setup.api.state.auth_seen.clear()
    run = setup.client.resync("open", "nu")
    assert (run.state, run.items_written) == ("succeeded", 100), run
    assert len(setup.other.requests("/nexturl/nu")) == 4  # pages 2..5, there
    assert setup.other.state.auth_seen == set()
    assert setup.api.state.auth_seen == {f"Bearer {TOKEN}"}
    assert setup.ids("open", "nu") == {i["id"] for i in items}


def test_has_more_true_on_an_empty_page_ends_partial_and_deletes_nothing(setup: Setup):
    items = setup.api.set_items("kstr", 100)
    ids = [i["id"] for i in items]
    setup.seed("kstr", [*ids, "kstr-gone"])
    # The last page says there is more; the next one is empty.
    setup.api.fail("/keyset/kstr", 200, when={"starting_after": "kstr-79"},
                   body=json.dumps({"data": items[80:], "has_more": True}))
    setup.api.fail("/keyset/kstr", 200, when={"starting_after": "kstr-99"},
                   body=json.dumps({"data": [], "has_more": True}))
    run = setup.client.resync("api", "kstr")
    assert (run.state, run.items_written, run.deleted) == ("partial", 100, 0), run
    assert "an empty page though 'has_more' is true" in run.deletion_refused
    assert "kstr-gone" in setup.ids("api", "kstr")
    # The same API, telling the truth: the clean run deletes the row it no longer lists.
    run = setup.client.resync("api", "kstr")
    assert (run.state, run.deleted) == ("succeeded", 1), run
    assert setup.ids("api", "kstr") == set(ids)


def test_preview_reads_the_first_page_of_a_next_url_kind(setup: Setup):
    setup.api.set_items("nh", 50)
    env = {**os.environ, "SLUICE_TEST_TOKEN": TOKEN, "SLUICE_REDIS_URL": setup.workers.redis_url}
    done = subprocess.run([*SLUICE, "preview", "api", "nh", "--limit", "1", "--config",
                           str(setup.workers.config)], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "20 items on the first page" in done.stdout.splitlines()[0]
