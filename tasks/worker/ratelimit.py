"""One rate limit per source for every process on every machine, kept in Redis.

The limit is GCRA (a token bucket written as one timestamp, the "theoretical arrival time"):
each ``acquire`` atomically reserves the next free slot and sleeps until it, so callers are
served in order and, over any window of t seconds, at most ``rate * t + burst`` requests go out.
A pause (``Retry-After``, ``X-RateLimit-Remaining: 0`` until the reset) moves every caller's
next slot past its end. Time is Redis's clock, so machines with skewed clocks still agree.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import redis

from integrations.http.retry import server_wait
from tasks.runs import keys, scripts


class RedisRateLimiter:
    """The shared limit of one source. ``rate`` None: no steady limit, pauses only.
    ``max_pause``: the longest pause the API's answers may impose on every caller (the
    source's ``http.max_retry_after``); past it, the API's own refusals fail the run with the
    reason rather than holding every kind of the source in silence."""

    def __init__(self, client: redis.Redis, source: str, *, rate: float | None,
                 burst: int | None = None, max_pause: float = 3600.0) -> None:
        self.r = client
        self.source = source
        self.key = keys.rate_limit(source)
        self.interval = 1.0 / rate if rate else 0.0
        self.burst = burst or max(1, int(rate or 1))
        self.max_pause = max_pause
        self._acquire = scripts.register(client, "rate_acquire")
        self._pause = scripts.register(client, "rate_pause")

    async def acquire(self) -> None:
        wait = float(self._acquire(keys=[self.key], args=[self.interval, self.burst]))
        if wait > 0:
            self.r.hincrbyfloat(keys.METRICS, f"rate_limit_wait_seconds|{self.source}|-", wait)
            await asyncio.sleep(wait)

    def observe(self, response: httpx.Response) -> None:
        seconds = server_wait(response, now=time.time())
        if seconds:
            self._pause(keys=[self.key], args=[min(seconds, self.max_pause)])
