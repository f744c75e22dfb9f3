"""The shared rate limit in a real Redis: the share kept for webhook follow-up fetches."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid

import httpx
import pytest
import redis

from tasks.worker.ratelimit import RedisRateLimiter


@pytest.fixture
def client(own_redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(own_redis_url)


def limiters(client: redis.Redis, **kw: float) -> tuple[RedisRateLimiter, RedisRateLimiter]:
    source = f"src-{uuid.uuid4().hex[:6]}"
    rate = kw.pop("rate", 50.0)
    return (RedisRateLimiter(client, source, rate=rate, burst=1, **kw),
            RedisRateLimiter(client, source, rate=rate, burst=1, webhook=True, **kw))


def timed(limiter: RedisRateLimiter, n: int) -> list[tuple[float, float, float]]:
    """``n`` reservations, each as (time before the call, the wait it got, time after)."""
    got = []
    for _ in range(n):
        before = time.time()
        wait = limiter.reserve()
        got.append((before, wait, time.time()))
    return got


def paced(got: list[tuple[float, float, float]], interval: float) -> bool:
    """Each slot (its call's time plus its wait) comes at least ``interval`` after the one
    before, and exactly that when it had to wait (it queued behind it). Bounds from the times
    around each call, so a busy machine that slows the calls moves nothing."""
    for (b0, w0, a0), (b1, w1, a1) in itertools.pairwise(got):
        low, high = b1 + w1 - a0 - w0, a1 + w1 - b0 - w0
        if high < interval - 0.01 or (w1 > 0 and low > interval + 0.01):
            return False
    return True


def test_resyncs_take_at_most_their_share_and_webhooks_never_wait_behind_them(client) -> None:
    resync, webhook = limiters(client, reserve=0.2)
    # 40 resync requests at once: spaced by 1 / (0.8 × 50) = 25 ms, the last ~1 s ahead.
    got = timed(resync, 40)
    assert paced(got, 1 / 40)
    # A webhook fetch now is not queued behind those slots: it goes at once, and webhook
    # fetches get their own 0.2 × 50 = 10 per second.
    got = timed(webhook, 5)
    assert got[0][1] < 0.05 and paced(got, 1 / 10)
    # Together they never pass the source's 50 per second: 40 + 10 in about a second.


def test_without_a_reserve_webhook_fetches_share_the_resyncs_bucket(client) -> None:
    resync, webhook = limiters(client, reserve=0.0)
    got = timed(resync, 10)
    assert paced(got, 1 / 50)  # the whole 50 per second
    got += timed(webhook, 1)
    assert got[-1][1] > 0 and paced(got, 1 / 50)  # queued right behind them


def test_a_pause_from_the_api_stops_both_shares(client) -> None:
    resync, webhook = limiters(client, reserve=0.2, max_pause=60)
    resync.observe(httpx.Response(429, headers={"Retry-After": "3"}))
    assert webhook.reserve() == pytest.approx(3, abs=0.2)
    assert resync.reserve() == pytest.approx(3, abs=0.2)


def test_a_reservation_does_not_hold_the_event_loop(client: redis.Redis) -> None:
    """The producers and webhook fetches of a process share one loop: while Redis is slow to
    answer a reservation (paused here for a second), the loop's other coroutines go on."""
    limiter, _ = limiters(client, rate=1000.0)
    limiter.reserve()  # its script loaded

    async def ticks_during_acquire() -> int:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        client.client_pause(1000)  # Redis answers nobody for a second
        before = ticks
        await limiter.acquire()
        during = ticks - before
        ticker.cancel()
        return during

    assert asyncio.run(ticks_during_acquire()) >= 5
