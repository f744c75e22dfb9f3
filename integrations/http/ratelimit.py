"""The rate-limit interface the HTTP client calls, and how an API's answers tighten it.

The client calls ``await limiter.acquire()`` before every request (retries included) and
``limiter.observe(response)`` after it. ``pause_for(response)`` reads what the API said:
``Retry-After`` on a 429/503, or ``X-RateLimit-Remaining: 0`` with ``X-RateLimit-Reset``
(``RateLimit-Remaining`` / ``RateLimit-Reset`` too). The shared implementation lives on the
Celery side (``tasks/ratelimit.py``, in Redis); integrations only see this protocol.
"""

from __future__ import annotations

import time
from typing import Protocol

import httpx

from integrations.http.retry import parse_retry_after

EPOCH_THRESHOLD = 1_000_000_000  # a reset above this is a Unix time, else seconds from now


class RateLimiter(Protocol):
    async def acquire(self) -> None:
        """Wait until this caller may send one request."""
        ...

    def observe(self, response: httpx.Response) -> None:
        """Learn from an answer (pause every caller when the API says so)."""
        ...


def pause_for(response: httpx.Response, *, now: float | None = None) -> float | None:
    """Seconds every caller of this API should wait, by the API's own word; None: no pause."""
    now = time.time() if now is None else now
    if response.status_code in (429, 503):
        retry_after = parse_retry_after(response.headers.get("Retry-After"), now=now)
        if retry_after is not None:
            return retry_after
    for prefix in ("X-RateLimit-", "RateLimit-"):
        remaining = response.headers.get(prefix + "Remaining")
        reset = response.headers.get(prefix + "Reset")
        if remaining is None or reset is None:
            continue
        try:
            left, at = int(remaining), float(reset)
        except ValueError:
            continue
        if left > 0:
            return None
        return max(0.0, at - now if at > EPOCH_THRESHOLD else at)
    if response.status_code in (403, 429) and response.headers.get("Retry-After"):
        return parse_retry_after(response.headers.get("Retry-After"), now=now)
    return None
