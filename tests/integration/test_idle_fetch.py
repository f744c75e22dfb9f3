"""An idle worker takes a message the moment it is published (tasks/worker/broker.py).

Its fetch does not block in Redis, so between two looks at empty queues a worker waits in Redis
on its queues' wake lists. Redis ends a blocking command's timeout only at its next tick (``hz``;
set to 1 here, so a wait lasts up to a second unless another command wakes Redis first): a
worker that waited out its timeout would take the run's producer task up to a second late. The
token published beside the message ends the wait at once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from integrations.fakeapi import FakeAPI
from tasks.operator.redisserver import RedisServer
from tasks.worker import broker
from tests.support.workers import Client, Workers, cursor_config

pytestmark = pytest.mark.integration


def blocked_fetch(client: redis.Redis) -> bool:
    """Whether some client is blocked in Redis waiting for a list (a worker's idle fetch)."""
    return any("b" in c["flags"] for c in client.client_list())


def test_an_idle_worker_takes_a_run_when_it_is_sent_not_at_the_end_of_its_wait(
        tmp_path: Path, api: FakeAPI):
    broker.install()  # this process's publishes push tokens, as `sluice run`'s do
    api.set_items("item", 5)
    cfg = cursor_config(tmp_path, api.url)
    with RedisServer() as server:
        r = redis.Redis.from_url(server.url)
        r.config_set("hz", 1)
        client = Client(server.url)
        waits = []
        try:
            with Workers(config=cfg, redis_url=server.url, log=tmp_path / "w.log",
                         concurrency=1) as workers:
                for attempt in range(6):
                    workers.child.wait_until(lambda: blocked_fetch(r), timeout=30, poll=0.005)
                    sent = time.time()
                    run = client.start("api", "item")
                    # Nothing else talks to Redis until the API is asked (any command would
                    # end an expired wait early).
                    while not (asked := [t for t, method, _, _ in api.requests("/cursor/item")
                                         if method == "GET" and t >= sent]):
                        assert time.time() < sent + 30, "the run's producer never asked"
                        time.sleep(0.002)
                    assert client.wait(run.run_id, timeout=30).state == "succeeded"
                    if attempt:  # the first run also warms the worker's process up
                        waits.append(min(asked) - sent)
        finally:
            client.close()
            r.close()
    # Without the token each wait is uniform over the second up to the tick: five of them all
    # under 0.3 s would happen once in 400 runs.
    assert max(waits) < 0.3, waits
