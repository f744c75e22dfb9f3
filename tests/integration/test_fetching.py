"""Fast and polite fetching with real workers: parallel pages, one rate limit shared by every
process, a pause every caller honours, partitions of a kind on separate producer tasks."""

from __future__ import annotations

import itertools
import sqlite3
import time
from pathlib import Path

import pytest

from integrations.fakeapi import FakeAPI
from tests.support.configs import cursor_kind, offset_kind, rest_source, toml
from tests.support.workers import Client, Workers

pytestmark = pytest.mark.integration


def write_config(tmp: Path, api: FakeAPI, source: str) -> Path:
    path = tmp / "sluice.toml"
    path.write_text(f"""
[target]
path = "{tmp / 'db.sqlite'}"
{source}
""")
    return path


def two_link_kinds(tmp: Path, api: FakeAPI, source_keys: str) -> Path:
    """Source "api" with kinds a and b, Link-paged 20 per page, plus ``source_keys``."""
    return write_config(tmp, api, f"""
[sources.api]
integration = "rest"
base_url = "{api.url}"
{source_keys}

[sources.api.kinds.a]
path = "/link/a"
paginator = {{ type = "link", limit = 20 }}

[sources.api.kinds.b]
path = "/link/b"
paginator = {{ type = "link", limit = 20 }}
""")


def ids(tmp: Path, kind: str) -> list[str]:
    with sqlite3.connect(tmp / "db.sqlite") as db:
        return [i for (i,) in db.execute("SELECT identifier FROM entities WHERE kind = ?", (kind,))]


def test_rate_limit_is_shared_by_two_worker_processes(tmp_path: Path, api: FakeAPI,
                                                      own_redis_url: str):
    rate = 10
    for kind in ("a", "b"):
        api.set_items(kind, 600)  # 30 pages of 20 each
    cfg = two_link_kinds(tmp_path, api, f"rate_limit = {rate}\nrate_limit_burst = 1\n"
                                        "max_concurrency = 8")
    url = own_redis_url
    with Workers(config=cfg, redis_url=url, log=tmp_path / "w.log", concurrency=2) as workers:
        client = Client(url)
        runs = [client.start("api", k) for k in ("a", "b")]
        done = [client.wait(r.run_id, timeout=60) for r in runs]
        client.close()
        log = workers.log.read_text()
    assert [r.state for r in done] == ["succeeded", "succeeded"]
    assert len(ids(tmp_path, "a")) == len(ids(tmp_path, "b")) == 600
    # Both producers ran at once, in two processes.
    producers = {line.split("]")[0].split("/")[-1] for line in log.splitlines()
                 if "GET" in line and "/link/" in line}
    assert len(producers) == 2, producers
    times = sorted(t for t, method, *_ in api.requests("/link/") if method == "GET")
    assert len(times) == 60
    worst = max(sum(1 for u in times if t <= u < t + 1.0) for t in times)
    assert worst <= rate + 1, worst  # over any 1 s window: the rate, plus a burst of 1
    assert times[-1] - times[0] >= (60 - 1 - 1) / rate  # and it did not go faster overall


def test_an_exhausted_budget_pauses_every_caller_until_the_reset(tmp_path: Path, api: FakeAPI,
                                                                own_redis_url: str):
    for kind in ("a", "b"):
        api.set_items(kind, 400)
    api.state.delays["/cursor/"] = 0.05
    cfg = write_config(tmp_path, api, toml(rest_source(api.url), cursor_kind("a", limit=20),
                                           cursor_kind("b", limit=20)))
    url = own_redis_url
    with Workers(config=cfg, redis_url=url, log=tmp_path / "w.log", concurrency=2):
        client = Client(url)
        runs = [client.start("api", k) for k in ("a", "b")]
        # Both producers are paging (on a busy machine the second may start late).
        while not all(client.progress.get(r.run_id).pages >= 2 for r in runs):
            time.sleep(0.01)
        api.state.exhaust["/cursor/a"] = 2.0  # the next answer on /a says: budget gone for 2 s
        done = [client.wait(r.run_id, timeout=60) for r in runs]
        client.close()
    assert [r.state for r in done] == ["succeeded", "succeeded"]
    log = sorted(api.requests("/cursor/"))
    times = [t for t, *_ in log]
    # The answer that carried Remaining: 0 is followed by a silence of ~2 s, from both callers
    # (the log has answer times; an answer takes 0.05 s).
    gaps = [(b - a, i) for i, (a, b) in enumerate(itertools.pairwise(times))]
    gap, at = max(gaps)
    assert 1.85 <= gap < 10, gaps[-5:]  # (a busy machine answers the next one later)
    assert any(path.startswith("/cursor/b") for _, _, path, _ in log[at + 1:])
    assert any(path.startswith("/cursor/b") for _, _, path, _ in log[:at])


def test_a_kind_split_into_partitions_runs_as_several_producers(tmp_path: Path, api: FakeAPI,
                                                                own_redis_url: str):
    items = api.set_items("p", 1000)  # 50 pages of 20
    api.state.delays["/offset/p"] = 0.02
    cfg = write_config(tmp_path, api, toml(
        rest_source(api.url, "partitions = 3", "max_concurrency = 2"), offset_kind("p", limit=20)))
    url = own_redis_url
    with Workers(config=cfg, redis_url=url, log=tmp_path / "w.log", concurrency=2):
        client = Client(url)
        run = client.resync("api", "p")
        seqs = client.progress.published(run.run_id)
        parts_done = client.redis.smembers(f"sluice:run:{run.run_id}:partitions_done")
        client.close()
    assert run.state == "succeeded", run
    assert sorted(ids(tmp_path, "p")) == sorted(i["id"] for i in items)
    assert run.pages == 50 and run.batches_done == 50 and run.items_written == 1000
    assert seqs == set(range(1, 51))  # one run, one numbering across partitions
    assert run.partitions == 3 and parts_done == {b"0", b"1", b"2"}
    offsets = [p for _, _, p, _ in api.requests("/offset/p")]
    assert len(offsets) == len(set(offsets)) == 50  # every page fetched once


def test_a_threads_pool_shares_one_loop_and_writes_batches_at_once(
        tmp_path: Path, api: FakeAPI, own_redis_url: str):
    """`-P threads`: several producers and batches at once in one process, one event loop,
    one SQLite connection per thread."""
    for kind in ("a", "b"):
        api.set_items(kind, 800)
    api.state.delays["/link/"] = 0.02
    cfg = two_link_kinds(tmp_path, api, "partitions = 2\nmax_concurrency = 4")
    url = own_redis_url
    with Workers(config=cfg, redis_url=url, log=tmp_path / "w.log", concurrency=8,
                 pool="threads") as workers:
        client = Client(url)
        runs = [client.start("api", k) for k in ("a", "b")]
        done = [client.wait(r.run_id, timeout=60) for r in runs]
        client.close()
        log = workers.log.read_text()
    assert [r.state for r in done] == ["succeeded", "succeeded"], done
    assert [r.items_written for r in done] == [800, 800]
    assert len(ids(tmp_path, "a")) == len(ids(tmp_path, "b")) == 800
    assert "Event loop is closed" not in log and "Traceback" not in log
    # Batches ran at the same time in the one process: some of their spans overlap.
    spans = []
    for line in log.splitlines():
        if "sluice.ingest_batch" in line and " succeeded in " in line:
            stamp = line[1:24]
            start = time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S"))
            end = start + int(stamp[20:]) / 1000
            spans.append((end - float(line.split(" succeeded in ")[1].split("s:")[0]), end))
    spans.sort()
    assert len(spans) == 80
    assert any(b[0] < a[1] for a, b in itertools.pairwise(spans))
