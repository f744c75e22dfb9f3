"""The declarative REST integration: pages a JSON API as sluice.toml describes it."""

from __future__ import annotations

from typing import Any

import httpx

from integrations.base import Fetched
from integrations.errors import MalformedPage
from integrations.http.client import get_json, make_client
from integrations.http.ratelimit import RateLimiter
from integrations.http.paginators import (
    CursorPaginator,
    LinkPaginator,
    OffsetPaginator,
    PagePaginator,
    Paginator,
    SinglePage,
    State,
    dig,
)
from integrations.rest.settings import KindSettings, RestSettings


def paginator_for(kind: KindSettings) -> Paginator:
    """Build the paginator a kind's settings describe."""
    p = kind.paginator
    common: dict[str, Any] = {"path": kind.path, "params": kind.params}
    if p.type == "cursor":
        return CursorPaginator(
            cursor_path=p.cursor_path, cursor_param=p.cursor_param,
            limit_param=p.limit_param, limit=p.limit, **common,
        )
    if p.type == "link":
        return LinkPaginator(limit_param=p.limit_param, limit=p.limit, **common)
    if p.type == "offset":
        return OffsetPaginator(
            offset_param=p.offset_param, total_path=p.total_path,
            limit_param=p.limit_param, limit=p.limit, **common,
        )
    if p.type == "page":
        return PagePaginator(
            page_param=p.page_param, first_page=p.first_page, total_path=p.total_path,
            limit_param=p.limit_param, limit=p.limit, **common,
        )
    return SinglePage(limit_param=None, limit=1, **common)


class RestIntegration:
    def __init__(self, settings: RestSettings) -> None:
        self.settings = settings
        self._paginators = {kind: paginator_for(spec) for kind, spec in settings.kinds.items()}

    def kinds(self) -> list[str]:
        return list(self.settings.kinds)

    def client(self, *, limiter: RateLimiter | None = None) -> httpx.AsyncClient:
        return make_client(base_url=self.settings.base_url, headers=self.settings.headers,
                           settings=self.settings.http, limiter=limiter,
                           max_connections=max(32, self.settings.max_concurrency))

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
        nxt = paginator.advance(current, response, body, items)
        plan = paginator.plan(current, response, body, items) if state is None else None
        return Fetched(items=items, next=nxt, plan=plan if nxt is not None else None)

    def planned(self, kind: str, plan: State, index: int) -> State:
        return self._paginators[kind].planned(plan, index)

    def identifier(self, kind: str, item: Any) -> str | None:
        value = dig(item, self.settings.kinds[kind].id) if isinstance(item, dict) else None
        if value is None or isinstance(value, (dict, list, bool)) or value == "":
            return None
        return str(value)
