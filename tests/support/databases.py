"""Databases of the session's Redis server, handed out one per test module (or test)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from tasks.operator.redisserver import RedisServer

# The session's Redis is started with this many databases: each lease takes a new one, never
# one handed out before, so a process a test module left behind cannot write into the next
# module's database.
DATABASES = 512


class RedisDatabases:
    """Hands out the session server's databases: each one once, flushed when it is handed out
    and when it is given back. Database 0 is the in-process default (SLUICE_REDIS_URL) and is
    never handed out."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.next = itertools.count(1)

    @contextmanager
    def lease(self) -> Iterator[str]:
        """A fresh database's URL, flushed again once the block ends."""
        index = next(self.next)
        if index >= DATABASES:
            raise RuntimeError(f"the session's Redis has {DATABASES} databases; raise DATABASES")
        url = f"redis://127.0.0.1:{self.server.port}/{index}"
        client = redis.Redis.from_url(url)
        try:
            client.flushdb()
            yield url
        finally:
            client.flushdb()
            client.close()
