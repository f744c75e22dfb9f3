"""Follow change, not whole APIs: what an incremental run and child kinds cost.

    python ops/bench/incremental.py            # both scenarios; tables to INCREMENTAL.md

1. 100,000 items (Link paging, 100 per page, 100 ms per page), then 1% of them change: the
   full first run and the incremental second run side by side (requests, seconds).
2. 2,000 parents, each with 3 children, 50 ms per request: the parents and their children in
   one run, beside what a serial loop needs (one request after another).

Everything is local: a fake API on loopback (in this process), a Redis server, one plain
``celery -A tasks worker`` (the defaults), a SQLite target.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from bench import Workers  # noqa: E402
from celery import Celery  # noqa: E402
from redis import Redis  # noqa: E402

from integrations.fakeapi import FakeAPI  # noqa: E402
from tasks import messages  # noqa: E402
from tasks.operator.redisserver import RedisServer  # noqa: E402
from tasks.runs.progress import Progress, Run  # noqa: E402

CONFIG = """
[target]
path = "{db}"

[sources.bench]
integration = "rest"
base_url = "{url}"
max_concurrency = {concurrency}
max_in_flight = 64

[sources.bench.kinds.item]
path = "/link/item"
paginator = {{ type = "link", limit = 100 }}
incremental = {{ cursor_path = "updated_at", param = "since", lookback = "2m" }}

[sources.bench.kinds.post]
path = "/link/post"
paginator = {{ type = "link", limit = 100 }}

[sources.bench.kinds.comment]
parent = "post"
path = "/sub/comment/{{parent.id}}"
items = "data"
paginator = {{ type = "cursor", cursor_path = "next_cursor", limit = 10 }}
include_from_parent = ["id"]
"""


class Setup:
    def __init__(self, tmp: Path, api: FakeAPI, redis_url: str, concurrency: int) -> None:
        config = tmp / "sluice.toml"
        config.write_text(CONFIG.format(db=tmp / "bench.db", url=api.url,
                                        concurrency=concurrency))
        self.api = api
        self.workers = Workers(config, redis_url, 1, tmp / "worker.log", threads=0)
        self.progress = Progress(Redis.from_url(redis_url))
        self.app = Celery(broker=redis_url)
        self.app.conf.update(task_serializer="json", task_default_queue="sluice")

    def run(self, kind: str) -> tuple[Run, float, int]:
        """A run of ``kind``: its record, seconds and requests."""
        with self.api.server.lock:
            self.api.state.log.clear()
        start = time.time()
        run = self.progress.create_run("bench", kind)
        messages.resync(self.app, "bench", kind, run.run_id)
        while not (got := self.progress.get(run.run_id)) or not got.state.ended:
            time.sleep(0.05)
        assert got.state == "succeeded", got
        with self.api.server.lock:
            requests = sum(1 for r in self.api.state.log if r[1] == "GET")
        return got, (got.ended_at or time.time()) - start, requests

    def close(self) -> None:
        self.workers.stop()
        self.app.close()


def incremental(setup: Setup, n: int) -> str:
    setup.api.server.latency = 0.1
    setup.api.set_timed_items("item", n)
    full, full_s, full_req = setup.run("item")
    changed = list(range(0, n, 100))  # 1%
    setup.api.change("item", changed, when=n + 10_000)
    inc, inc_s, inc_req = setup.run("item")
    assert inc.incremental and not full.incremental
    rows = ["| run | items read | requests | seconds |", "|---|---:|---:|---:|",
            f"| first (full) | {full.items_fetched:,} | {full_req:,} | {full_s:.2f} |",
            f"| next, 1% changed (incremental) | {inc.items_fetched:,} | {inc_req:,} | "
            f"{inc_s:.2f} |"]
    return (f"### {n:,} items, Link paging (100 per page, 100 ms per page), then 1% change\n\n"
            + "\n".join(rows) + f"\n\nThe incremental run read {inc.items_fetched:,} items: "
            f"the {len(changed):,} that changed and {inc.items_fetched - len(changed):,} more "
            "that the 2-minute lookback reads again; "
            f"{full_req / inc_req:.0f}× fewer requests, {full_s / inc_s:.1f}× faster.\n")


def children(setup: Setup, parents: int, per_parent: int) -> str:
    setup.api.server.latency = 0.05
    posts = setup.api.set_items("post", parents)
    setup.api.set_children("comment", posts, per_parent)
    run, seconds, requests = setup.run("post")
    counts = run.children["comment"]
    assert counts["items_written"] == parents * per_parent, run
    serial = requests * 0.05
    rows = ["| method | requests | seconds | child batches |", "|---|---:|---:|---:|",
            f"| serial loop (one request after another: requests × 50 ms) | {requests:,} | "
            f"{serial:.1f} | – |",
            f"| sluice, 1 × `celery -A tasks worker` (defaults) | {requests:,} | {seconds:.2f} | "
            f"{counts['batches_enqueued'] - (parents + 99) // 100} |"]
    verdict = "met" if seconds <= 15 else "NOT met"
    return (f"### {parents:,} parents × {per_parent} children, 50 ms per request\n\n"
            + "\n".join(rows) + f"\n\nTarget ≤ 15 s: **{verdict}** ({serial / seconds:.1f}× "
            "the serial loop). The children of each page of 100 parents are fetched by one "
            "task, max_concurrency at a time per process, and written as one batch.\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--parents", type=int, default=2000)
    p.add_argument("--per-parent", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=16, help="the source's max_concurrency")
    a = p.parse_args()
    command = "python ops/bench/incremental.py " + " ".join(map(shlex.quote, sys.argv[1:]))
    header = (f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on "
              f"{os.cpu_count()} cores ({platform.machine()}, Python "
              f"{platform.python_version()}), with `{command.strip()}`; one plain "
              f"`celery -A tasks worker`, SQLite target, max_concurrency {a.concurrency}.\n")
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp, RedisServer() as server, \
            FakeAPI() as api:
        setup = Setup(Path(tmp), api, server.url, a.concurrency)
        try:
            body = incremental(setup, a.items) + "\n" + children(setup, a.parents, a.per_parent)
        finally:
            setup.close()
    text = "# Incremental runs and child kinds\n\n" + header + "\n" + body
    (HERE / "INCREMENTAL.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
