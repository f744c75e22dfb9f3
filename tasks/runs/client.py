"""The Redis client of every Sluice process (workers, beat's tasks, the CLI), and the pool that
closes the connections a burst opened once they have stayed unused.

A redis-py pool opens a connection whenever every one it has is in use, and keeps them all for
good: it grows to the most its threads ever wanted at once (a worker's task threads, the event
loop's executor, kombu's acks and publishes) and stays there. Under a steady load with a
backfill now and then, a worker's connections so rose in steps and never fell
(ops/bench/SOAK.md). ``IdlePool`` is that pool with one change: a connection unused for
``SLUICE_REDIS_IDLE_SECONDS`` is closed by a thread of its own (``_Closer``), never by a
caller, so no command waits for it and nothing is added to a command's path. The closed
connection stays in the pool and connects again when the load next needs that many (the pool
hands out the most recently used ones first, so the ones left unused are the extra ones). The
worker's broker channels use it too (``tasks/worker/broker.py``); the connections kombu holds
for good (its fetch, pub/sub) are never idle in the pool, so they are never closed.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import weakref
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from tasks.settings import get_settings

_serial = itertools.count(1)


def client_name(role: str) -> str | None:
    """The name a connection of ``role`` gives itself (CLIENT SETNAME), when
    ``SLUICE_REDIS_CLIENT_NAMES`` asks for names; None otherwise (a Redis user whose ACL
    refuses CLIENT SETNAME could not connect at all)."""
    if not get_settings().redis_client_names:
        return None
    return f"sluice-{role}-{os.getpid()}-{next(_serial)}"


class IdlePool(redis.ConnectionPool):
    """A redis-py pool whose connections unused for ``idle_seconds`` are closed (0: never).

    When a connection was last used is read from redis-py's health check: every reply sets
    ``next_health_check`` to ``health_check_interval`` later. So the pool adds nothing to a
    command's path; one made without a health check gets one every ``idle_seconds`` (a
    connection unused that long is closed or, between two looks of the closer, pinged first).
    """

    def __init__(self, *args: Any, idle_seconds: float | None = None, **kwargs: Any) -> None:
        idle = get_settings().redis_idle_seconds if idle_seconds is None else idle_seconds
        if idle > 0 and not kwargs.get("health_check_interval"):
            kwargs["health_check_interval"] = idle
        super().__init__(*args, **kwargs)
        self.idle_seconds = idle
        if idle > 0:
            _Closer.watch(self)

    def close_idle(self, now: float) -> int:
        """Close the connections unused for ``idle_seconds`` (they stay in the pool, closed).
        Returns how many. Only those in the pool: one handed out is never touched."""
        if self.pid != os.getpid():  # inherited across a fork: the child's pool resets itself
            return 0
        closed = 0
        with self._lock:
            for connection in self._available_connections:
                used = connection.next_health_check - connection.health_check_interval
                if connection.is_connected and now - used >= self.idle_seconds:
                    connection.disconnect()
                    closed += 1
        return closed

    def connected(self) -> int:
        """Open connections, in use or in the pool (tests, the soak's probe)."""
        with self._lock:
            return sum(c.is_connected for c in
                       itertools.chain(self._available_connections, self._in_use_connections))


class _Closer:
    """The thread that closes a process's idle pooled connections: one per process (a forked
    child starts its own when it makes a pool; threads do not survive a fork)."""

    _running: tuple[int, _Closer] | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.pools: weakref.WeakSet[IdlePool] = weakref.WeakSet()
        self.thread = threading.Thread(target=self._run, name="sluice-redis-idle", daemon=True)

    @classmethod
    def watch(cls, pool: IdlePool) -> None:
        with cls._lock:
            if cls._running is None or cls._running[0] != os.getpid():
                cls._running = (os.getpid(), cls())
                cls._running[1].thread.start()
            cls._running[1].pools.add(pool)

    def _run(self) -> None:
        while True:
            pools = list(self.pools)
            # A look every quarter of the shortest idle time: a connection closes between
            # idle_seconds and 1.25 x idle_seconds after its last use.
            every = min((p.idle_seconds for p in pools), default=60.0) / 4
            time.sleep(every)
            now = time.monotonic()
            for pool in pools:
                pool.close_idle(now)


def connect_redis(url: str, *, role: str = "client") -> redis.Redis:
    """A Redis client that rides out a restart of about half a minute: progress updates
    retry with backoff instead of failing the task whose batch is already written. Its
    connections left unused for ``SLUICE_REDIS_IDLE_SECONDS`` are closed (``IdlePool``);
    ``role`` names them when ``SLUICE_REDIS_CLIENT_NAMES`` is set."""
    pool = IdlePool.from_url(
        url, retry=Retry(ExponentialBackoff(cap=4.0, base=0.1), retries=12),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError], health_check_interval=30,
        client_name=client_name(role))
    client = redis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True  # as Redis.from_url: close() closes the pool
    return client
