"""Credentials stay with their origin: the outermost transport of every source's client.

A source's headers, its auth and its secret query parameters (those taken from ``${NAME}``)
go only to its own origins: ``base_url``'s, and those of kind paths written as full URLs.
A request anywhere else (a next link, a planned page, a redirect) fails with ``ForeignOrigin``
unless the origin is in the source's ``allow_origins``; then it goes out without any of them.

Secret query parameters are never stored (checkpoints hold ``api_key=***``): on a request to a
home origin this transport puts the real value back into every secret parameter the URL has.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import httpx

from integrations.errors import ForeignOrigin
from integrations.http.retry import BEARER


def origin(url: httpx.URL | str) -> str:
    """``scheme://host[:port]`` of a URL (the port only when it is not the scheme's default)."""
    url = httpx.URL(url)
    return f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port is not None else "")


# Sent by httpx or an Auth flow rather than configured, and as sensitive.
ALWAYS_STRIPPED = ("authorization", "proxy-authorization", "cookie")


class OriginGuard(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport, *, home: Collection[str],
                 allowed: Collection[str] = (), headers: Collection[str] = (),
                 secret_params: Mapping[str, str] | None = None) -> None:
        self._inner = inner
        self._home = frozenset(home)
        self._allowed = frozenset(allowed)
        self._headers = frozenset(h.lower() for h in headers) | frozenset(ALWAYS_STRIPPED)
        self._params = dict(secret_params or {})

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        where = origin(request.url)
        if where in self._home:
            params = request.url.params
            for name, value in self._params.items():
                if name in params and params[name] != value:
                    request.url = request.url.copy_set_param(name, value)
            return await self._inner.handle_async_request(request)
        if where not in self._allowed:
            home = ", ".join(sorted(self._home))
            raise ForeignOrigin(
                f"{request.method} {request.url.copy_with(query=None)}: {where} is not this "
                f"source's origin ({home}); its credentials are not sent there. Add it to the "
                "source's allow_origins to fetch it without them")
        for name in self._headers:
            request.headers.pop(name, None)
        request.extensions.pop(BEARER, None)  # nor an OAuth 2.0 token, set later
        for name in self._params:
            if name in request.url.params:
                request.url = request.url.copy_remove_param(name)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()
