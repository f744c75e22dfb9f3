"""Trust, against a hostile API, with real workers on real Redis: nothing live is deleted, no
token leaves its origin or lands in logs and Redis, and every run ends, with a reason.

Each test reproduces a case that once went wrong (issue 8). The source keeps the default
deletion guard (20%) and max_rejected (1%); producer slices of 3 pages, so runs resume from
their checkpoints all the time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from integrations.fakeapi import FakeAPI, make_items
from tasks import messages
from tasks.operator.redisserver import RedisServer
from tasks.runs.progress import Run
from tasks.runs.record import PageRecord
from tasks.targets.sqlite import SqliteTarget
from tests.support.configs import api_and_open, cursor_kind, offset_kind, sqlite_target, toml
from tests.support.twoorigins import TwoOrigins, two_origins
from tests.support.workers import ROOT, SLUICE, Client, Workers, cursor_config

pytestmark = pytest.mark.integration

TOKEN = "tok-8d1e55-trust-never-log-me"
KEY = "key-5c0ffee-in-the-query"


def kinds(source: str) -> str:
    """The kinds that ``api`` and ``open`` both have."""
    return f"""
[sources.{source}.kinds.nolink]     # an API that sends Link only when asked for a page
path = "/linkq/nolink"
paginator = {{ type = "link", limit = 500 }}

[sources.{source}.kinds.paged]      # the same API, with the page parameter that it needs
path = "/linkq/paged"
params = {{ page = 1 }}
paginator = {{ type = "link", limit = 500 }}

# "under": offset paging whose total lies
{offset_kind("under", limit=500, source=source)}

[sources.{source}.kinds.away]
path = "/link/away"
paginator = {{ type = "link", limit = 50 }}

[sources.{source}.kinds.keyed]
path = "/link/keyed"
params = {{ api_key = "${{SLUICE_TEST_KEY}}" }}
paginator = {{ type = "link", limit = 50 }}

[sources.{source}.kinds.lcyc]
path = "/link/lcyc"
paginator = {{ type = "link", limit = 50 }}

[sources.{source}.kinds.lastlink]   # Link pages whose rel="last" is scripted
path = "/link/lastlink"
paginator = {{ type = "link", limit = 10 }}

# "over": offset paging whose total over-reports
{offset_kind("over", limit=10, source=source)}
{cursor_kind("endless", limit=100, source=source)}
{cursor_kind("wrongid", 'id = "key"', limit=100, source=source)}"""

CURSOR_KINDS = ["late", "ccyc", "slow", "deep", "huge", "surr", "weird", "big", "stale",
                "nested", "emptycur", "nan"]


def write_config(path: Path, *, api: FakeAPI, other: FakeAPI, db: Path) -> Path:
    text = toml(
        sqlite_target(db),
        api_and_open(api.url, other.url,
                     api_lines=("http = { retries = 1, backoff = 0.05, max_backoff = 0.1,"
                                " deadline = 2 }", "max_batch_items = 200"),
                     open_lines=("max_pages = 50",)),
        kinds("api"), kinds("open"),
        *(cursor_kind(kind, limit=500 if kind == "big" else 100) for kind in CURSOR_KINDS))
    path.write_text(text)
    return path


class Trust(TwoOrigins):
    def ids(self, kind: str) -> set[str]:
        with sqlite3.connect(self.db) as conn:
            return {i for (i,) in conn.execute(
                "SELECT identifier FROM entities WHERE kind = ?", (kind,))}

    def seed(self, kind: str, count: int) -> None:
        """Rows a clean run wrote earlier (stamped as run 0)."""
        target = SqliteTarget(self.db)
        target.upsert([{"identifier": f"{kind}-{i}", "kind": kind, "source": "api",
                        "data": {"id": f"{kind}-{i}"}} for i in range(count)],
                      run_id="seed", run_seq=0)
        target.close()

    def resync_deleting_nothing(self, kind: str, refused: str, kept: int) -> Run:
        """Resync ``kind``, which must end partial and delete nothing, for a reason that says
        ``refused``, leaving all ``kept`` rows."""
        run = self.client.resync("api", kind)
        assert run.state == "partial" and run.deleted == 0, run
        assert refused in run.deletion_refused
        assert len(self.ids(kind)) == kept
        return run

    def sluice(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "SLUICE_REDIS_URL": self.workers.redis_url,
               "SLUICE_CONFIG": str(self.workers.config), "SLUICE_TEST_TOKEN": TOKEN,
               "SLUICE_TEST_KEY": KEY}
        return subprocess.run([*SLUICE, *args], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def trust(tmp_path_factory, redis_url: str) -> Iterator[Trust]:
    tmp = tmp_path_factory.mktemp("trust")
    env = {"SLUICE_TEST_TOKEN": TOKEN, "SLUICE_TEST_KEY": KEY, "SLUICE_PRODUCER_SLICE_PAGES": "3"}
    with two_origins(Trust, tmp, redis_url, write_config, env=env) as trust:
        yield trust


def page_body(items: list[dict[str, Any]], next_cursor: str | None = None) -> str:
    return json.dumps({"data": items, "next_cursor": next_cursor})


# 1. Deletion is conservative -------------------------------------------------------------

def test_a_full_page_without_link_ends_partial_and_deletes_nothing(trust: Trust):
    """The API sends Link only with a page parameter: 1 page of 500 of 5,000 came back.
    On main this deleted 4,500 rows and said succeeded."""
    trust.seed("nolink", 5000)
    trust.api.set_items("nolink", 5000)
    run = trust.client.resync("api", "nolink")
    assert run.state == "partial", run
    assert run.items_written == 500 and run.deleted == 0
    assert "came without a Link header" in run.deletion_refused
    assert len(trust.ids("nolink")) == 5000
    # Told to send the page parameter (as the README says), the same API pages through.
    trust.api.set_items("paged", 1200)
    run = trust.client.resync("api", "paged")
    assert (run.state, run.items_written) == ("succeeded", 1200), run


def test_a_total_that_under_reports_by_half_deletes_nothing(trust: Trust):
    trust.seed("under", 5000)
    trust.api.set_items("under", 5000)
    trust.api.state.totals["under"] = 2500
    refused = "refused to delete 2500 of 5000 entities (50.0%): delete_threshold is 20%"
    run = trust.resync_deleting_nothing("under", refused, 5000)
    assert run.deletion_refused == refused


def test_fewer_items_than_the_total_said_deletes_nothing(trust: Trust):
    trust.seed("under", 5000)
    trust.api.set_items("under", 4900)  # 100 gone, but the API still says 5000
    trust.api.state.totals["under"] = 5000
    # The last planned page (offset 4500) ends short of the total: that says it first.
    trust.resync_deleting_nothing("under", "(offset 4500) ends short of or links past", 5000)
    del trust.api.state.totals["under"]
    run = trust.client.resync("api", "under")  # the total tells the truth again: 2% go
    assert (run.state, run.deleted) == ("succeeded", 100), run


def test_the_default_guard_refuses_the_boundary_and_the_cli_says_so(trust: Trust):
    items = trust.api.set_items("stale", 1000)
    assert trust.client.resync("api", "stale").state == "succeeded"
    del items[800:]  # exactly 20% gone: refused, not allowed
    done = trust.sluice("run", "api", "--kind", "stale", "--wait", "--json")
    assert done.returncode == 1, done.stderr
    run = json.loads(done.stdout)
    assert run["state"] == "partial" and run["deleted"] == 0
    assert "refused to delete 200 of 1000 entities (20.0%)" in run["deletion_refused"]
    assert len(trust.ids("stale")) == 1000
    metrics = trust.client.progress.metrics()
    assert metrics[("deletions_refused", "api", "stale")] >= 1
    assert metrics[("runs", "api", "stale", "partial")] >= 1
    items[:] = make_items("stale", 999)  # 1 of 1000 gone: well within the guard
    run = trust.client.resync("api", "stale")
    assert (run.state, run.deleted) == ("succeeded", 1), run
    assert len(trust.ids("stale")) == 999


def test_a_late_write_of_a_stalled_run_never_leads_to_deleting_live_rows(trust: Trust):
    """Run A is declared stalled while a batch of it is still to be written; run B writes
    everything; A's late batch lands before B finalizes. On main, B then deleted the rows A
    had re-stamped."""
    progress, app = trust.client.progress, trust.client.app
    items = trust.api.set_items("late", 1000)
    run_a = progress.create_run("api", "late")
    progress.finish(run_a, "stalled", reason="declared stalled by the test")
    run_b = progress.create_run("api", "late")
    pages = {seq: items[(seq - 1) * 100:seq * 100] for seq in range(1, 11)}
    for seq, batch in pages.items():
        progress.record_page(run_b.run_id, "api", "late",
                             PageRecord(batches=(seq,), items=len(batch), checkpoint=None))
        messages.batch(app, run_b.run_id, "api", "late", seq, batch,
                       run_seq=run_b.run_seq)
    deadline = time.monotonic() + 30
    while progress.get(run_b.run_id).batches_done < 10:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    late = items[:400]  # run A's retry, older data of 400 items
    messages.batch(app, run_a.run_id, "api", "late", 7, late, run_seq=run_a.run_seq)
    while progress.get(run_a.run_id).batches_done < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert progress.producer_done(run_b.run_id)
    messages.finalize(app, run_b.run_id)
    run = trust.client.wait(run_b.run_id)
    assert (run.state, run.deleted) == ("succeeded", 0), run
    assert len(trust.ids("late")) == 1000
    with sqlite3.connect(trust.db) as conn:
        stamps = {r for (r,) in conn.execute(
            "SELECT DISTINCT run_id FROM entities WHERE kind = 'late'")}
    assert stamps == {run_b.run_id}  # A's late write did not re-stamp B's rows


def script_last(trust: Trust, last: int, *, items: int = 30, more_after_last: bool = False
                ) -> None:
    """/link/lastlink's first page says rel="last" is page ``last``."""
    base = f"{trust.api.url}/link/lastlink"
    trust.api.set_items("lastlink", items)
    if more_after_last:  # the page announced as the last links to one more
        trust.api.fail("/link/lastlink", 200, when={"page": str(last)},
                       body=json.dumps(make_items("lastlink", items)[(last - 1) * 10:last * 10]),
                       headers={"Link": f'<{base}?page={last + 1}&per_page=10>; rel="next"'})
    trust.api.fail("/link/lastlink", 200, body=json.dumps(make_items("lastlink", items)[:10]),
                   headers={"Link": f'<{base}?page=2&per_page=10>; rel="next", '
                                    f'<{base}?page={last}&per_page=10>; rel="last"'})


@pytest.mark.parametrize("last", [6, 10**12])
def test_a_last_page_that_over_reports_ends_at_the_first_empty_page(trust: Trust, last: int):
    """rel="last" claims 6 pages (or a trillion) where 3 exist: the plan ends at the first
    empty page, in seconds, with a handful of requests and flat memory, and deletes nothing
    (an API that does not know its size is not trusted with a deletion)."""
    script_last(trust, last)
    started = time.monotonic()
    run = trust.client.resync("api", "lastlink")
    assert run.state == "partial" and run.items_written == 30, run
    assert "came back empty" in run.deletion_refused
    assert time.monotonic() - started < 20
    assert len(trust.api.requests("/link/lastlink")) <= 3 + 2 * 8  # pages, and those in flight


def test_a_total_that_over_reports_ends_partial(trust: Trust):
    trust.api.set_items("over", 30)
    trust.api.state.totals["over"] = 60
    run = trust.client.resync("api", "over")
    assert run.state == "partial" and run.items_written == 30, run
    assert "came back empty" in run.deletion_refused  # which one: as answers came
    assert len(trust.api.requests("/offset/over")) <= 3 + 2 * 8
    del trust.api.state.totals["over"]


def test_a_last_page_that_links_to_more_deletes_nothing(trust: Trust):
    trust.seed("lastlink", 100)
    script_last(trust, 9, items=100, more_after_last=True)  # page 10 exists beyond "last"
    trust.resync_deleting_nothing("lastlink", "page=9&per_page=10) ends short of or links past",
                                  100)


def test_an_empty_page_with_a_next_cursor_deletes_nothing(trust: Trust):
    trust.seed("emptycur", 1000)
    trust.api.set_items("emptycur", 1000)
    trust.api.fail("/cursor/emptycur", 200, when={"cursor": "900"}, body=page_body([], "1000x"))
    trust.resync_deleting_nothing("emptycur", "an empty page still gave a next cursor", 1000)


def test_an_empty_planned_page_in_the_middle_deletes_nothing(trust: Trust):
    trust.seed("lastlink", 100)
    script_last(trust, 10, items=100)
    trust.api.fail("/link/lastlink", 200, when={"page": "5"}, body="[]", headers={
        "Link": f'<{trust.api.url}/link/lastlink?page=6&per_page=10>; rel="next"'})
    trust.resync_deleting_nothing("lastlink", "page=5&per_page=10) came back empty", 100)


def test_an_item_nested_hundreds_deep_lands_and_no_worker_dies(trust: Trust):
    """On a prefork node the main process pickled a message's items for its child: 500 levels
    deep stopped the whole node, then every node the message reached."""
    deep = "[" * 800 + "]" * 800
    trust.api.set_items("nested", 3)
    trust.api.fail("/cursor/nested", 200,
                   body='{"data": [{"id": "n1", "x": ' + deep + '}, {"id": "n2"}]}')
    run = trust.client.resync("api", "nested")
    assert run.state == "succeeded" and run.items_written == 2, run
    assert trust.ids("nested") == {"n1", "n2"}
    assert trust.workers.process and trust.workers.process.poll() is None


def test_a_page_with_nan_or_infinity_fails_the_run_as_not_json(trust: Trust):
    """Python's json reads NaN, Infinity and 1e400; no target stores them (PostgreSQL refused
    the whole batch holding one, later). The page is refused where it enters, with why."""
    trust.api.set_items("nan", 3)
    trust.api.fail("/cursor/nan", 200,
                   body='{"data": [{"id": "a1", "score": NaN}, {"id": "a2"}]}')
    run = trust.client.resync("api", "nan")
    assert run.state == "failed" and run.items_written == 0, run
    assert "MalformedPage" in run.error and "NaN is not JSON" in run.error, run.error


# 2. Credentials stay with their origin ----------------------------------------------------

def script_away(trust: Trust) -> list[dict[str, Any]]:
    """Page 1 of /link/away links to page 2 on the other API (another origin)."""
    items = make_items("away", 100)
    trust.other.state.items["away"] = items
    trust.other.state.auth_seen.clear()
    trust.api.fail("/link/away", 200, body=json.dumps(items[:50]), headers={
        "Link": f'<{trust.other.url}/link/away?page=2&per_page=50>; rel="next"'})
    return items


def test_a_next_link_to_another_origin_fails_the_run_and_sends_nothing_there(trust: Trust):
    script_away(trust)
    run = trust.client.resync("api", "away")
    assert run.state == "failed", run
    assert "ForeignOrigin" in run.reason and trust.other.url in run.reason
    assert "allow_origins" in run.reason
    assert trust.other.requests("/link/away") == []  # not a single request went there


def test_an_allowed_origin_is_fetched_without_the_source_credentials(trust: Trust):
    items = script_away(trust)
    run = trust.client.resync("open", "away")
    assert (run.state, run.items_written) == ("succeeded", 100), run
    assert len(trust.other.requests("/link/away")) == 1
    assert trust.other.state.auth_seen == set()  # the token stayed home
    assert f"Bearer {TOKEN}" in trust.api.state.auth_seen
    assert {i["id"] for i in items} <= trust.ids("away")


def everything_in(r: redis.Redis) -> bytes:
    """Every value of every key of a Redis database, as one blob."""
    blob = []
    for key in r.scan_iter(count=1000):
        kind = r.type(key)
        if kind == b"string":
            blob.append(r.get(key) or b"")
        elif kind == b"hash":
            blob += [k + b"=" + v for k, v in r.hgetall(key).items()]
        elif kind == b"list":
            blob += r.lrange(key, 0, -1)
        elif kind == b"set":
            blob += list(r.smembers(key))
        elif kind == b"zset":
            blob += r.zrange(key, 0, -1)
        blob.append(key)
    return b"\n".join(blob)


def test_a_secret_query_parameter_stays_out_of_logs_redis_and_status(trust: Trust):
    trust.api.set_items("keyed", 400)  # 8 pages: resumed from checkpoints (3 pages a slice)
    trust.api.state.params_seen.clear()
    run = trust.client.resync("api", "keyed")
    assert (run.state, run.items_written) == ("succeeded", 400), run
    # Every request carried the real key, also those built from a redacted checkpoint.
    keyed = [q for q in trust.api.state.params_seen if "per_page" in q]
    assert len(keyed) == 8 and all(q.get("api_key") == KEY for q in keyed), keyed
    log = trust.workers.log.read_text()
    assert KEY not in log and TOKEN not in log
    assert "api_key=%2A%2A%2A" in log or "api_key=***" in log  # the request lines, redacted
    stored = everything_in(trust.client.redis)
    assert KEY.encode() not in stored and TOKEN.encode() not in stored
    assert b"api_key=***" in stored or b"api_key=%2A%2A%2A" in stored  # the checkpoints
    status = trust.sluice("status", "--json", "--limit", "100")
    assert status.returncode == 0 and KEY not in status.stdout


# 3. Every run ends ------------------------------------------------------------------------

def test_a_cursor_cycle_fails_the_run_naming_it(trust: Trust):
    items = trust.api.set_items("ccyc", 300)
    trust.api.fail("/cursor/ccyc", 200, times=50, when={"cursor": "200"},
                   body=page_body(items[200:300], "100"))  # 100 -> 200 -> 100 -> ...
    started = time.monotonic()
    run = trust.client.resync("api", "ccyc")
    assert run.state == "failed", run
    assert "PagingCycle" in run.reason and "'100'" in run.reason, run.reason
    assert time.monotonic() - started < 20


def test_a_link_cycle_fails_the_run_naming_it(trust: Trust):
    trust.api.set_items("lcyc", 200)
    base = f"{trust.api.url}/link/lcyc"
    trust.api.fail("/link/lcyc", 200, times=50, when={"page": "2"}, body="[]", headers={
        "Link": f'<{base}?page=1&per_page=50>; rel="next"'})
    # The first page's items differ from page=1's: this is a cycle of links, not of items.
    trust.api.fail("/link/lcyc", 200, times=1, body=json.dumps(make_items("first", 50)),
                   headers={"Link": f'<{base}?page=2&per_page=50>; rel="next"'})
    run = trust.client.resync("api", "lcyc")
    assert run.state == "failed", run
    assert "PagingCycle" in run.reason and "page=2" in run.reason, run.reason


def test_an_api_that_hands_out_new_cursors_for_the_same_page_fails_the_run(trust: Trust):
    trust.api.set_items("endless", 10)
    for n in range(1, 30):  # every page: the same item, and a cursor never seen before
        trust.api.fail("/cursor/endless", 200, when={"cursor": f"c{n}"},
                       body=page_body([{"id": "same"}], f"c{n + 1}"))
    trust.api.fail("/cursor/endless", 200, body=page_body([{"id": "same"}], "c1"))
    run = trust.client.resync("api", "endless")
    assert run.state == "failed", run
    assert "holds the very items of page 1" in run.reason, run.reason
    assert run.pages <= 3


def test_a_run_past_max_pages_fails(trust: Trust):
    trust.api.set_items("endless", 100_000)  # 1,000 pages; the source allows 50
    run = trust.client.resync("open", "endless")
    assert run.state == "failed", run
    assert "TooManyPages" in run.reason and "max_pages (50)" in run.reason
    assert run.pages <= 52


def test_an_api_that_trickles_its_answer_fails_within_the_deadline(trust: Trust):
    trust.api.set_items("slow", 100)
    started = time.monotonic()
    with trust.api.trickling("/cursor/slow", 0.5):  # ~6,000 bytes at 2 a second
        run = trust.client.resync("api", "slow")
    took = time.monotonic() - started
    assert run.state == "failed", run
    assert "deadline of 2 s" in run.reason and "TransientHTTPError" in run.reason
    assert took < 20, took  # two attempts of 2 s, not an hour


@pytest.mark.parametrize("kind,body,expect", [
    ("deep", '{"data": ' + "[" * 100_000 + "]" * 100_000 + "}", "RecursionError"),
    ("huge", '{"data": [{"id": 1' + "0" * 5000 + "}]}", "ValueError"),
])
def test_a_page_python_cannot_read_fails_the_run_at_once(trust: Trust, kind: str, body: str,
                                                          expect: str):
    trust.api.set_items(kind, 10)
    trust.api.fail(f"/cursor/{kind}", 200, body=body)
    started = time.monotonic()
    run = trust.client.resync("api", kind)
    assert run.state == "failed", run
    assert "MalformedPage" in run.reason and expect in run.reason
    assert time.monotonic() - started < 10


def test_an_exception_not_of_sluice_fails_the_run_with_its_type_and_place(trust: Trust):
    """A cursor holding a lone surrogate: httpx raises UnicodeEncodeError building the URL."""
    trust.api.set_items("weird", 10)
    trust.api.fail("/cursor/weird", 200,
                   body='{"data": [{"id": "w1"}], "next_cursor": "a\\ud800"}')
    started = time.monotonic()
    run = trust.client.resync("api", "weird")
    assert run.state == "failed", run
    assert re.search(r"producer: UnicodeEncodeError: .* \(at [\w.]+\.py:\d+ in [\w<>]+\)",
                     run.reason), run.reason
    assert time.monotonic() - started < 10


def test_sigterm_to_the_whole_worker_group_hands_the_producer_slice_on(tmp_path: Path):
    """systemd's default KillMode (and Ctrl-C on `sluice standalone`) signals every process
    of the node. With the default visibility timeout (600 s), a lost slice would never come
    back within this test: the run completes only if the slice was handed on.

    The signal comes while the producer's request for page 6 is held by the API: the slice
    is then known to be running, on the one node that took the run's only producer task (no
    backpressure, no slice bound ends it sooner), whatever the machine's load."""
    api = FakeAPI().start()
    try:
        items = api.set_items("item", 2000)
        cfg = cursor_config(tmp_path, api.url, source_keys="max_in_flight = 100")
        held = api.hold("/cursor/item", after=5)
        with RedisServer() as server:
            env = {"SLUICE_PRODUCER_SLICE_SECONDS": "600", "SLUICE_PRODUCER_SLICE_PAGES": "500"}
            a = Workers(config=cfg, redis_url=server.url, log=tmp_path / "a.log", name="a",
                        env=env).start()
            b = Workers(config=cfg, redis_url=server.url, log=tmp_path / "b.log", name="b",
                        env=env).start()
            client = Client(server.url)
            try:
                run = client.start("api", "item")
                assert held.arrived.wait(60), "the producer never asked for page 6"
                # (Every node's log lists the task names when it starts: look for the task.)
                [victim] = [w for w in (a, b) if "Task sluice.resync[" in w.log.read_text()]
                assert victim.process
                os.killpg(victim.process.pid, signal.SIGTERM)
                held.release()
                assert victim.process.wait(60) == 0
                run = client.wait(run.run_id, timeout=120)
            finally:
                held.release()
                a.stop()
                b.stop()
                client.close()
        assert "the slice was handed on" in victim.log.read_text()
        assert run.state == "succeeded", run
        assert run.items_written == 2000
        with sqlite3.connect(tmp_path / "db.sqlite") as conn:
            assert conn.execute("SELECT COUNT(*) FROM entities").fetchone()[0] == len(items)
    finally:
        api.stop()


# 4. Partial success is visible ------------------------------------------------------------

def test_a_wrong_id_path_fails_the_run_and_the_rejected_items_are_listed(trust: Trust):
    trust.api.set_items("wrongid", 300)
    done = trust.sluice("run", "api", "--kind", "wrongid", "--wait", "--json")
    assert done.returncode == 1, done.stderr
    run = json.loads(done.stdout)
    assert run["state"] == "failed" and run["items_rejected"] == 300, run
    assert "300 of 300 items rejected (100.0%), more than max_rejected 1.0%" in run["reason"]
    listed = trust.sluice("failed", "list", run["run_id"]).stdout.splitlines()
    assert len(listed) == 300
    assert (f"{run['run_id']} rejected page=1 item 0: no identifier: "
            "{'id': 'wrongid-0', 'title': 'wrongid number 0', 'n': 0}") in listed
    metrics = trust.client.progress.metrics()
    assert metrics[("items_rejected", "api", "wrongid")] == 300


# 5. One bad item is one rejected item ------------------------------------------------------

def test_an_unencodable_id_rejects_that_item_and_the_rest_lands(trust: Trust):
    items = make_items("surr", 200)
    body = page_body(items).replace('"surr-7"', '"surr-\\ud800"')
    trust.api.set_items("surr", 200)
    trust.api.fail("/cursor/surr", 200, body=body)
    run = trust.client.resync("api", "surr")
    assert run.state == "succeeded", run  # 1 of 200 rejected: within max_rejected
    assert (run.items_written, run.items_rejected) == (199, 1)
    [rejected] = trust.client.progress.rejected(run.run_id)
    assert (rejected["seq"], rejected["index"]) == (1, 7)
    assert "lone surrogate" in rejected["reason"]
    assert len(trust.ids("surr")) == 199


def test_a_page_bigger_than_max_batch_items_is_split(trust: Trust):
    items = trust.api.set_items("big", 1200)  # pages of 500; max_batch_items = 200
    run = trust.client.resync("api", "big")
    assert run.state == "succeeded", run
    assert (run.pages, run.batches_enqueued, run.batches_done) == (3, 7, 7)
    assert run.items_written == 1200 and trust.ids("big") == {i["id"] for i in items}


# 6. One config, seen the same everywhere ---------------------------------------------------

def test_a_worker_with_a_broken_config_does_not_start(tmp_path: Path, own_redis_url: str):
    cfg = tmp_path / "sluice.toml"
    cfg.write_text('[sources.api]\nintegration = "rest"\nbase_url = "http://x"\n'
                   'headres = {}\n[sources.api.kinds.k]\npath = "/k"\n')
    workers = Workers(config=cfg, redis_url=own_redis_url, log=tmp_path / "w.log")
    with pytest.raises(RuntimeError, match="did not start"):
        workers.start(timeout=30)
    workers.stop()
    assert workers.process and workers.process.returncode not in (None, 0)
    assert f"{cfg}: invalid configuration" in (tmp_path / "w.log").read_text()
    assert "sources.api.headres: unknown key" in (tmp_path / "w.log").read_text()


def test_workers_take_an_edited_config_and_fail_a_run_of_another_one(trust: Trust):
    cfg = trust.workers.config
    original = cfg.read_text()
    try:
        cfg.write_text(original + '\n[sources.api.kinds.added]\npath = "/cursor/added"\n'
                       'items = "data"\npaginator = { type = "cursor", cursor_path = '
                       '"next_cursor" }\n')
        trust.api.set_items("added", 30)
        done = trust.sluice("run", "api", "--kind", "added", "--wait", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["items_written"] == 30
    finally:
        cfg.write_text(original)
    # A run started from a sluice.toml the workers do not have fails, naming the worker.
    run = trust.client.progress.create_run("api", "stale", config_digest="0123456789abcdef")
    messages.resync(trust.client.app, "api", "stale", run.run_id)
    run = trust.client.wait(run.run_id)
    assert run.state == "failed", run
    assert "has another" in run.reason and "(0123456789abcdef)" in run.reason


def test_a_kind_the_worker_does_not_know_fails_the_run_and_frees_the_kind(trust: Trust):
    for _ in range(2):  # the second run starts: the first released the lock
        run = trust.client.start("api", "nosuchkind")
        assert run.state == "running"
        run = trust.client.wait(run.run_id)
        assert run.state == "failed", run
        assert "has no kind 'nosuchkind'" in run.reason


# 7. The CLI tells the truth ---------------------------------------------------------------

def test_run_wait_without_a_worker_says_so_and_a_lost_record_reads_lost(
        tmp_path: Path, trust: Trust):
    with RedisServer() as server:
        env = {**os.environ, "SLUICE_REDIS_URL": server.url,
               "SLUICE_CONFIG": str(trust.workers.config), "SLUICE_TEST_TOKEN": TOKEN,
               "SLUICE_TEST_KEY": KEY}
        cli = subprocess.Popen([*SLUICE, "run", "api", "--kind",
                                "stale", "--wait"], env=env, cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert cli.stderr
        started, said = time.monotonic(), ""
        while "no worker consumes the queue" not in said:
            said += cli.stderr.readline()
            assert time.monotonic() - started < 15, said
        assert "celery -A tasks worker" in said
        redis.Redis.from_url(server.url).flushall()  # and then the run record is lost
        out, _ = cli.communicate(timeout=30)
    assert cli.returncode == 1
    assert ": lost;" in out and "the run record is gone from Redis" in out


def test_status_into_head_ends_quietly_and_entities_names_unknown_kinds(trust: Trust):
    env = {**os.environ, "SLUICE_REDIS_URL": trust.workers.redis_url}
    done = subprocess.run(f"{sys.executable} -m tasks.operator.cli status --limit 100 | head -1",
                          shell=True, env=env, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.count("\n") == 1
    assert done.stderr == ""
    wrong = trust.sluice("entities", "api", "nosuchkind")
    assert wrong.returncode == 2 and "has no kind 'nosuchkind'" in wrong.stderr
    wrong = trust.sluice("entities", "nosource")
    assert wrong.returncode == 2 and "no source 'nosource'" in wrong.stderr
    wrong = trust.sluice("entities", "--db", str(trust.db), "nosource")
    assert wrong.returncode == 2 and "holds no entities of nosource" in wrong.stderr
