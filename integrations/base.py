"""The Integration protocol and the settings every source shares.

An integration turns a source section of ``sluice.toml`` into pages of items. It fetches one
page at a time; ``integrations.pager`` drives it (follow the next state, or fetch the pages it
reveals concurrently), so every integration gets parallel pages, checkpoints and partitions:

    fetched = await integration.fetch(kind, client, state)   # state None: the first page
    fetched.items        # list of JSON-able items, as the API returned them
    fetched.next         # JSON state of the next page (None: this was the last)
    fetched.plan         # JSON plan of *every* remaining page, when the API reveals it
    integration.planned(kind, plan, i, partition=p)  # -> the state of the i-th planned page
    await integration.partitions(kind, client)  # -> None, or JSON keys to split the kind by
    integration.identifier(kind, item)       # -> str, or None when the item has none

Webhooks (``sluice serve``; see ``integrations.webhooks``): ``verify``, ``delivery``,
``events``, ``cursor_path`` and ``fetch_item``.

An integration over an HTTP API subclasses ``integrations.paged.PagedIntegration``, which
supplies all of this but the API's own choices, and registers itself with
``@integrations.registry.register("name")``; its source settings subclass ``ApiSettings``.
"""

from __future__ import annotations

from collections.abc import Mapping as HeaderMap
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from integrations.http.oauth import TokenStore
    from integrations.http.ratelimit import RateLimiter
    from integrations.incremental import Incremental
    from integrations.mapping import Mapping
    from integrations.secrets import Redactor
    from integrations.slices import Slices
    from integrations.tombstones import Tombstones
    from integrations.webhooks import Event


def origin(url: httpx.URL | str) -> str:
    """``scheme://host[:port]`` of a URL (the port only when it is not the scheme's default)."""
    url = httpx.URL(url)
    return f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port is not None else "")


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


State = dict[str, Any]


@dataclass(frozen=True)
class Fetched:
    """One page: its items, the next page's state, and (when the API reveals how many pages
    there are) a plan of all the remaining ones."""

    items: list[Any]
    next: State | None
    plan: State | None = None
    # Why this page may not be the last though it ends the paging (a full page with no
    # link to the next one): the run then deletes nothing.
    truncated: str | None = None
    # How many items the API says the kind (or partition) holds, when it says so.
    total: int | None = None


class Integration(Protocol):
    """What the producer and the ingest task need from an integration."""

    @property
    def settings(self) -> SourceSettings:
        """The source's validated section of sluice.toml."""
        ...

    def kinds(self) -> list[str]:
        """The kinds this source can resync."""
        ...

    def client(self, *, limiter: RateLimiter | None = None, redactor: Redactor | None = None,
               tokens: TokenStore | None = None, secret_key: str | None = None
               ) -> httpx.AsyncClient:
        """A new client for this source (base URL, auth, retries, the shared rate limit, its
        credentials kept to its own origin); the caller reuses it. ``tokens``: where OAuth 2.0
        tokens are shared (a store of this process alone when None); ``secret_key``:
        ``SLUICE_SECRET_KEY``, which seals them."""
        ...

    async def partitions(self, kind: str, client: httpx.AsyncClient) -> list[Any] | None:
        """JSON keys that split ``kind`` into parts fetched by separate producer tasks (a
        repository, a time window), or None when the kind is one sequence of pages."""
        ...

    def incremental(self, kind: str) -> Incremental | None:
        """How ``kind`` reads only what changed (None: it is always read whole)."""
        ...

    def slices(self, kind: str) -> Slices | None:
        """How ``kind`` is cut into time windows, each a partition of the run (None: it is
        not); ``fetch`` of partition ``{"window": [a, b]}`` reads one of them."""
        ...

    def parent(self, kind: str) -> str | None:
        """The kind whose every item fans out to ``kind`` (None: ``kind`` is read on its own)."""
        ...

    def mapping(self, kind: str) -> Mapping | None:
        """The kind's jq mapping, compiled once (None: its items land whole in ``entities``).
        Raises MappingError for an expression jq does not compile."""
        ...

    def mapping_key(self, kind: str) -> str:
        """Where the kind's mapping is written in its source's section, for error messages:
        ``kinds.KIND.mapping`` (REST), ``mappings.KIND`` (GitHub, Jira)."""
        ...

    def tombstones(self, kind: str) -> Tombstones | None:
        """Which of the kind's items are the API's deletion tombstones (its ``deleted``
        expression, compiled once), or None when none are: each deletes its identifier's row
        and is never stored."""
        ...

    def parent_ref(self, kind: str, parent_item: Any) -> dict[str, Any]:
        """What a child of ``kind`` needs of one parent item (its dot paths and values): the
        ``partition`` its pages are fetched with."""
        ...

    def with_parent(self, kind: str, ref: dict[str, Any], item: Any) -> Any:
        """A child item as it lands, with the parent fields it carries."""
        ...

    async def fetch(self, kind: str, client: httpx.AsyncClient, state: State | None, *,
                    partition: Any = None, since: Any = None) -> Fetched:
        """Fetch the page at ``state`` (None: the first page of the kind or partition);
        ``since``: ask only for items changed since that value (an incremental kind with a
        ``param``).

        Raises TransientHTTPError, PermanentHTTPError or MalformedPage.
        """
        ...

    def planned(self, kind: str, plan: State, index: int, *, partition: Any = None) -> State:
        """The state of page ``index`` (0-based) of a plan returned by ``fetch`` of
        ``partition`` (a child kind's paginator is built from its parent's ref)."""
        ...

    def identifier(self, kind: str, item: Any) -> str | None:
        """The item's identifier as a string, or None when it has none."""
        ...

    # -- webhooks (``sluice serve`` calls the first three; workers the last two)

    def verify(self, headers: HeaderMap[str, str], body: bytes) -> None:
        """Accept a delivery only when it is signed with the source's ``webhook_secret``
        (compared in constant time). Raises WebhookRefused(status=401)."""
        ...

    def delivery(self, headers: HeaderMap[str, str], payload: Any) -> str | None:
        """The delivery's id, the same on every redelivery of one event (applied once), or
        None when the API sends none."""
        ...

    def events(self, headers: HeaderMap[str, str], payload: Any) -> list[Event]:
        """The upserts and deletes a verified delivery carries, of the source's kinds only
        (an event of another kind, or a ping: []). Items have the shape a resync writes.
        Raises WebhookRefused(status=400) for a payload that lacks what its event needs."""
        ...

    def cursor_path(self, kind: str) -> str | None:
        """Dot path to what orders an item's versions (``updated_at``): an event older than
        what the target holds does not overwrite it. None: every event is applied."""
        ...

    async def fetch_item(self, kind: str, client: httpx.AsyncClient, item: Any) -> Any | None:
        """The full item of a ``fetch`` event, as a resync writes it, through ``client`` (the
        source's rate limit and retries). None when the API says it is gone (404).
        Raises TransientHTTPError, PermanentHTTPError or MalformedPage."""
        ...
