"""A worker's Redis connections fall back after a burst (tasks/runs/client.py).

redis-py's pools (the worker's runtime client, kombu's broker channels) open a connection
whenever every one they have is in use and kept them all for good: after a burst of concurrent
batches a worker held as many connections as its busiest moment needed, for the rest of its
life (ops/bench/SOAK.md: clients rising in steps over a soak). Now a connection unused for
``SLUICE_REDIS_IDLE_SECONDS`` is closed."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest

from integrations.fakeapi import FakeAPI
from tasks.operator.redisserver import RedisServer
from tests.support.workers import Client, Workers, cursor_config

pytestmark = pytest.mark.integration


def redis_connections(pid: int, port: int) -> int:
    """The process's open TCP connections to Redis."""
    return sum(1 for c in psutil.Process(pid).net_connections("tcp")
               if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED)


def test_a_worker_closes_the_connections_a_burst_opened_once_they_are_idle(
        tmp_path: Path, api: FakeAPI) -> None:
    api.set_items("item", 600)
    cfg = cursor_config(tmp_path, api.url, limit=5)  # 120 batches for 8 threads
    with RedisServer() as server:
        client = Client(server.url)
        try:
            with Workers(config=cfg, redis_url=server.url, log=tmp_path / "w.log",
                         pool="threads", concurrency=8,
                         env={"SLUICE_REDIS_IDLE_SECONDS": "1"}) as workers:
                pid = workers.child.pid
                # At rest: the connections kombu holds for good (its fetch, pub/sub), the
                # heartbeat's, the runtime's.
                at_rest = redis_connections(pid, server.port)
                peak = at_rest
                run = client.start("api", "item")
                while not ((got := client.progress.get(run.run_id)) and got.state.ended):
                    peak = max(peak, redis_connections(pid, server.port))
                    time.sleep(0.01)
                assert got.state == "succeeded", got
                # The burst needed more than the worker holds at rest ...
                assert peak >= at_rest + 3, (at_rest, peak)
                # ... and once idle, it falls back (the heartbeat's may reopen at its beat).
                deadline = time.monotonic() + 30
                while (now := redis_connections(pid, server.port)) > at_rest + 1:
                    assert time.monotonic() < deadline, (
                        f"still {now} connections to Redis 30 s after the run, "
                        f"{at_rest} at rest, {peak} at the peak")
                    time.sleep(0.2)
        finally:
            client.close()
