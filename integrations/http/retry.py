"""A retrying httpx transport: exponential backoff with jitter, honouring Retry-After, and
asking the shared rate limiter (if any) before every attempt.

Every attempt has a deadline for the whole exchange (connect, send, every read of the body).
Retried: connect errors, timeouts (and missed deadlines) and broken connections, 429 and 5xx
answers, and a 403 that is a rate limit (``Retry-After``, or ``X-RateLimit-Remaining: 0``). What
is left after the last retry goes back to the caller (an exception, or the last 429/5xx response),
which translates it into the error tree (``integrations.http.client.raise_for_status``).
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from integrations.http.ratelimit import RateLimiter

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
EPOCH_THRESHOLD = 1_000_000_000  # a rate-limit reset above this is a Unix time, else seconds
EPOCH_MS_THRESHOLD = 1_000_000_000_000  # ... and above this, a Unix time in milliseconds
RETRY_EXCEPTIONS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


def backoff(attempt: int, *, base: float, cap: float,
            jitter: Callable[[], float] = random.random) -> float:
    """Seconds before retry number ``attempt`` (0-based): exponential from ``base``, at most
    ``cap``, with "equal jitter" (half fixed, half random), so the retries of many callers
    spread out without any retrying at once. The one backoff of Sluice: API requests, batch
    writes, finalize."""
    ceiling = min(cap, base * 2.0**attempt)
    return ceiling / 2 + jitter() * ceiling / 2


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def server_wait(response: httpx.Response, *, now: float | None = None) -> float | None:
    """Seconds the API asks callers to wait: ``Retry-After`` on a 429/503 (or on GitHub's 403
    secondary limit), or ``X-RateLimit-Remaining: 0`` until ``X-RateLimit-Reset`` (also the
    ``RateLimit-*`` names). None when it asks nothing."""
    now = time.time() if now is None else now
    if response.status_code in (403, 429, 503):
        retry_after = parse_retry_after(response.headers.get("Retry-After"), now=now)
        if retry_after is not None:
            return retry_after
    for prefix in ("X-RateLimit-", "RateLimit-"):
        remaining = response.headers.get(prefix + "Remaining")
        reset = _reset(response, prefix, now)
        if remaining is None or reset is None:
            continue
        try:
            left = int(remaining)
        except ValueError:
            continue
        return None if left > 0 else reset
    return None


def reset_wait(response: httpx.Response, *, now: float | None = None) -> float | None:
    """Seconds until the reset its rate-limit headers name (``X-RateLimit-Reset``,
    ``RateLimit-Reset``), whatever they say is left: the wait of an answer that refuses a
    request for its rate limit though some budget is left (a GraphQL query costing more
    points than remain). None without such a header."""
    now = time.time() if now is None else now
    for prefix in ("X-RateLimit-", "RateLimit-"):
        if (reset := _reset(response, prefix, now)) is not None:
            return reset
    return None


def _reset(response: httpx.Response, prefix: str, now: float) -> float | None:
    """Seconds until ``{prefix}Reset`` (epoch seconds or milliseconds, or seconds from now)."""
    try:
        at = float(response.headers.get(prefix + "Reset", ""))
    except ValueError:
        return None
    if at > EPOCH_MS_THRESHOLD:
        at /= 1000
    return max(0.0, at - now if at > EPOCH_THRESHOLD else at)


def is_retryable(response: httpx.Response) -> bool:
    """429 and 5xx; and a 403 that is a rate limit (GitHub answers its limits with 403)."""
    if response.status_code in RETRY_STATUSES:
        return True
    return response.status_code == 403 and server_wait(response) is not None


# A request whose ``extensions`` hold an object with ``async token() -> str`` under this key
# (an OAuth 2.0 source: integrations.http.oauth) gets its ``Authorization: Bearer`` here, at
# each attempt, after any wait for the rate limit: a token of a few seconds' life is not sent
# stale because the request queued behind the limit.
BEARER = "sluice.bearer"


class RetryTransport(httpx.AsyncBaseTransport):
    """Wraps another async transport and retries what may pass."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        *,
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_retry_after: float = 120.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        limiter: RateLimiter | None = None,
        deadline: float | None = None,
    ) -> None:
        self._limiter = limiter
        self._deadline = deadline
        self._inner = inner
        self._retries = retries
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._max_retry_after = max_retry_after
        self._sleep = sleep
        self._jitter = jitter

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before retry number ``attempt`` (0-based): the server's word, else backoff."""
        if retry_after is not None:
            return retry_after
        return backoff(attempt, base=self._backoff, cap=self._max_backoff, jitter=self._jitter)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        attempt = 0
        while True:
            if self._limiter is not None:
                await self._limiter.acquire()
            bearer = request.extensions.get(BEARER)
            if bearer is not None:
                request.headers["Authorization"] = f"Bearer {await bearer.token()}"
            try:
                response = await self._attempt(request)
            except RETRY_EXCEPTIONS:
                if attempt >= self._retries:
                    raise
                await self._sleep(self.delay(attempt, None))
                attempt += 1
                continue
            if self._limiter is not None:
                self._limiter.observe(response)
            if not is_retryable(response) or attempt >= self._retries:
                return response
            retry_after = server_wait(response)
            if retry_after is not None and retry_after > self._max_retry_after:
                return response  # too long to hold a task for: the caller decides
            await response.aclose()
            await self._sleep(self.delay(attempt, retry_after))
            attempt += 1

    async def _attempt(self, request: httpx.Request) -> httpx.Response:
        """One request, its body read whole, within the deadline: httpx's own timeouts hold
        for each read, so an answer trickling a byte a second would otherwise never end."""
        if self._deadline is None:
            return await self._inner.handle_async_request(request)
        try:
            async with asyncio.timeout(self._deadline):
                response = await self._inner.handle_async_request(request)
                await response.aread()
                return response
        except TimeoutError:
            raise httpx.ReadTimeout(f"no whole answer within the deadline of {self._deadline:g} s",
                                    request=request) from None

    async def aclose(self) -> None:
        await self._inner.aclose()
