"""The Integration protocol (the settings every source shares: ``integrations.settings``).

An integration turns a source section of ``sluice.toml`` into pages of items. It fetches one
page at a time; ``integrations.pager`` drives it (follow the next state, or fetch the pages it
reveals concurrently), so every integration gets parallel pages, checkpoints and partitions:

    fetched = await integration.fetch(kind, client, state)   # state None: the first page
    fetched.items        # list of JSON-able items, as the API returned them
    fetched.next         # JSON state of the next page (None: this was the last)
    fetched.plan         # JSON plan of *every* remaining page, when the API reveals it
    integration.planned(kind, plan, i, key=p)  # -> the state of the i-th planned page
    await integration.partition_keys(kind, client)  # -> None, or JSON keys to split the kind by
    integration.identifier(kind, item)       # -> str, or None when the item has none

An integration that receives webhooks (``sluice serve``) implements
``integrations.webhooks.Webhooks`` as well: a capability, not part of this protocol.

An integration over an HTTP API subclasses ``integrations.paged.PagedIntegration``, which
supplies all of this but the API's own choices, and registers itself with
``@integrations.registry.register("name")``; its source settings subclass ``ApiSettings``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import httpx

from integrations.fetched import Fetched, State
from integrations.settings import SourceSettings

if TYPE_CHECKING:
    from integrations.http.oauth import TokenStore
    from integrations.http.ratelimit import RateLimiter
    from integrations.incremental import Incremental
    from integrations.mapping import Mapping
    from integrations.secrets import Redactor
    from integrations.slices import Slices
    from integrations.tombstones import Tombstones


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

    async def partition_keys(self, kind: str, client: httpx.AsyncClient) -> list[Any] | None:
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
        ``key`` its pages are fetched with."""
        ...

    def with_parent(self, kind: str, ref: dict[str, Any], item: Any) -> Any:
        """A child item as it lands, with the parent fields it carries."""
        ...

    async def fetch(self, kind: str, client: httpx.AsyncClient, state: State | None, *,
                    key: Any = None, since: Any = None) -> Fetched:
        """Fetch the page at ``state`` (None: the first page of the kind, or of the partition
        ``key`` names); ``since``: ask only for items changed since that value (an incremental
        kind with a ``param``).

        Raises TransientHTTPError, PermanentHTTPError or MalformedPage.
        """
        ...

    def planned(self, kind: str, plan: State, index: int, *, key: Any = None) -> State:
        """The state of page ``index`` (0-based) of a plan returned by ``fetch`` of
        ``key`` (a child kind's paginator is built from its parent's ref)."""
        ...

    def identifier(self, kind: str, item: Any) -> str | None:
        """The item's identifier as a string, or None when it has none."""
        ...
