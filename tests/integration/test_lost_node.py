"""No lost message, whenever a worker node dies (issue 20, item 1).

A node SIGKILLed at any instant must leave every message it took where a live node can give it
back. The first test stops a node at the worst instant on purpose; the second kills nodes at
random instants many times over while both cores are kept busy.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import redis

from integrations.fakeapi import FakeAPI
from tasks.operator.redisserver import RedisServer
from tests.support.workers import Client, Workers, cursor_config

pytestmark = pytest.mark.integration

NODE_TIMEOUT = "2"


def blocked_fetch(client: redis.Redis) -> bool:
    """Whether some client is blocked in Redis waiting for a list (a worker's idle fetch)."""
    return any("b" in c["flags"] for c in client.client_list())


def test_a_node_stopped_while_its_fetch_waits_loses_no_message(tmp_path: Path, api: FakeAPI):
    """Node a is idle, its fetch waiting in Redis, when it is frozen (SIGSTOP, as a busy machine
    or a long GC pause does) and then killed. kombu's plain transport hands the run's first
    message to the frozen node's BRPOP the moment it is published, and records it nowhere: the
    run never ends. Here the message stays where node b finds it."""
    items = api.set_items("item", 120)
    cfg = cursor_config(tmp_path, api.url)
    env = {"SLUICE_NODE_TIMEOUT": NODE_TIMEOUT}
    with RedisServer() as server:
        client = Client(server.url)
        node_a = Workers(config=cfg, redis_url=server.url, log=tmp_path / "a.log", name="a",
                         env=env).start()
        node_b = Workers(config=cfg, redis_url=server.url, log=tmp_path / "b.log", name="b",
                         env=env)
        try:
            node_a.child.wait_until(lambda: blocked_fetch(client.redis), timeout=30, poll=0.005)
            node_a.child.signal(signal.SIGSTOP)
            run = client.start("api", "item")  # Redis serves a waiting BRPOP before replying
            node_a.child.signal(signal.SIGKILL)
            assert node_a.process
            node_a.process.wait(10)
            node_b.start()
            run = client.wait(run.run_id, timeout=30)
        finally:
            node_b.stop()
            node_a.stop()
            client.close()
    assert run.state == "succeeded", run
    assert run.items_written == len(items)
