"""Client factory and the translation of HTTP answers into Sluice's error tree."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Collection, Mapping
from functools import cache
from typing import Any

import httpx

from integrations import jsontext
from integrations.errors import MalformedPage, PermanentHTTPError, TransientHTTPError
from integrations.http.origin import OriginGuard, origin
from integrations.http.ratelimit import RateLimiter
from integrations.http.retry import RetryTransport, is_retryable, server_wait
from integrations.secrets import excerpt
from integrations.settings import HttpSettings

DEFAULT_HTTP = HttpSettings()  # frozen: one instance serves as every default


@cache
def tls_context() -> ssl.SSLContext:
    """The TLS settings every client of this process shares (httpx's defaults: certifi's CA
    bundle, or SSL_CERT_FILE / SSL_CERT_DIR). Built once: each context loads the whole CA
    bundle, some 40 ms of CPU and 0.8 MB, which a worker configured with 300 sources paid 300
    times when every client built its own."""
    return httpx.create_ssl_context()


def make_client(
    *,
    base_url: str = "",
    headers: dict[str, str] | None = None,
    auth: httpx.Auth | tuple[str, str] | None = None,
    settings: HttpSettings = DEFAULT_HTTP,
    transport: httpx.AsyncBaseTransport | None = None,
    max_connections: int = 32,
    limiter: RateLimiter | None = None,
    home: Collection[str] = (),
    allow_origins: Collection[str] = (),
    secret_params: Mapping[str, str] | None = None,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` with retries and a deadline per request, whose credentials
    (``headers``, ``auth``, ``secret_params``) go only to ``base_url``'s origin and ``home``;
    other origins are refused unless in ``allow_origins`` (``integrations.http.origin``).
    Meant to be created once and reused."""
    inner = transport or httpx.AsyncHTTPTransport(
        verify=tls_context(), limits=httpx.Limits(max_connections=max_connections,
                            max_keepalive_connections=max_connections))
    retrying = RetryTransport(
        inner,
        retries=settings.retries,
        backoff=settings.backoff,
        max_backoff=settings.max_backoff,
        max_retry_after=settings.max_retry_after,
        limiter=limiter,
        deadline=settings.deadline,
    )
    homes = {origin(base_url)} if base_url else set()
    homes |= set(home)
    return httpx.AsyncClient(
        base_url=base_url,
        headers=headers or {},
        auth=auth,
        timeout=settings.timeout,
        follow_redirects=True,  # each hop passes the origin guard
        transport=OriginGuard(retrying, home=homes, allowed=allow_origins,
                              headers=list(headers or {}), secret_params=secret_params),
    )


def raise_for_status(response: httpx.Response) -> None:
    """Translate a non-2xx answer: 429, 5xx and rate-limit 403s are transient, other 4xx
    permanent."""
    status = response.status_code
    if status < 400:
        return
    where = f"{response.request.method} {response.request.url.copy_with(query=None)}"
    if is_retryable(response) or status >= 500:
        raise TransientHTTPError(f"{where} answered {status} after retries",
                                 retry_after=server_wait(response))
    raise PermanentHTTPError(f"{where} answered {status}: {excerpt(response.text, 200)}",
                             status_code=status)


def unbound(response: httpx.Response) -> httpx.Response:
    """``response``, freed as soon as its last reference goes (read whole and closed already,
    as ``client.get`` and ``client.post`` return it).

    httpx binds a response and its stream in a cycle (``BoundAsyncStream`` keeps the
    response), so only the cyclic collector frees it, with its body and its request's. A
    worker runs a young pass every 50,000 allocations (``tasks.worker.runtime.GC_THRESHOLD``):
    a fast run held about a thousand pages that way, 17 MB of a producer's peak RSS. An empty
    stream in its place breaks the cycle; the body stays in ``response.content``.
    """
    response.stream = httpx.ByteStream(b"")
    return response


async def get_json(
    client: httpx.AsyncClient, url: str, *, params: dict[str, Any] | None = None,
    json: Any | None = None,
) -> tuple[httpx.Response, Any]:
    """GET ``url`` (or, with ``json``, POST that body to it: a GraphQL query) and decode its
    JSON body. Either way the request goes through the client's transports: the rate
    limiter, the retries and the origin guard, with the source's auth.

    ``params`` replaces the query string of ``url`` in httpx, so a URL that already carries
    its query (a Link header's next URL) must be fetched with ``params=None``.
    Raises TransientHTTPError, PermanentHTTPError or MalformedPage.
    """
    method = "GET" if json is None else "POST"
    try:
        if json is None:
            response = unbound(await client.get(url, params=params))
        else:
            response = unbound(await client.post(url, params=params, json=json))
    except httpx.TransportError as exc:
        where = httpx.URL(url).copy_with(query=None)
        detail = repr(exc)
        with contextlib.suppress(RuntimeError):  # RuntimeError: no request attached
            # The transport's message may name the whole URL, and its query may hold a key.
            sent = exc.request.url
            where = sent.copy_with(query=None)
            detail = detail.replace(str(sent), str(where))
        raise TransientHTTPError(f"{method} {where} failed after retries: {detail}") from exc
    raise_for_status(response)
    try:
        return response, jsontext.loads(response.content, strict=True)
    # ValueError: also a number of more than 4,300 digits, NaN, Infinity or 1e400 (no target
    # stores them); RecursionError: nesting too deep.
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise MalformedPage(
            f"{method} {response.request.url.copy_with(query=None)} answered a body that is "
            f"not JSON Sluice can read ({type(exc).__name__}: {excerpt(str(exc), 120)}): "
            f"{excerpt(response.text, 80)!r}"
        ) from exc
