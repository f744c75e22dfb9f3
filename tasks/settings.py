"""Process settings from the environment (``SLUICE_*``), typed, built once.

These are about *where* things run (Redis, the config file, task bounds); *what* to sync lives
in sluice.toml (``tasks.config``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from integrations.errors import ConfigError

# How long a webhook delivery may come again: GitHub redelivers a delivery up to 3 days after
# it sent it (by hand, or a script redelivering failed ones through its API); Jira retries
# within hours. Four days: the three, and a day for the window's edge (a redelivery queued at
# GitHub, clocks). Memory, measured on Redis 6.2 with the expiry: ~165 bytes a claim, ~210 a
# tombstone; a source of 1 delivery a second holds ~350k claims (~57 MB), of 10 a second
# ~3.5M (~570 MB). Tombstones are one per delete, far fewer.
REDELIVERY_WINDOW = 4 * 86400


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SLUICE_", extra="ignore", frozen=True)

    redis_url: str = "redis://127.0.0.1:6379/0"
    # The task queue: Redis (the same server, by default) or RabbitMQ (amqp://...). Progress,
    # locks, the rate limit and beat's schedule stay in Redis either way.
    broker_url: str | None = None
    config: Path = Path("sluice.toml")
    # What `celery -A tasks worker` runs without -P/-c: the threads pool, 8 tasks at once in
    # each process (writes mostly wait on the target; see the README's worker section for when
    # prefork is better). Celery takes `-P prefork` for "not given", so choose prefork here.
    worker_pool: Literal["threads", "prefork", "solo"] = "threads"
    worker_concurrency: int = Field(8, ge=1)
    # The threads pool only: how many such processes (nodes) the command runs, 0 for one per
    # core (tasks/worker/siblings.py says why; 1: one process, as Celery itself would).
    worker_processes: int = Field(0, ge=0)
    # Redis broker: an unacked message is handed out again after this long. It must stay above
    # the longest task; producer slices and batches are kept far below it.
    visibility_timeout: int = Field(600, ge=10)
    # Live workers look for such messages every interval x throttle seconds (kombu: 10 x 10).
    unacked_restore_interval: int = Field(10, ge=1)
    # A worker node whose heartbeat stopped this long ago is dead: a live node gives its
    # messages back to the queue (tasks/worker/liveness.py). Redis broker only.
    node_timeout: float = Field(10.0, ge=2)
    # A producer task fetches at most this many pages / seconds, saves its cursor, and
    # continues in a fresh task, so every task is short and a lost one costs little.
    producer_slice_pages: int = Field(500, ge=1)
    producer_slice_seconds: float = Field(30.0, gt=0)
    # A run that has read this many items is a backfill: its next batches go to the
    # sluice.bulk queue, so smaller runs' batches do not wait behind them (tasks/messages.py).
    bulk_after_items: int = Field(10_000, ge=0)
    # ... and, while other work waits in the queues, it has at most this many batches in
    # flight (or its source's max_in_flight, if lower): a backfill leaves the rest of the
    # fleet's slots and cores to that work. Alone, it takes them all.
    bulk_max_in_flight: int = Field(4, ge=1)
    # Batch tasks (a batch, a children task, a webhook batch): transient errors (the target's,
    # the API's) are retried this often, then dead-lettered. Every task's retry waits the
    # backoff from ingest_backoff up to ingest_max_backoff, or the API's or target's hint
    # (Retry-After) capped at ingest_max_backoff (tasks/boundary.py).
    ingest_retries: int = Field(5, ge=0)
    ingest_backoff: float = Field(1.0, ge=0)
    ingest_max_backoff: float = Field(60.0, ge=0)
    # The end of a run: a transient target error while it deletes stale entities is retried
    # this often, then the run fails with the reason.
    finalize_retries: int = Field(5, ge=0)
    # A run's lock expires when the run shows no progress for this long, so a dead run never
    # blocks its source and kind forever.
    run_lock_seconds: int = Field(1800, ge=10)
    # A running run with no progress (no page, no batch) for this long is marked 'stalled'.
    stall_seconds: float = Field(900.0, gt=0)
    # How long run records and dead letters stay in Redis.
    run_ttl_seconds: int = Field(14 * 86400, ge=60)
    # `sluice serve`: a delivery id is remembered this long (a redelivery within it is applied
    # once), and so is a deleted item's tombstone (an older version redelivered within it does
    # not bring the item back). See REDELIVERY_WINDOW.
    webhook_delivery_ttl: int = Field(REDELIVERY_WINDOW, ge=60)
    # Seals what OAuth 2.0 sources share and keep (tokens in Redis, the rotated refresh token
    # in the target's state table); required by `oauth2_refresh_token`. Any long random text,
    # the same on every worker node.
    secret_key: SecretStr | None = None
    # Events of one source and kind arriving within this many seconds go out as one batch.
    webhook_linger: float = Field(0.05, ge=0, le=5)
    # A pooled Redis connection unused this long is closed (0: kept for good), in every
    # process and in the worker's broker channels: a burst's extra connections do not stay
    # open for good (tasks/runs/client.py).
    redis_idle_seconds: float = Field(60.0, ge=0)
    # Each Redis connection names itself (CLIENT SETNAME sluice-ROLE-PID-N), so CLIENT LIST
    # tells which process and pool holds it. Off by default: a Redis user whose ACL refuses
    # CLIENT SETNAME could not connect.
    redis_client_names: bool = False


    @property
    def queue_url(self) -> str:
        """Where the tasks travel: ``broker_url``, else Redis."""
        return self.broker_url or self.redis_url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(f"environment: {exc}") from exc
