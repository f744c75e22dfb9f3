"""The paging engine: drives any integration's ``fetch`` and yields numbered pages.

- A kind whose API does not say how many pages there are is followed page after page, one
  request ahead: while the producer publishes page n, page n+1 is already on its way, so a
  request never waits for a write or a publish.
- When the first page reveals the rest (a Link header with rel="last", a total in the body),
  the remaining pages are fetched ``concurrency`` at a time and yielded as they arrive.
- A checkpoint (JSON) after every page lets a fresh task resume: ``{"next": state, "seq": n}``
  while following, ``{"plan": plan, "first": n, "lo": a, "hi": b}`` for planned pages a..b-1
  (pages already published are skipped by their sequence number).

Sequence numbers are unique within a run: partition ``p`` numbers its pages from
``p * PARTITION_SPAN + 1``, so a redelivered page is always recognised.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Container
from dataclasses import dataclass
from typing import Any

import httpx

from integrations.base import Fetched, Integration, State

PARTITION_SPAN = 10_000_000  # pages per partition, at most


@dataclass(frozen=True)
class Page:
    seq: int
    items: list[Any]
    checkpoint: State | None  # where to resume after this page; None: nothing left


def split(checkpoint: State, parts: int) -> list[State]:
    """Cut a planned checkpoint into ``parts`` contiguous page ranges."""
    lo, hi = checkpoint["lo"], checkpoint["hi"]
    size = -(-(hi - lo) // parts)
    return [{**checkpoint, "lo": a, "hi": min(hi, a + size)} for a in range(lo, hi, size)]


async def pages(
    integration: Integration, kind: str, client: httpx.AsyncClient, *,
    checkpoint: State | None, partition: Any = None, base: int = 0, concurrency: int = 1,
    published: Container[int] = (), admit: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[Page]:
    """Yield the pages of ``kind`` (or of one partition) from ``checkpoint`` (None: start).

    ``published`` holds sequence numbers already published (skipped when planned pages are
    resumed); ``admit`` is awaited before every request (backpressure).
    """
    async def fetch(state: State | None) -> Fetched:
        if admit is not None:
            await admit()
        return await integration.fetch(kind, client, state, partition=partition)

    if checkpoint is None:
        first = await fetch(None)
        if first.plan is not None and first.plan.get("count", 0) > 0:
            checkpoint = {"plan": first.plan, "first": base + 2, "lo": 0,
                          "hi": first.plan["count"]}
        elif first.next is not None:
            checkpoint = {"next": first.next, "seq": base + 2}
        else:
            checkpoint = None
        if checkpoint is None or "plan" in checkpoint:
            yield Page(base + 1, first.items, checkpoint)
        else:
            # Follow: the next request goes out before this page is handed over.
            async for page in _follow(fetch, checkpoint, first=Page(base + 1, first.items,
                                                                    checkpoint)):
                yield page
            return
    if checkpoint is None:
        return
    if "plan" in checkpoint:
        async for page in _planned(integration, kind, fetch, checkpoint, concurrency, published):
            yield page
        return
    async for page in _follow(fetch, checkpoint):
        yield page


async def _follow(fetch: Callable[[State], Awaitable[Fetched]], checkpoint: State, *,
                  first: Page | None = None) -> AsyncIterator[Page]:
    """Page after page, one request ahead: while the caller publishes page n, page n+1 is
    already being fetched (at most two pages are held)."""
    state, seq = checkpoint["next"], checkpoint["seq"]
    ahead: asyncio.Task[Fetched] | None = asyncio.ensure_future(fetch(state))
    try:
        if first is not None:
            yield first
        while ahead is not None:
            got = await ahead
            state = got.next
            ahead = asyncio.ensure_future(fetch(state)) if state is not None else None
            yield Page(seq, got.items,
                       {"next": state, "seq": seq + 1} if state is not None else None)
            seq += 1
    finally:
        if ahead is not None:
            ahead.cancel()
            await asyncio.gather(ahead, return_exceptions=True)


async def _planned(
    integration: Integration, kind: str, fetch: Callable[[State], Awaitable[Fetched]],
    checkpoint: State, concurrency: int, published: Container[int],
) -> AsyncIterator[Page]:
    plan, first = checkpoint["plan"], checkpoint["first"]
    todo = [i for i in range(checkpoint["lo"], checkpoint["hi"]) if first + i not in published]
    queue: asyncio.Queue[tuple[int, Fetched | BaseException]] = asyncio.Queue()

    async def one(i: int) -> None:
        try:
            got: Fetched | BaseException = await fetch(integration.planned(kind, plan, i))
        except Exception as exc:  # handed to the consumer, which raises it
            got = exc
        await queue.put((i, got))

    running: set[asyncio.Task[None]] = set()
    pending = iter(todo)
    try:
        for i in pending:
            running.add(asyncio.create_task(one(i)))
            if len(running) >= concurrency:
                break
        for _ in range(len(todo)):
            i, got = await queue.get()
            running = {t for t in running if not t.done()}
            nxt = next(pending, None)
            if nxt is not None:
                running.add(asyncio.create_task(one(nxt)))
            if isinstance(got, BaseException):
                raise got
            yield Page(first + i, got.items, checkpoint)
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
