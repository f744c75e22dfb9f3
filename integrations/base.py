"""The Integration protocol and the settings every source shares.

An integration turns a source section of ``sluice.toml`` into pages of items:

    integration = load(settings)                 # settings: a validated SourceSettings subclass
    async for page in integration.pages(kind, client, state=None):
        page.items          # list of JSON-able items, as the API returned them
        page.state          # JSON state to fetch the *next* page from (None: this was the last)
    integration.identifier(kind, item)   # -> str, or None when the item has none

The state makes a resync resumable: the producer stores it in Redis after every page, and a
fresh task continues from it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from pydantic import BaseModel, ConfigDict, Field, model_validator


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpSettings(StrictModel):
    """How a source's client talks to its API (one reused ``httpx.AsyncClient`` per process)."""

    timeout: float = Field(30.0, gt=0, description="seconds for connect/read/write")
    retries: int = Field(5, ge=0, description="retries of connect errors, timeouts, 429 and 5xx")
    backoff: float = Field(0.5, ge=0, description="first backoff in seconds, doubled per retry")
    max_backoff: float = Field(30.0, ge=0)
    max_retry_after: float = Field(
        120.0, ge=0, description="a longer Retry-After is not waited for in place"
    )


class SourceSettings(StrictModel):
    """Keys every source has, whatever its integration."""

    integration: str
    max_in_flight: int = Field(
        32, ge=1, description="batches of one run enqueued and not yet done before it waits"
    )
    delete_threshold: float = Field(
        0.9, ge=0, le=1, description="never delete more than this share of existing entities"
    )
    http: HttpSettings = HttpSettings()
    schedule: str | None = Field(
        None, description="cron: 'minute hour day-of-month month day-of-week', run by beat")
    every: str | None = Field(
        None, pattern=r"^[1-9][0-9]*[smhd]$", description="an interval run by beat: 30s, 15m, 2h, 1d")

    @model_validator(mode="after")
    def _one_schedule(self) -> SourceSettings:
        if self.schedule is not None and self.every is not None:
            raise ValueError("set either 'schedule' (cron) or 'every', not both")
        if self.schedule is not None and len(self.schedule.split()) != 5:
            raise ValueError(f"schedule {self.schedule!r} is not a 5-field cron string")
        return self

    def kind_names(self) -> list[str]:
        raise NotImplementedError


@dataclass(frozen=True)
class Page:
    """One page of items and the state to fetch the next page from (None: no next page)."""

    items: list[Any]
    state: dict[str, Any] | None


class Integration(Protocol):
    """What the producer and the ingest task need from an integration."""

    settings: SourceSettings

    def kinds(self) -> list[str]:
        """The kinds this source can resync."""
        ...

    def client(self) -> httpx.AsyncClient:
        """A new client for this source (base URL, auth, retries); the caller reuses it."""
        ...

    def pages(
        self, kind: str, client: httpx.AsyncClient, *, state: dict[str, Any] | None = None
    ) -> AsyncIterator[Page]:
        """Yield the pages of ``kind``, starting at ``state`` (None: the first page).

        Raises TransientHTTPError, PermanentHTTPError or MalformedPage.
        """
        ...

    def identifier(self, kind: str, item: Any) -> str | None:
        """The item's identifier as a string, or None when it has none."""
        ...
