"""The webhook ASGI app: ``POST /webhooks/{source}`` and ``GET /healthz``, nothing else.
``/webhooks/{source}/`` is the same endpoint, not a redirect: behind a TLS proxy Starlette's
307 pointed to plain ``http://``, a failed delivery, or the delivery sent again in the clear.

A delivery goes through these steps; the first that fails answers:

    the source is served (it has a webhook_secret)     else 404 (which of the two: not said)
    the body is at most webhook_max_bytes              else 413 (Content-Length, then counted
                                                       while it streams: never read whole)
    the integration takes webhooks (webhooks_of),      else 401; nothing is enqueued
      and hooks.verify(headers, body)                  (over the raw body, a form's too)
    the body is JSON, or a form (Content-Type          else 400, with why
      application/x-www-form-urlencoded) whose one
      ``payload`` field is JSON
    hooks.events(headers, payload)                     WebhookRefused: its status (400)
    no events (a ping, a kind not synced)              200 {"accepted": 0}
    the delivery id is claimed (SET NX EX)             a redelivery: 200 {"duplicate": true}
    the events are published (coalesced, publish.py)   else the claim is released: 503
                                                       202 {"accepted": N}

The request never calls the API nor the target: the workers do (``sluice.webhook_batch``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from integrations.base import Integration
from integrations.errors import WebhookRefused
from integrations.registry import load
from integrations.settings import SourceSettings
from integrations.webhooks import decode, webhooks_of
from tasks.config import SluiceConfig
from tasks.serve.deliveries import Deliveries
from tasks.serve.publish import Coalescer

log = logging.getLogger("sluice.serve")


@dataclass(frozen=True)
class Served:
    """A source that takes webhooks: its settings and its integration, loaded once."""

    settings: SourceSettings
    integration: Integration


def served_sources(config: SluiceConfig) -> dict[str, Served]:
    """The sources with a ``webhook_secret``: the only ones ``POST /webhooks/{source}`` takes."""
    return {name: Served(s, load(s)) for name, s in config.sources.items()
            if s.webhook_secret}


class TooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The body, at most ``limit`` bytes. Raises TooLarge as soon as it is known to be more
    (its Content-Length, or the bytes streamed so far)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(status: int, **body: Any) -> JSONResponse:
    return JSONResponse(body, status_code=status)


class Endpoint:
    """The ``POST /webhooks/{source}`` handler over the served sources, the delivery claims
    and the coalescer."""

    def __init__(self, sources: dict[str, Served], deliveries: Deliveries,
                 coalescer: Coalescer) -> None:
        self.sources = sources
        self.deliveries = deliveries
        self.coalescer = coalescer

    async def count(self, source: str, outcome: str, *,
                    events: dict[str, int] | None = None) -> None:
        """Counters never fail a request: Redis down only loses a count (and says so)."""
        try:
            await self.deliveries.count(source, outcome, events=events)
        except redis.RedisError as exc:
            log.warning("webhook counters not written: %s", exc)

    async def handle(self, request: Request) -> Response:
        name = request.path_params["source"]
        served = self.sources.get(name)
        if served is None:
            await self.count("-", "refused_unknown_source")
            return _answer(404, error="not found")
        try:
            body = await read_body(request, served.settings.webhook_max_bytes)
        except TooLarge:
            await self.count(name, "refused_too_large")
            return _answer(413, error=f"the body is over {served.settings.webhook_max_bytes} "
                                      "bytes")
        headers, hooks = request.headers, webhooks_of(served.integration)
        try:
            if hooks is None:
                raise WebhookRefused(f"integration {served.settings.integration!r} takes no "
                                     "webhooks", status=401)
            hooks.verify(headers, body)
        except WebhookRefused as exc:
            await self.count(name, "refused_signature")
            log.warning("webhook %s refused (%d): %s", name, exc.status, exc)
            return _answer(exc.status, error="the signature is missing or wrong")
        try:
            payload = decode(headers.get("content-type"), body)
        except WebhookRefused as exc:
            await self.count(name, "refused_json")
            return _answer(exc.status, error=str(exc))
        try:
            events = hooks.events(headers, payload)
        except WebhookRefused as exc:
            await self.count(name, "refused_payload")
            return _answer(exc.status, error=str(exc))
        if not events:
            await self.count(name, "empty")
            return _answer(200, accepted=0)
        return await self.enqueue(name, hooks.delivery(headers, payload), events)

    async def enqueue(self, name: str, delivery: str | None, events: list[Any]) -> Response:
        """Claim the delivery, publish its events, answer 202; a redelivery 200; 503 when
        Redis or the broker failed (the claim released, so the sender's retry is taken)."""
        try:
            if delivery is not None and not await self.deliveries.claim(name, delivery):
                await self.count(name, "duplicate")
                return _answer(200, duplicate=True)
        except redis.RedisError as exc:
            log.error("webhook %s: delivery not claimed, Redis failed: %s", name, exc)
            return _answer(503, error="unavailable, retry later")
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for event in events:
            by_kind.setdefault(event.kind, []).append(event.as_json(delivery))
        try:
            await asyncio.gather(*(self.coalescer.add(name, kind, items)
                                   for kind, items in by_kind.items()))
        except Exception as exc:  # the broker: nothing is lost, the sender retries
            log.error("webhook %s: events not published: %s", name, exc)
            if delivery is not None:
                with contextlib.suppress(redis.RedisError):
                    await self.deliveries.release(name, delivery)
            await self.count(name, "refused_unavailable")
            return _answer(503, error="unavailable, retry later")
        await self.count(name, "accepted", events={k: len(v) for k, v in by_kind.items()})
        return _answer(202, accepted=len(events))


def create_app(sources: dict[str, Served], deliveries: Deliveries, coalescer: Coalescer, *,
               on_close: Callable[[], Awaitable[None]] | None = None) -> Starlette:
    """The app. At shutdown the coalescer publishes what it holds, then ``on_close`` runs."""
    endpoint = Endpoint(sources, deliveries, coalescer)

    async def healthz(request: Request) -> Response:
        try:
            ok = await deliveries.ping()
        except redis.RedisError:
            ok = False
        return _answer(200 if ok else 503, ok=ok)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await coalescer.close()
        if on_close is not None:
            await on_close()

    app = Starlette(routes=[Route("/webhooks/{source}", endpoint.handle, methods=["POST"]),
                            Route("/webhooks/{source}/", endpoint.handle, methods=["POST"]),
                            Route("/healthz", healthz, methods=["GET"])],
                    lifespan=lifespan)
    app.router.redirect_slashes = False  # any other path: 404, not a redirect
    return app
