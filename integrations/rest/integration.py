"""The declarative REST integration: pages a JSON API as sluice.toml describes it."""

from __future__ import annotations

import math
from typing import Any

import httpx

from integrations.base import Fetched, State, origin
from integrations.errors import MalformedPage
from integrations.http.client import get_json, make_client
from integrations.http.paginators import Paginator, dig, fetched
from integrations.http.ratelimit import RateLimiter
from integrations.rest.settings import KindSettings, RestSettings
from integrations.secrets import Redactor


def paginator_for(kind: KindSettings) -> Paginator:
    """Build the paginator a kind's settings describe."""
    return kind.paginator.build(kind.path, kind.params)


class RestIntegration:
    def __init__(self, settings: RestSettings) -> None:
        self.settings = settings
        self._paginators = {kind: paginator_for(spec) for kind, spec in settings.kinds.items()}

    def kinds(self) -> list[str]:
        return list(self.settings.kinds)

    def client(self, *, limiter: RateLimiter | None = None,
               redactor: Redactor | None = None) -> httpx.AsyncClient:
        s = self.settings
        # Kind paths written as full URLs are origins the user chose: credentials go there.
        home = {origin(k.path) for k in s.kinds.values() if "://" in k.path}
        secret = {name: str(value) for k in s.kinds.values() for name, value in k.params.items()
                  if redactor is not None and redactor.hides(str(value))}
        return make_client(base_url=s.base_url, headers=s.headers, settings=s.http,
                           limiter=limiter, max_connections=max(32, s.max_concurrency),
                           home=home, allow_origins=s.allow_origins, secret_params=secret)

    async def partitions(self, kind: str, client: httpx.AsyncClient) -> None:
        return None  # split by page ranges only (``partitions`` in the source settings)

    async def fetch(self, kind: str, client: httpx.AsyncClient, state: State | None, *,
                    partition: Any = None) -> Fetched:
        spec = self.settings.kinds[kind]
        paginator = self._paginators[kind]
        current = paginator.first() if state is None else state
        url, params = paginator.request(current)
        response, body = await get_json(client, url, params=params)
        items = dig(body, spec.items)
        if not isinstance(items, list):
            where = f"items path {spec.items!r}" if spec.items else "the body"
            raise MalformedPage(
                f"GET {response.request.url.copy_with(query=None)}: {where} is not a list "
                f"(got {type(items).__name__})")
        return fetched(paginator, current, response, body, items, first=state is None)

    def planned(self, kind: str, plan: State, index: int) -> State:
        return self._paginators[kind].planned(plan, index)

    def identifier(self, kind: str, item: Any) -> str | None:
        """The text of the item's id: ``1`` and ``"1"`` are one entity (APIs disagree on the
        type of their ids; the target's key is text), ``1.0`` another. No id: None, also for
        a number that is not finite (NaN, Infinity: their text would merge unrelated items)."""
        value = dig(item, self.settings.kinds[kind].id) if isinstance(item, dict) else None
        if value is None or isinstance(value, (dict, list, bool)) or value == "":
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return str(value)
