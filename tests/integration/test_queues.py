"""Fair queues (issue 20, item 2): a webhook batch and a small run do not wait behind a backfill.

The order of events is asserted, not times: a backlog of a backfill's batches waits in
``sluice.bulk`` before the worker starts; a small run and a webhook batch are sent after it;
both are done while most of the backlog still waits, and the backlog is written after.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from integrations.fakeapi import FakeAPI
from integrations.webhooks import Action, Event
from tasks import messages
from tasks.operator.redisserver import RedisServer
from tests.support.workers import Client, Workers, cursor_config

pytestmark = pytest.mark.integration

BACKLOG = 300  # batches of 50 items


def test_a_small_run_and_a_webhook_go_before_a_backfills_backlog(tmp_path: Path, api: FakeAPI):
    """One node with two threads, so each take counts. With one queue, the run's producer, its
    batches and the webhook batch would run after all 300 batches queued before them."""
    items = api.set_items("item", 100)
    cfg = cursor_config(tmp_path, api.url)
    with cfg.open("a") as f:  # the backfill's kind (its batches are sent by the test)
        f.write('[sources.api.kinds.big]\npath = "/cursor/big"\nitems = "data"\n')
    with RedisServer() as server:
        client = Client(server.url)
        try:
            big = client.progress.create_run("api", "big")
            for seq in range(1, BACKLOG + 1):
                rows = [{"id": f"big-{seq}-{i}"} for i in range(50)]
                messages.batch(client.app, big.run_id, "api", "big", seq, rows,
                               run_seq=big.run_seq, bulk=True)
            small = client.start("api", "item")
            hook = Event("item", Action.UPSERT, {"id": "hook-1"}).as_json("delivery-1")
            messages.webhook(client.app, "api", "item", "batch-1", json.dumps([hook]), count=1)
            with Workers(config=cfg, redis_url=server.url, log=tmp_path / "w.log",
                         pool="threads", concurrency=2):
                run = client.wait(small.run_id, timeout=120)
                backlog_then = client.redis.llen(messages.BULK)
                hook_then = written(tmp_path, "hook-1")
                deadline = time.monotonic() + 120
                while (done := client.progress.get(big.run_id)) is not None and \
                        done.batches_done < BACKLOG and time.monotonic() < deadline:
                    time.sleep(0.1)
        finally:
            client.close()
    assert run.state == "succeeded" and run.items_written == len(items), run
    assert hook_then, "the webhook batch waited behind the backlog"
    assert backlog_then >= BACKLOG // 2, f"the small run ended after the backlog: {backlog_then}"
    assert done is not None and done.batches_done == BACKLOG  # and the backlog is served too


def written(tmp: Path, identifier: str) -> bool:
    with sqlite3.connect(tmp / "db.sqlite") as db:
        return db.execute("SELECT 1 FROM entities WHERE identifier = ?",
                          (identifier,)).fetchone() is not None
