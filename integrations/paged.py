"""The base of an integration whose API answers pages of JSON over HTTP.

A subclass names its settings model (``PagedIntegration[GithubSettings]``) and supplies only
what its API does differently:

    paginator(kind, key)               required: the paginator of a kind (or of one partition
                                       key)
    headers(), auth()                  credentials sent to ``settings.base_url``
    items(kind, response, body)        the items of a page (default: the body, a JSON list)
    kept(kind, items)                  the items that land (default: all of them)
    id_path(kind), id_text(value)      where an item's identifier is, and its text
    slices(kind)                       time windows a full run is cut into (default: None)
    deleted(kind)                      jq true for the API's deletion tombstones (default: None)
    partition_keys(kind, client)       JSON keys that split a kind (default: None); a kind
                                       read whole with ``every_item`` may provide them

The base supplies the rest of the ``Integration`` protocol: ``kinds()`` from the settings,
``client()``, the ``fetch()`` of one page (paginator -> request -> ``get_json`` -> check ->
items -> ``fetched``), ``planned()`` and ``identifier()``. An integration that receives
webhooks implements ``integrations.webhooks.Webhooks`` too; ``get_item`` serves its
``fetch_item``.
"""

from __future__ import annotations

import math
from typing import Any, Generic, TypeVar

import httpx

from integrations.errors import MalformedPage, PermanentHTTPError
from integrations.fetched import Fetched, State
from integrations.http.auth import Credentials
from integrations.http.client import get_json, make_client
from integrations.http.oauth import TokenStore
from integrations.http.paginators import Paginator, fetched
from integrations.http.ratelimit import RateLimiter
from integrations.incremental import Incremental
from integrations.jsonpath import dig
from integrations.mapping import DefaultMappings, Mapping, MappingSettings
from integrations.secrets import Redactor
from integrations.settings import ApiSettings
from integrations.slices import Slices
from integrations.tombstones import Tombstones

S = TypeVar("S", bound=ApiSettings)


def id_text(value: Any) -> str | None:
    """The text of an identifier: ``1`` and ``"1"`` are one entity (APIs disagree on the type
    of their ids; the target's key is text), ``1.0`` another. No id: None, also for a number
    that is not finite (NaN, Infinity: their text would merge unrelated items)."""
    if value is None or isinstance(value, (dict, list, bool)) or value == "":
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


class PagedIntegration(Generic[S]):
    """An ``Integration`` over the pages of one HTTP API, configured by settings of type S."""

    def __init__(self, settings: S) -> None:
        self.settings = settings
        self._mappings: dict[str, Mapping | None] = {}  # compiled once per process
        self._tombstones: dict[str, Tombstones | None] = {}  # likewise

    def kinds(self) -> list[str]:
        return self.settings.kind_names()

    # -- the client

    def headers(self) -> dict[str, str]:
        """Headers of every request to ``base_url`` (never sent to another origin)."""
        return {}

    def auth(self) -> tuple[str, str] | None:
        """Basic auth for ``base_url``, or None."""
        return None

    def home(self) -> set[str]:
        """Origins besides ``base_url``'s that receive the credentials."""
        return set()

    def secret_params(self, redactor: Redactor | None) -> dict[str, str] | None:
        """Query parameters that are credentials (kept to ``base_url`` and ``home()``)."""
        return None

    def credentials(self, tokens: TokenStore | None, secret_key: str | None) -> Credentials:
        """What the source's ``auth`` section sends (none by default); OAuth 2.0 tokens are
        shared through ``tokens`` (a store of this process alone when None)."""
        return Credentials()

    def client(self, *, limiter: RateLimiter | None = None, redactor: Redactor | None = None,
               tokens: TokenStore | None = None, secret_key: str | None = None
               ) -> httpx.AsyncClient:
        s = self.settings
        given = self.credentials(tokens, secret_key)
        return make_client(base_url=s.base_url, headers={**self.headers(), **given.headers},
                           auth=given.auth or self.auth(), settings=s.http, limiter=limiter,
                           max_connections=max(32, s.max_concurrency), home=self.home(),
                           allow_origins=s.allow_origins,
                           secret_params={**(self.secret_params(redactor) or {}),
                                          **given.params})

    # -- pages

    def paginator(self, kind: str, key: Any, since: Any = None) -> Paginator:
        """The paginator of ``kind`` (of the partition ``key`` names, when it has partitions); with
        ``since``, of the items changed since then (``incremental(kind).param``)."""
        raise NotImplementedError

    def incremental(self, kind: str) -> Incremental | None:
        return None

    def slices(self, kind: str) -> Slices | None:
        """How ``kind`` is cut into time windows (None: it is not)."""
        return None

    # -- child kinds: a kind may hang off another (comments of an issue)

    def parent(self, kind: str) -> str | None:
        return None

    def mapping_settings(self, kind: str) -> MappingSettings | None:
        """The kind's mapping (None: none). Settings with a ``mappings`` section of default
        mappings (GitHub, Jira: ``DefaultMappings``) give the kind's default with the
        source's keys merged over it; others have none unless a subclass reads its own."""
        mappings = getattr(self.settings, "mappings", None)
        return mappings.of(kind) if isinstance(mappings, DefaultMappings) else None

    def mapping_key(self, kind: str) -> str:
        """Where the kind's mapping is written in its source's section (error messages)."""
        if isinstance(getattr(self.settings, "mappings", None), DefaultMappings):
            return f"mappings.{kind}"
        return f"kinds.{kind}.mapping"

    def mapping(self, kind: str) -> Mapping | None:
        if kind not in self._mappings:
            settings = self.mapping_settings(kind)
            self._mappings[kind] = None if settings is None else Mapping(
                settings, kind=kind, id_path=self.id_path(kind))
        return self._mappings[kind]

    def deleted(self, kind: str) -> str | None:
        """The kind's ``deleted`` jq expression (None: the API lists no tombstones)."""
        return None

    def tombstones(self, kind: str) -> Tombstones | None:
        if kind not in self._tombstones:
            expression = self.deleted(kind)
            self._tombstones[kind] = None if expression is None else Tombstones(expression)
        return self._tombstones[kind]

    def parent_ref(self, kind: str, parent_item: Any) -> dict[str, Any]:
        return {}

    def with_parent(self, kind: str, ref: dict[str, Any], item: Any) -> Any:
        return item

    async def partition_keys(self, kind: str, client: httpx.AsyncClient) -> list[Any] | None:
        return None  # split by page ranges only (``partitions`` in the source settings)

    def items(self, kind: str, response: httpx.Response, body: Any) -> list[Any]:
        """The items of a page; the paging counts them all (see ``kept``)."""
        if not isinstance(body, list):
            raise MalformedPage(f"GET {response.request.url.copy_with(query=None)}: the body "
                                f"is not a list (got {type(body).__name__})")
        return body

    def kept(self, kind: str, items: list[Any]) -> list[Any]:
        """The items of a page that land (an endpoint may list items of another kind)."""
        return items

    async def fetch(self, kind: str, client: httpx.AsyncClient, state: State | None, *,
                    key: Any = None, since: Any = None) -> Fetched:
        paginator = self.paginator(kind, key, since)
        current = paginator.first() if state is None else state
        url, params = paginator.request(current)
        response, body = await get_json(client, url, params=params,
                                        json=paginator.payload(current))
        paginator.check(response, body)  # before the items: an error is no (short) page
        items = self.items(kind, response, body)
        return fetched(paginator, current, response, body, items, first=state is None,
                       kept=self.kept(kind, items))

    async def every_item(self, kind: str, client: httpx.AsyncClient) -> list[Any]:
        """Every item of a kind that has no partitions, page after page (no plan)."""
        items: list[Any] = []
        state: State | None = None
        while True:
            page = await self.fetch(kind, client, state)
            items += page.items
            state = page.next
            if state is None:
                return items

    def planned(self, kind: str, plan: State, index: int, *, key: Any = None) -> State:
        # The partition's own paginator: a child kind's path needs its parent's ref.
        return self.paginator(kind, key).planned(plan, index)

    # -- identifiers

    def id_path(self, kind: str) -> str:
        """Dot path to an item's identifier."""
        return "id"

    def id_text(self, value: Any) -> str | None:
        """The identifier's text, or None when ``value`` is not an identifier."""
        return id_text(value)

    def identifier(self, kind: str, item: Any) -> str | None:
        value = dig(item, self.id_path(kind)) if isinstance(item, dict) else None
        return self.id_text(value)

    # -- for an integration that takes webhooks (``integrations.webhooks.Webhooks``)

    async def get_item(self, client: httpx.AsyncClient, path: str, *,
                       params: dict[str, Any] | None = None) -> Any | None:
        """GET one item (a ``fetch_item``): its JSON, or None when the API answers 404 or 410
        (the item is gone). Raises TransientHTTPError, PermanentHTTPError or MalformedPage."""
        try:
            _, body = await get_json(client, path, params=params)
        except PermanentHTTPError as exc:
            if exc.status_code in (404, 410):
                return None
            raise
        return body
