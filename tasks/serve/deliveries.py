"""What ``sluice serve`` keeps in Redis: each delivery id claimed once (``SET NX EX``), and
counters of what it answered in the metrics hash (``keys.METRICS``, named by
``tasks.runs.metrics``, shown by ``tasks.operator.exporter``), a delivery's all at once (one
MULTI):

    webhook_deliveries|SOURCE|-|OUTCOME   accepted, duplicate, empty, refused_<reason>
    webhook_events|SOURCE|KIND            events enqueued

A delivery to a source that is not served counts under source ``-``: the path's name comes
from outside, and must not grow the hash.
"""

from __future__ import annotations

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from tasks.runs import keys, metrics


def connect(url: str, *, connections: int = 32) -> aioredis.Redis:
    """A client that rides out a short Redis hiccup, but never holds a request for long: a
    sender whose request waited past its own timeout retries anyway. At most
    ``connections`` to Redis, and a request waits (up to 5 s) for a free one: a burst of
    hundreds of concurrent deliveries must queue, not fail with "Too many connections"
    (GitHub does not retry a delivery answered 503 on its own)."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=connections, timeout=5,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError], socket_timeout=5,
        socket_connect_timeout=5, health_check_interval=30)
    return aioredis.Redis.from_pool(pool)  # closing the client closes the pool


class Deliveries:
    def __init__(self, r: aioredis.Redis, *, ttl: int) -> None:
        self.r = r
        self.ttl = ttl

    async def claim(self, source: str, delivery: str) -> bool:
        """True when this is the first time ``delivery`` arrives (it is claimed for ``ttl``
        seconds); False for a redelivery of one already accepted."""
        return bool(await self.r.set(keys.webhook_delivery(source, delivery), "1", nx=True,
                                     ex=self.ttl))

    async def release(self, source: str, delivery: str) -> None:
        """Forget a claim whose events could not be enqueued: the sender's retry is applied."""
        await self.r.delete(keys.webhook_delivery(source, delivery))

    async def count(self, source: str, outcome: str, *, events: dict[str, int] | None = None
                    ) -> None:
        """Add one delivery with ``outcome`` (and its events per kind) to the counters, in one
        transaction: the outcome and its events are counted together or not at all."""
        pipe = self.r.pipeline(transaction=True)
        pipe.hincrby(keys.METRICS, metrics.delivery(source, outcome), 1)
        for kind, n in (events or {}).items():
            pipe.hincrby(keys.METRICS, metrics.field(metrics.WEBHOOK_EVENTS, source, kind), n)
        await pipe.execute()

    async def ping(self) -> bool:
        return bool(await self.r.ping())
