"""The children task: ``fetch_children(run_id, source, kind, seq, parents)``.

A batch of parents written fans out (``ingest.fanout``): one task per child kind gets what
each parent gives its children (``{parent.number}`` in a path, the fields it includes), fetches
every parent's children ``max_concurrency`` at a time per process, under the source's one rate
limit, and publishes them as batches of useful size (the children of all the batch's parents
together, cut by ``max_batch_items`` and ``max_batch_bytes``) in the same run. The run counts
the task as a batch of the child kind, so it cannot end before the children are written.

A parent whose children cannot be read (its item lacks a value their path needs, the API
refuses them for good, their paging goes round or never ends) is rejected with the reason, and
its siblings land; paging that may have missed children marks the run incomplete (nothing is
deleted). A transient API error is retried like a batch, then dead-letters the task with its
parents (``sluice failed retry`` sends it again). The batches of children are recorded on the
run before they are sent, so the run cannot end while one is out.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import httpx
from celery import Task

from integrations import pager
from integrations.base import Integration
from integrations.errors import (
    PagingCycle,
    PermanentError,
    TooManyPages,
    describe,
)
from tasks import messages
from tasks.app import app
from tasks.boundary import Guard
from tasks.runs.seqs import child_seq
from tasks.worker import runtime
from tasks.write.rejections import rejection

ALIVE_EVERY = 10.0  # seconds between two signs of life of a long task on its run


class Collected(NamedTuple):
    items: list[Any]  # every child, in the parents' order
    rejected: list[tuple[int, str]]  # (parent index, why) of the parents left out
    truncated: list[str]  # why some parent's paging may have missed children


async def collect(integration: Integration, kind: str, client: httpx.AsyncClient,
                  parents: list[dict[str, Any]], gate: asyncio.Semaphore, *, max_pages: int,
                  alive: Callable[[], None] = lambda: None) -> Collected:
    """Every child of every parent. A parent whose children cannot be read (no value for its
    path, a permanent error for it alone, paging that goes round or never ends) is left out
    with the reason; a transient error fails the whole task (it is retried). ``alive`` is
    called as parents finish (the run is kept fresh while a long task works)."""

    last = time.monotonic()

    async def of(ref: dict[str, Any]) -> tuple[list[Any], str | None]:
        nonlocal last
        async with gate:
            got: list[Any] = []
            seen: set[str] = set()
            truncated = None
            async for page in pager.pages(integration, kind, client, checkpoint=None,
                                          key=ref):
                got += [integration.with_parent(kind, ref, item) for item in page.items]
                truncated = page.truncated or truncated
                if page.checkpoint is not None and "next" in page.checkpoint:  # followed
                    mark = json.dumps(page.checkpoint["next"], sort_keys=True, default=str)
                    if mark in seen:
                        raise PagingCycle(f"{kind}: the paging of a parent's children came "
                                          f"back to where it was ({page.seq} pages)")
                    seen.add(mark)
                if page.seq > max_pages:
                    raise TooManyPages(f"{kind}: more than max_pages ({max_pages}) pages of "
                                       "one parent's children")
            if time.monotonic() - last > ALIVE_EVERY:
                last = time.monotonic()
                await asyncio.to_thread(alive)
            return got, truncated

    answers = await asyncio.gather(*(of(ref) for ref in parents), return_exceptions=True)
    out = Collected([], [], [])
    for index, answer in enumerate(answers):
        if isinstance(answer, PermanentError):  # this parent's, not the task's
            out.rejected.append((index, describe(answer)))
        elif isinstance(answer, BaseException):
            raise answer
        else:
            out.items.extend(answer[0])
            if answer[1]:
                out.truncated.append(answer[1])
    return out


@app.task(bind=True, name="sluice.children", max_retries=None)
def fetch_children(self: Task, run_id: str, source: str, kind: str, seq: int, parents: str,
                   run_seq: int, root: str) -> dict[str, Any]:
    rt = runtime.current()
    refs: list[dict[str, Any]] | str = parents
    with Guard(self, rt.settings, retries=rt.settings.ingest_retries) as guard:
        src = rt.config.source(source)
        refs = json.loads(parents)
        assert isinstance(refs, list)
        got = rt.run(collect(rt.integration(source), kind, rt.client(source), refs,
                             rt.gate(source), max_pages=src.max_pages,
                             alive=lambda: rt.progress.touch(run_id, source, root)))
        parts = messages.batches(pager.Page(0, got.items, None),
                                 max_items=src.max_batch_items, max_bytes=src.max_batch_bytes)
        seqs = [child_seq(seq, k) for k in range(len(parts))]
        # A parent left out, or paging that may have stopped short: the run deletes nothing
        # (the children it did not read are not stale).
        doubts = got.truncated + ([f"the {kind} of {len(got.rejected)} parent(s) were not "
                                   "read (sluice failed list says why)"] if got.rejected else [])
        # Recorded before they are sent: the run cannot end while one is out.
        if not rt.progress.record_children(run_id, source, root, seqs, child=kind,
                                           n_items=len(got.items), incomplete="; ".join(doubts)):
            return {"run_id": run_id, "seq": seq, "state": "lost"}
        for child, part in zip(seqs, parts, strict=True):
            messages.batch(app, run_id, source, kind, child, part.items, count=part.size,
                           run_seq=run_seq, root=root)
    if guard.error is None:
        rejected = [rejection(seq, index, refs[index], f"parent: {why}")
                    for index, why in got.rejected]
        if rt.progress.batch_done(run_id, source, root, seq, written=0, rejected=rejected,
                                  child=kind):
            messages.finalize(app, run_id)
        return {"run_id": run_id, "seq": seq, "children": len(got.items), "batches": len(seqs)}
    letter = guard.letter("children", source, kind, refs, seq=seq, root=root)
    if rt.progress.batch_failed(run_id, seq, dead_letter=letter, child=kind):
        messages.finalize(app, run_id)
    return {"run_id": run_id, "seq": seq, "dead_lettered": letter.error}
