"""The rate-limit interface the HTTP client calls.

The client calls ``await limiter.acquire()`` before every request (retries included) and
``limiter.observe(response)`` after it, so that what an API says (``server_wait``: Retry-After,
``X-RateLimit-Remaining: 0`` until the reset) pauses every caller; an integration that reads
its budget from a body (GitHub's GraphQL ``rateLimit``) calls ``limiter.pause(seconds)``.
The shared implementation lives on the Celery side (``tasks/worker/ratelimit.py``, in Redis);
integrations only see this protocol.
"""

from __future__ import annotations

from typing import Protocol

import httpx


class RateLimiter(Protocol):
    async def acquire(self) -> None:
        """Wait until this caller may send one request."""
        ...

    def observe(self, response: httpx.Response) -> None:
        """Learn from an answer (pause every caller when the API says so)."""
        ...

    def pause(self, seconds: float) -> None:
        """Pause every caller for ``seconds``: what an API says in a body rather than in its
        headers (GitHub's GraphQL ``rateLimit``)."""
        ...
