"""Coalescing: the events of many deliveries of one (source, kind) that arrive within
``linger`` seconds go out as one ``sluice.webhook_batch`` message, of at most ``max_items``
events and about ``max_bytes`` of JSON (the source's ``max_batch_items`` and
``max_batch_bytes``), rather than one task each.

    coalescer = Coalescer(send, linger=0.05, limits=lambda source: (2000, 2 * 2**20))
    await coalescer.add(source, kind, [event.as_json(delivery), ...])  # returns once published
    await coalescer.close()                                          # publishes what is left

``add`` returns only when every batch holding the caller's events is in the broker, so a 202
always means that; it raises whatever publishing raised (the caller answers 503 and the
sender retries). ``send`` is blocking (kombu): it runs in a thread of its own, never on the
event loop.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

# send(source, kind, batch_id, events_json_text, count)
Send = Callable[[str, str, str, str, int], None]


@dataclass
class _Batch:
    events: list[str] = field(default_factory=list)  # each event's JSON text
    size: int = 2  # bytes of the JSON list: "[" + events joined by "," + "]"
    done: asyncio.Future[None] | None = None
    timer: asyncio.TimerHandle | None = None


class Coalescer:
    def __init__(self, send: Send, *, linger: float,
                 limits: Callable[[str], tuple[int, int]], threads: int = 2) -> None:
        self._send = send
        self._linger = linger
        self._limits = limits
        self._open: dict[tuple[str, str], _Batch] = {}
        self._flushing: set[asyncio.Task[None]] = set()
        # Publishing waits on the broker; a couple of threads keep bursts of kinds apart.
        self._executor = ThreadPoolExecutor(max_workers=threads,
                                            thread_name_prefix="sluice-publish")

    async def add(self, source: str, kind: str, events: list[dict[str, Any]]) -> None:
        """Queue ``events`` of (source, kind); return once they are all published. Raises
        what ``send`` raised for a batch holding some of them."""
        max_items, max_bytes = self._limits(source)
        waits: list[asyncio.Future[None]] = []
        for event in events:
            text = json.dumps(event, separators=(",", ":"))
            batch = self._batch(source, kind)
            if batch.events and (len(batch.events) >= max_items
                                 or batch.size + len(text) + 1 > max_bytes):
                self._flush(source, kind)
                batch = self._batch(source, kind)
            batch.events.append(text)
            batch.size += len(text) + 1
            assert batch.done is not None
            if not waits or waits[-1] is not batch.done:
                waits.append(batch.done)
        key = (source, kind)
        if key in self._open and len(self._open[key].events) >= max_items:
            self._flush(source, kind)
        await asyncio.gather(*waits)

    def _batch(self, source: str, kind: str) -> _Batch:
        key = (source, kind)
        if key not in self._open:
            loop = asyncio.get_running_loop()
            batch = _Batch(done=loop.create_future())
            batch.timer = loop.call_later(self._linger, self._flush, source, kind)
            self._open[key] = batch
        return self._open[key]

    def _flush(self, source: str, kind: str) -> None:
        """Close the open batch of (source, kind) and publish it in the background."""
        batch = self._open.pop((source, kind), None)
        if batch is None:
            return
        if batch.timer is not None:
            batch.timer.cancel()
        task = asyncio.get_running_loop().create_task(self._publish(source, kind, batch))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _publish(self, source: str, kind: str, batch: _Batch) -> None:
        assert batch.done is not None
        text = "[" + ",".join(batch.events) + "]"
        batch_id = uuid.uuid4().hex[:16]
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._send, source, kind, batch_id,
                                       text, len(batch.events))
        except Exception as exc:  # every waiter gets it: each answers 503
            if not batch.done.done():
                batch.done.set_exception(exc)
            batch.done.exception()  # retrieved here too: no "never retrieved" warning
            return
        if not batch.done.done():
            batch.done.set_result(None)

    async def close(self) -> None:
        """Publish every open batch now and wait for all of them."""
        for source, kind in list(self._open):
            self._flush(source, kind)
        if self._flushing:
            await asyncio.gather(*self._flushing, return_exceptions=True)
        self._executor.shutdown(wait=True)
