"""The settings models every source shares: ``SourceSettings`` (keys every source has,
whatever its integration), ``ApiSettings`` (a source read from one HTTP API), ``HttpSettings``
(how its client talks), and ``StrictModel``, the base of every settings model."""

from __future__ import annotations

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from integrations.http.origin import origin


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpSettings(StrictModel):
    """How a source's client talks to its API (one reused ``httpx.AsyncClient`` per process)."""

    # ``default=`` by keyword: type checkers see a field's default only there.
    timeout: float = Field(default=30.0, gt=0, description="seconds for connect/read/write")
    deadline: float = Field(
        default=120.0, gt=0,
        description="seconds for one request whole: connect, send and every read")
    retries: int = Field(
        default=5, ge=0, description="retries of connect errors, timeouts, 429 and 5xx")
    backoff: float = Field(
        default=0.5, ge=0, description="first backoff in seconds, doubled per retry")
    max_backoff: float = Field(default=30.0, ge=0)
    max_retry_after: float = Field(
        default=120.0, ge=0, description="a longer Retry-After is not waited for in place"
    )


class SourceSettings(StrictModel):
    """Keys every source has, whatever its integration."""

    integration: str
    max_in_flight: int = Field(
        32, ge=1, description="batches of one run enqueued and not yet done before it waits"
    )
    delete_threshold: float = Field(
        0.2, ge=0, le=1, description="refuse a deletion of this share of existing entities or "
        "more (1: no guard)")
    max_rejected: float = Field(
        0.01, ge=0, le=1, description="a run rejecting more than this share of its items fails")
    max_pages: int = Field(
        100_000, ge=1, description="a run that reads more pages fails (an API that never stops)")
    max_batch_items: int = Field(
        2000, ge=1, description="a page with more items is split into several batches")
    max_batch_bytes: int = Field(
        2 * 1024 * 1024, ge=1024, description="a page with a bigger body is split likewise")
    allow_origins: list[str] = Field(
        default_factory=list, description="other origins that next links and redirects may "
        "lead to; requests there carry none of the source's credentials")
    http: HttpSettings = HttpSettings()
    schedule: str | None = Field(
        None, description="cron: 'minute hour day-of-month month day-of-week', run by beat")
    max_concurrency: int = Field(
        8, ge=1, le=256, description="requests in flight at once when pages are known up front")
    rate_limit: float | None = Field(
        None, gt=0, description="requests per second to this API, shared by every process")
    rate_limit_burst: int | None = Field(
        None, ge=1, description="requests that may go at once (default: about rate_limit)")
    partitions: int = Field(
        1, ge=1, le=64, description="producer tasks that split a kind whose pages are known")
    # All four read by tasks.config.schedule_of, the one place schedules are checked.
    every: str | None = Field(None, description="an interval run by beat: 30s, 15m, 2h, 1d")
    full_schedule: str | None = Field(
        None, description="cron of full runs (incremental kinds read everything, and delete)")
    full_every: str | None = Field(None, description="an interval of full runs: 1d")
    # Webhooks (`sluice serve`): a source takes events only when it has a secret.
    webhook_secret: str | None = Field(
        None, min_length=8, description="signs the API's webhook deliveries (write it as "
        "'${ENV_VAR}'); without it the source takes no events")
    webhook_reserve: float = Field(
        0.2, ge=0, lt=1, description="share of rate_limit kept for webhook follow-up fetches "
        "(resyncs never take it)")
    webhook_max_bytes: int = Field(
        1024 * 1024, ge=1024, description="a delivery with a bigger body is refused (413)")

    @field_validator("allow_origins")
    @classmethod
    def _origins(cls, values: list[str]) -> list[str]:
        origins = []
        for value in values:
            url = httpx.URL(value)
            bare = url.raw_path in (b"", b"/")
            if url.scheme not in ("http", "https") or not url.host or not bare:
                raise ValueError(f"{value!r} is not an origin like 'https://api.example.com'")
            origins.append(origin(url))
        return origins

    def kind_names(self) -> list[str]:
        raise NotImplementedError

    def keeps_secrets(self) -> bool:
        """True when the source keeps secrets of its own (a rotated refresh token), sealed
        with ``SLUICE_SECRET_KEY``."""
        return False


class ApiSettings(SourceSettings):
    """A source read from one HTTP API."""

    base_url: str
