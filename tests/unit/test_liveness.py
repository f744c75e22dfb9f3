"""A node's watch over the others (real Redis: the scripts read Redis's clock)."""

from __future__ import annotations

import time

import redis

from tasks.runs import keys
from tasks.worker.liveness import Liveness


def test_a_silent_node_is_reaped_only_after_this_node_beat_for_a_whole_timeout(
        own_redis_url: str):
    r = redis.Redis.from_url(own_redis_url)
    # Its last beat was long ago: as every node's is after a Redis outage.
    r.zadd(keys.NODES, {"dead": 1.0})
    alive = Liveness(None, r, "alive", timeout=2.0)
    t = time.monotonic()
    assert alive.tick(t) == []  # just (re)started beating: nobody is judged yet
    assert alive.tick(t + 1.0) == []
    assert alive.tick(t + 2.0) == ["dead"]
    assert [m.decode() for m in r.zrange(keys.NODES, 0, -1)] == ["alive"]
    alive._beating_since = None  # a Redis error: the next beat starts the wait again
    r.zadd(keys.NODES, {"late": 1.0})
    assert alive.tick(t + 3.0) == []
