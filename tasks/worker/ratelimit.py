"""One rate limit per source for every process on every machine, kept in Redis.

The limit is GCRA (a token bucket written as one timestamp, the "theoretical arrival time"):
each ``acquire`` atomically reserves the next free slot and sleeps until it, so callers are
served in order and, over any window of t seconds, at most ``rate * t + burst`` requests go out.
A pause (``Retry-After``, ``X-RateLimit-Remaining: 0`` until the reset) moves every caller's
next slot past its end. Time is Redis's clock, so machines with skewed clocks still agree.

A source's ``webhook_reserve`` (r, 0.2 by default) splits its limit R in two buckets: resyncs
take theirs at (1 - r)·R, webhook follow-up fetches theirs at r·R, so a resync that runs flat
out never takes what a webhook needs, and the two together never pass R. (One bucket that
both take, with resyncs also held to (1 - r)·R, would not do it: GCRA reserves slots ahead,
and a webhook caller would queue behind every slot the resyncs reserved.) A pause from the
API stops both. With ``webhook_reserve = 0``, or for a source without a ``webhook_secret``
(it takes no webhooks), there is one bucket at R.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import redis

from integrations.http.retry import server_wait
from tasks.runs import keys, metrics, scripts


class RedisRateLimiter:
    """The shared limit of one source. ``rate`` None: no steady limit, pauses only.
    ``max_pause``: the longest pause the API's answers may impose on every caller (the
    source's ``http.max_retry_after``); past it, the API's own refusals fail the run with the
    reason rather than holding every kind of the source in silence."""

    def __init__(self, client: redis.Redis, source: str, *, rate: float | None,
                 burst: int | None = None, max_pause: float = 3600.0, reserve: float = 0.0,
                 webhook: bool = False) -> None:
        self.r = client
        self.source = source
        own = webhook and reserve > 0  # the webhook share has a bucket of its own
        share = (reserve if own else 1.0 - reserve) if rate else 1.0
        self.key = keys.rate_limit_webhook(source) if own else keys.rate_limit(source)
        # Both buckets are paused by what the API says, whoever heard it.
        self.buckets = [keys.rate_limit(source), keys.rate_limit_webhook(source)]
        self.interval = 1.0 / (rate * share) if rate else 0.0
        self.burst = max(1, round((burst or max(1, int(rate or 1))) * share))
        self.max_pause = max_pause
        self._acquire = scripts.register(client, "rate_acquire")
        self._pause = scripts.register(client, "rate_pause")

    def reserve(self) -> float:
        """Take the next free slot: the seconds until it."""
        return float(self._acquire(keys=[self.key], args=[self.interval, self.burst]))

    async def acquire(self) -> None:
        """Reserve a slot and sleep until it. The reservation is a Redis round trip, made on
        the loop's executor: every producer and webhook fetch of the process shares the loop,
        and a blocking call there held them all while Redis answered (13% of the loop's time
        during ops/bench/fairness.py's load, where Redis waits for a core too)."""
        wait = await asyncio.get_running_loop().run_in_executor(None, self._reserve_counted)
        if wait > 0:
            await asyncio.sleep(wait)

    def _reserve_counted(self) -> float:
        wait = self.reserve()
        if wait > 0:
            self.r.hincrbyfloat(keys.METRICS, metrics.field(metrics.RATE_LIMIT_WAIT, self.source),
                                wait)
        return wait

    def observe(self, response: httpx.Response) -> None:
        seconds = server_wait(response, now=time.time())
        if seconds:
            self.pause(seconds)

    def pause(self, seconds: float) -> None:
        for bucket in self.buckets:
            self._pause(keys=[bucket], args=[min(seconds, self.max_pause)])
