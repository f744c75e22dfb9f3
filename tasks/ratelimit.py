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
from tasks import keys

# KEYS: bucket. ARGV: interval (s per request), burst. Returns the seconds to wait.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('HGET', KEYS[1], 'tat') or '0')
local pause = tonumber(redis.call('HGET', KEYS[1], 'pause') or '0')
local start = math.max(tat, now)
local slot = math.max(start - (burst - 1) * interval, pause)
local new_tat = math.max(start, slot) + interval
redis.call('HSET', KEYS[1], 'tat', tostring(new_tat))
redis.call('EXPIRE', KEYS[1], math.ceil(new_tat - now) + 60)
return tostring(math.max(0, slot - now))
"""

# KEYS: bucket. ARGV: seconds. Every caller waits at least until now + seconds.
_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local until_ = now + tonumber(ARGV[1])
local pause = tonumber(redis.call('HGET', KEYS[1], 'pause') or '0')
if until_ > pause then redis.call('HSET', KEYS[1], 'pause', tostring(until_)) end
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1])) + 60)
return 1
"""


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
        self._acquire = client.register_script(_ACQUIRE)
        self._pause = client.register_script(_PAUSE)

    async def acquire(self) -> None:
        wait = float(self._acquire(keys=[self.key], args=[self.interval, self.burst]))
        if wait > 0:
            self.r.hincrbyfloat(keys.METRICS, f"rate_limit_wait_seconds|{self.source}|-", wait)
            await asyncio.sleep(wait)

    def observe(self, response: httpx.Response) -> None:
        seconds = server_wait(response, now=time.time())
        if seconds:
            self._pause(keys=[self.key], args=[min(seconds, self.max_pause)])
