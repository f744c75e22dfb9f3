"""The paging engine: drives any integration's ``fetch`` and yields numbered pages.

- A kind whose API does not say how many pages there are is followed page after page, one
  request ahead: while the producer publishes page n, page n+1 is already on its way, so a
  request never waits for a write or a publish.
- When the first page reveals the rest (a Link header with rel="last", a total in the body),
  the remaining pages are fetched ``concurrency`` at a time and yielded as they arrive; a
  request goes out when another is answered, not when its page is taken, and at most
  ``2 * concurrency`` pages are held. When a request fails (or ``admit`` ends the slice), no
  new one goes out, the pages already answered are still yielded, then the error is raised.
  An empty planned page ends the plan there (an API that over-reports its total), and like
  a last planned page that still links to a next one (one that under-reports) it marks the
  paging truncated: the run deletes nothing.
- A checkpoint (JSON) after every page lets a fresh task resume: ``Following`` (the next
  page's state and number) or ``Planned`` (planned pages a..b-1; pages already published
  are skipped by their sequence number).

Sequence numbers are unique within a run: partition ``p`` numbers its pages from
``p * PARTITION_SPAN + 1``, so a redelivered page is always recognised.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Container
from dataclasses import dataclass
from typing import Any, TypedDict, final

import httpx

from integrations.base import Integration
from integrations.fetched import Fetched, State

PARTITION_SPAN = 10_000_000  # pages per partition, at most


@final
class Following(TypedDict):
    """A checkpoint while following: the state of the next page, and its sequence number."""

    next: State
    seq: int


@final
class Planned(TypedDict):
    """A checkpoint of planned pages: pages ``lo``..``hi``-1 of ``plan`` are left, page i
    numbered ``first + i`` (those already published are skipped)."""

    plan: State
    first: int
    lo: int
    hi: int


Checkpoint = Following | Planned


@dataclass(frozen=True)
class Page:
    seq: int
    items: list[Any]
    checkpoint: Checkpoint | None  # where to resume after this page; None: nothing left
    truncated: str | None = None  # the last page, but the API may hold more (Fetched)
    total: int | None = None  # items the API says there are (on the first page)


def split(checkpoint: Planned, parts: int) -> list[Planned]:
    """Cut a planned checkpoint into ``parts`` contiguous page ranges."""
    lo, hi = checkpoint["lo"], checkpoint["hi"]
    size = -(-(hi - lo) // parts)
    return [Planned(plan=checkpoint["plan"], first=checkpoint["first"], lo=a,
                    hi=min(hi, a + size)) for a in range(lo, hi, size)]


async def pages(
    integration: Integration, kind: str, client: httpx.AsyncClient, *,
    checkpoint: Checkpoint | None, key: Any = None, base: int = 0, concurrency: int = 1,
    published: Container[int] = (), admit: Callable[[], Awaitable[None]] | None = None,
    split: Callable[[Planned], Awaitable[Planned]] | None = None, since: Any = None,
    look: Callable[[Fetched], Awaitable[None]] | None = None,
) -> AsyncGenerator[Page, None]:
    """Yield the pages of ``kind`` (or of partition ``key``) from ``checkpoint`` (None: start).

    ``published`` holds sequence numbers already published (skipped when planned pages are
    resumed); ``admit`` is awaited before every request (backpressure); ``split`` is awaited
    with the plan the first page revealed and returns the part of it this caller fetches
    (the caller hands the other parts to other producers); ``since`` asks only for what
    changed since then (an incremental kind); ``look`` is awaited with the first page before
    any other request goes out (it may raise to read the partition another way: a time
    window too full is split).
    """
    async def fetch(state: State | None) -> Fetched:
        if admit is not None:
            await admit()
        return await integration.fetch(kind, client, state, key=key, since=since)

    if checkpoint is None:
        first = await fetch(None)
        if look is not None:
            await look(first)
        if first.plan is not None and first.plan.get("count", 0) > 0:
            planned = Planned(plan=first.plan, first=base + 2, lo=0, hi=first.plan["count"])
            if split is not None:  # before any planned request: none is made twice
                planned = await split(planned)
            checkpoint = planned
        elif first.next is not None:
            checkpoint = Following(next=first.next, seq=base + 2)
        else:
            checkpoint = None
        head = Page(base + 1, first.items, checkpoint, first.truncated if checkpoint is None
                    else None, first.total)
        if checkpoint is None:
            yield head
            return
    else:
        head = None
    # The next requests go out before the first page is handed over.
    rest: AsyncGenerator[Page, None]
    if "plan" in checkpoint:
        rest = _planned(integration, kind, fetch, checkpoint, concurrency, published, first=head,
                        key=key)
    else:
        rest = _follow(fetch, checkpoint, first=head)
    try:
        async for page in rest:
            yield page
    finally:
        await rest.aclose()  # cancels the requests still out


async def _follow(fetch: Callable[[State], Awaitable[Fetched]], checkpoint: Following, *,
                  first: Page | None = None) -> AsyncGenerator[Page, None]:
    """Page after page, one request ahead: while the caller publishes page n, page n+1 is
    already being fetched (at most two pages are held)."""
    seq = checkpoint["seq"]
    ahead: asyncio.Task[Fetched] | None = asyncio.ensure_future(fetch(checkpoint["next"]))
    try:
        if first is not None:
            yield first
        while ahead is not None:
            got = await ahead
            state = got.next
            ahead = asyncio.ensure_future(fetch(state)) if state is not None else None
            yield Page(seq, got.items,
                       Following(next=state, seq=seq + 1) if state is not None else None,
                       got.truncated if state is None else None)
            seq += 1
    finally:
        if ahead is not None:
            ahead.cancel()
            await asyncio.gather(ahead, return_exceptions=True)


async def _planned(
    integration: Integration, kind: str, fetch: Callable[[State], Awaitable[Fetched]],
    checkpoint: Planned, concurrency: int, published: Container[int], *,
    first: Page | None = None, key: Any = None,
) -> AsyncGenerator[Page, None]:
    """Pages a..b-1 of a plan, ``concurrency`` requests at a time, yielded as they arrive.

    A request goes out as soon as another one is answered, not when its page is handed
    over; up to ``concurrency`` answered pages wait for the caller (then requests pause), so
    at most ``2 * concurrency`` pages are held.
    """
    plan, seq0 = checkpoint["plan"], checkpoint["first"]
    last = plan["count"] - 1  # the plan's last page (of every partition's)
    # A generator, not a list: an API may claim any number of pages (rel="last", a total).
    pending = (i for i in range(checkpoint["lo"], checkpoint["hi"]) if seq0 + i not in published)
    # (index, page) as answered; (index, exception) when a request failed; (-1, None) when a
    # requester is done.
    queue: asyncio.Queue[tuple[int, Fetched | BaseException | None]] = asyncio.Queue(concurrency)
    stopped = False
    end = checkpoint["hi"]  # lowered by an empty page: the API has nothing past it

    async def requester() -> None:
        nonlocal stopped
        try:
            for i in pending:  # shared by every requester: each page is asked for once
                if stopped or i >= end:
                    break
                try:
                    got: Fetched | BaseException = await fetch(integration.planned(kind, plan, i,
                                                                        key=key))
                except Exception as exc:  # handed to the consumer, which raises it at the end
                    got, stopped = exc, True
                await queue.put((i, got))
        finally:
            await queue.put((-1, None))

    span = checkpoint["hi"] - checkpoint["lo"]
    requesters = [asyncio.create_task(requester()) for _ in range(min(concurrency, span))]
    try:
        if first is not None:
            yield first
        # Pages already answered are handed over even after a request failed (or the slice
        # ended): none is fetched for nothing. The first failure is raised after them.
        failure: BaseException | None = None
        running = len(requesters)
        while running:
            i, got = await queue.get()
            if got is None:
                running -= 1
            elif isinstance(got, BaseException):
                failure = failure or got
            else:
                if not got.items:  # the API does not know its size: stop here, delete nothing
                    end = min(end, i)
                truncated = _short_plan(integration, kind, plan, i, got, last=i == last,
                                            key=key)
                left = Planned(plan=plan, first=seq0, lo=checkpoint["lo"],
                               hi=min(end, checkpoint["hi"]))
                yield Page(seq0 + i, got.items, left, truncated)
        if failure is not None:
            raise failure
    finally:
        await _stop(requesters, queue)


async def _stop(requesters: list[asyncio.Task[None]], queue: asyncio.Queue[Any]) -> None:
    """Cancel the requesters and wait for them. A requester still puts its end mark when
    cancelled: when the caller stopped taking pages (a shutdown, an error, the end of what
    changed), the queue may be full, so room is made until every requester has ended."""
    for task in requesters:
        task.cancel()
    while not all(task.done() for task in requesters):
        while not queue.empty():
            queue.get_nowait()
        await asyncio.sleep(0)
    await asyncio.gather(*requesters, return_exceptions=True)


def _short_plan(integration: Integration, kind: str, plan: State, i: int, got: Fetched, *,
                last: bool, key: Any = None) -> str | None:
    """Why planned page ``i`` shows the plan was wrong (then the run deletes nothing): it came
    back empty, or it is the plan's last page and still links to a next one."""
    if got.items and not (last and got.next is not None):
        return None
    # Page ``i`` as its state says it: 'offset 4500', 'url https://…'.
    where = ", ".join(f"{k} {v}" for k, v in integration.planned(kind, plan, i,
                                                                 key=key).items())
    if not got.items:
        return (f"a page of the plan ({where}) came back empty: the API announced more than it "
                "holds, or lost some")
    return (f"the last page of the plan ({where}) ends short of or links past what the API "
            "announced (its total, or rel=\"last\")")
