"""Time-window slices with real workers and real Redis (issue 22, items 1-3): every window is
a partition of the run, read at the same time as others; a window too full is split before it
is read on; a lost node's window goes on from its checkpoint; the watermark and the deletion
wait for every window to be clean."""

from __future__ import annotations

import json
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from integrations.fakeapi import FakeAPI, at
from tasks.operator.redisserver import RedisServer
from tasks.runs import keys
from tasks.targets.sqlite import SqliteTarget
from tests.support.configs import cursor_kind, rest_source, sqlite_target, toml
from tests.support.failover import two_nodes
from tests.support.workers import Client, Workers

pytestmark = pytest.mark.integration

FROM, TO = "updated_at[gte]", "updated_at[lt]"


def config_text(db: Path, url: str) -> str:
    bounds = f'param_from = "{FROM}", param_to = "{TO}", start = "{at(0)}"'
    return toml(
        sqlite_target(db),
        rest_source(url, "delete_threshold = 0.9", "max_concurrency = 4", "http = { retries = 0 }"),
        cursor_kind("win", f'slices = {{ {bounds}, end = "{at(1200)}", step = "5m" }}'),
        f"""[sources.api.kinds.full]
path = "/cursor/full"
items = "data"
slices = {{ {bounds}, end = "{at(1200)}", step = "20m", max_window_items = 100 }}
[sources.api.kinds.full.paginator]
type = "cursor"
cursor_path = "next_cursor"
total_path = "total_count"
limit = 50
""",
        cursor_kind("inc", f'slices = {{ {bounds}, end = "{at(3600)}", step = "5m" }}',
                    f'incremental = {{ cursor_path = "updated_at", param = "{FROM}",'
                    ' lookback = "1m" }'))


def windows_asked(api: FakeAPI, path: str) -> list[tuple[str, str, str | None]]:
    """(from, to, cursor) of every GET of ``path`` so far."""
    asked = [dict(parse_qsl(urlsplit(r[2]).query)) for r in api.requests(path) if r[1] == "GET"]
    return [(q[FROM], q[TO], q.get("cursor")) for q in asked]


def rows(db: Path, kind: str) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT identifier, json_extract(data, '$.title') FROM entities"
                                 " WHERE source = 'api' AND kind = ?", (kind,)).fetchall())


def watermarks(db: Path, kind: str) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT part, value FROM sluice_watermarks"
                                 " WHERE source = 'api' AND kind = ?", (kind,)).fetchall())


class Fleet:
    def __init__(self, api: FakeAPI, config: Path, db: Path, url: str) -> None:
        self.api, self.config, self.db, self.url = api, config, db, url


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fleet, Client]]:
    tmp = tmp_path_factory.mktemp("slices")
    db, config = tmp / "db.sqlite", tmp / "sluice.toml"
    with FakeAPI() as api, RedisServer() as server:
        config.write_text(config_text(db, api.url))
        client = Client(server.url)
        with Workers(config=config, redis_url=server.url, log=tmp / "worker.log",
                     pool="threads", concurrency=8):
            yield Fleet(api, config, db, server.url), client
        client.close()


def test_every_window_is_read_once_and_lands_every_item_once(fleet):
    f, client = fleet
    items = f.api.set_timed_items("win", 1000)  # item i at 2024-01-01 + i seconds
    run = client.resync("api", "win")
    assert run.state == "succeeded", run
    assert run.partitions == 4 and run.items_written == 1000
    assert set(rows(f.db, "win")) == {i["id"] for i in items}
    asked = windows_asked(f.api, "/cursor/win")
    # 300, 300, 300 and 100 items, 50 a page: one request per page, and none more.
    assert len(asked) == 6 + 6 + 6 + 2 == run.pages
    assert {(a, b) for a, b, _ in asked} == {(at(s), at(s + 300)) for s in (0, 300, 600, 900)}


def test_a_window_too_full_is_split_before_it_is_read_on(fleet):
    f, client = fleet
    items = f.api.set_timed_items("full", 1000)
    run = client.resync("api", "full")
    assert run.state == "succeeded", run
    assert set(rows(f.db, "full")) == {i["id"] for i in items}
    assert run.items_written == run.items_expected == 1000
    asked = windows_asked(f.api, "/cursor/full")
    first_pages = [(a, b) for a, b, cursor in asked if cursor is None]
    assert first_pages.count((at(0), at(1200))) == 1  # the whole span, asked once, then split
    # Split once, at once, into as many pieces as its total asks for: 1,000 items, 100 at
    # most a window, two pieces for every 100 (16 at most) of 75 s, 75 items each.
    split = int(client.redis.hget(keys.run(run.run_id), "windows_split") or 0)
    assert (split, run.partitions) == (1, 16), run
    pieces = {(at(s), at(s + 75)) for s in range(0, 1200, 75)}
    assert set(first_pages) == pieces | {(at(0), at(1200))}
    # Every window read past its first page holds at most max_window_items (its total): the
    # pieces of more than a page (50 items; the items end at 00:16:40).
    read_on = {(a, b) for a, b, cursor in asked if cursor is not None}
    held = {w: sum(1 for i in items if w[0] <= i["updated_at"] < w[1]) for w in pieces}
    assert read_on == {w for w in pieces if held[w] > 50}, held
    assert max(held[w] for w in read_on) <= 100, held
    # One request per page, plus one for each window split (its first page, read again as its
    # first piece's) and one for each empty window (no page with items): at most one a window.
    empty = sum(1 for w in pieces if held[w] == 0)
    assert empty == 2  # 00:17:30 to 00:20:00
    assert len(asked) == run.pages + split + empty
    assert len(asked) - run.pages <= run.partitions


def test_the_watermark_and_deletion_wait_for_every_window(fleet):
    f, client = fleet
    items = f.api.set_timed_items("inc", 1000)
    first = client.resync("api", "inc")
    assert first.state == "succeeded", first
    assert watermarks(f.db, "inc") == {"null": f'"{at(999)}"'}
    # Items change at 2024-01-01T00:30:00; the window holding them fails (windows from the
    # watermark minus the lookback: 00:15:39, 00:20:39, 00:25:39, ...).
    f.api.change("inc", [1, 2, 3], when=1800)
    f.api.fail("/cursor/inc", 500, times=1, when={FROM: at(939 + 600)})  # holds 1800
    f.api.state.log.clear()
    failed = client.resync("api", "inc")
    assert failed.state == "failed", failed
    assert watermarks(f.db, "inc") == {"null": f'"{at(999)}"'}  # not advanced
    # It read from the watermark minus the lookback, in 5-minute windows.
    assert min(a for a, _, _ in windows_asked(f.api, "/cursor/inc")) == at(999 - 60)
    clean = client.resync("api", "inc")
    assert clean.state == "succeeded", clean
    assert watermarks(f.db, "inc") == {"null": f'"{at(1800)}"'}
    assert "changed at 1800" in rows(f.db, "inc")[items[1]["id"]]
    # A full run with a failed window deletes nothing; a clean one deletes what is gone
    # within its windows, and what lies outside them stays (written under an older config
    # that started earlier and ended later: the run did not ask for it).
    outside = [{"identifier": f"outside-{t}", "kind": "inc", "source": "api",
                "data": {"id": f"outside-{t}", "updated_at": at(t)}} for t in (-60, 3600)]
    target = SqliteTarget(f.db)
    target.upsert(outside, run_id="older", run_seq=1)  # type: ignore[arg-type]
    target.close()
    with f.api.server.lock:
        del f.api.state.items["inc"][900:]
    f.api.fail("/cursor/inc", 500, times=1, when={FROM: at(300)})
    refused = client.resync("api", "inc", full=True)
    assert refused.state == "failed" and refused.deleted == 0, refused
    assert len(rows(f.db, "inc")) == 1002
    whole = client.resync("api", "inc", full=True)
    assert whole.state == "succeeded" and whole.deleted == 100, whole
    assert len(rows(f.db, "inc")) == 902
    assert {"outside--60", "outside-3600"} <= set(rows(f.db, "inc"))


def test_a_lost_nodes_window_goes_on_from_its_checkpoint(tmp_path: Path, api: FakeAPI):
    """The node reading a window is killed (SIGKILL, the whole node) mid-window; the other
    node goes on from the window's checkpoint: no page of it is asked for twice."""
    items = api.set_timed_items("win", 1000)
    api.state.delays["/cursor/win"] = 0.05
    db, config = tmp_path / "db.sqlite", tmp_path / "sluice.toml"
    config.write_text(config_text(db, api.url))
    env = {"SLUICE_NODE_TIMEOUT": "2"}
    with two_nodes(config, tmp_path, env) as nodes:
        client = nodes.client
        run = client.start("api", "win")
        nodes.a.child.wait_until(  # windows on their way: pages 3 and more of one
            lambda: (client.progress.get(run.run_id) or run).pages >= 3, timeout=30, poll=0.01)
        nodes.a.child.signal(signal.SIGKILL)
        started = started_windows(client, run.run_id)
        nodes.take_over()
        run = client.wait(run.run_id, timeout=60)
    assert run.state == "succeeded", run
    assert set(rows(db, "win")) == {i["id"] for i in items}
    asked = windows_asked(api, "/cursor/win")
    # A window that had a checkpoint when its node died did not start again: its first
    # page was asked for once (only the pages in hand at the kill are asked for again).
    assert started
    for a, b in started:
        assert asked.count((a, b, None)) == 1, (a, b)
    # At most two requests of each window in flight (max_concurrency 4) come again.
    assert len(asked) - 20 <= 2 * 4


def started_windows(client: Client, run_id: str) -> list[tuple[str, str]]:
    """The windows (as sent) of the run's partitions that have a checkpoint."""
    record = {k.decode(): v.decode() for k, v in client.redis.hgetall(keys.run(run_id))
              .items()}
    return [(at(a - 1704067200), at(b - 1704067200))
            for i in range(int(record.get("partitions", "0")))
            if record.get(keys.checkpoint_field(i), "null") != "null"
            for a, b in [json.loads(record[keys.window_field(i)])]]
