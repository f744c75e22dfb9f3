"""The Redis client of every Sluice process (workers, beat's tasks, the CLI)."""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry


def connect_redis(url: str) -> redis.Redis:
    """A Redis client that rides out a restart of about half a minute: progress updates
    retry with backoff instead of failing the task whose batch is already written."""
    return redis.Redis.from_url(
        url, retry=Retry(ExponentialBackoff(cap=4.0, base=0.1), retries=12),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError], health_check_interval=30)
