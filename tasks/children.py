"""The children task: ``fetch_children(run_id, source, kind, seq, parents)``.

A batch of parents written fans out (``ingest.fanout``): one task per child kind gets what
each parent gives its children (``{parent.number}`` in a path, the fields it includes), fetches
every parent's children ``max_concurrency`` at a time per process, under the source's one rate
limit, and publishes them as batches of useful size (the children of all the batch's parents
together, cut by ``max_batch_items`` and ``max_batch_bytes``) in the same run. The run counts
the task as a batch of the child kind, so it cannot end before the children are written.

A parent whose item lacks a value its children need is rejected with the reason; an API error
is retried like a batch, then dead-letters the task with its parents (``sluice failed retry``
sends it again).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
from celery import Task

from integrations import pager
from integrations.base import Integration
from integrations.errors import NoParentValue, RetryableError, describe
from integrations.http.retry import backoff
from tasks import messages
from tasks.app import app
from tasks.ingest import rejection
from tasks.resync import batches
from tasks.worker import runtime


async def collect(integration: Integration, kind: str, client: httpx.AsyncClient,
                  parents: list[dict[str, Any]], gate: asyncio.Semaphore
                  ) -> tuple[list[Any], list[tuple[int, str]]]:
    """Every child of every parent, in the parents' order, and (parent index, why) for the
    parents whose children could not be asked for."""

    async def of(ref: dict[str, Any]) -> list[Any]:
        async with gate:
            got: list[Any] = []
            async for page in pager.pages(integration, kind, client, checkpoint=None,
                                          partition=ref):
                got += [integration.with_parent(kind, ref, item) for item in page.items]
            return got

    answers = await asyncio.gather(*(of(ref) for ref in parents), return_exceptions=True)
    items: list[Any] = []
    skipped: list[tuple[int, str]] = []
    for index, answer in enumerate(answers):
        if isinstance(answer, NoParentValue):
            skipped.append((index, str(answer)))
        elif isinstance(answer, BaseException):
            raise answer
        else:
            items += answer
    return items, skipped


@app.task(bind=True, name="sluice.children")
def fetch_children(self: Task, run_id: str, source: str, kind: str, seq: int, parents: str,
                   run_seq: int, root: str) -> dict[str, Any]:
    rt = runtime.current()
    settings, src = rt.settings, rt.config.source(source)
    refs: list[dict[str, Any]] | str = parents
    try:
        refs = json.loads(parents)
        assert isinstance(refs, list)
        items, skipped = rt.run(collect(rt.integration(source), kind, rt.client(source), refs,
                                        rt.gate(source)))
        parts = batches(pager.Page(0, items, None), max_items=src.max_batch_items,
                        max_bytes=src.max_batch_bytes)
        seqs = [pager.child_seq(seq, k) for k in range(len(parts))]
        for child, part in zip(seqs, parts, strict=True):
            messages.batch(app, run_id, source, kind, child, part.items, count=part.size,
                           run_seq=run_seq, root=root)
        rt.progress.record_children(run_id, source, root, seqs, child=kind, n_items=len(items))
    except RetryableError as exc:
        if self.request.retries < settings.ingest_retries:
            raise self.retry(exc=exc, countdown=backoff(
                self.request.retries, base=settings.ingest_backoff,
                cap=settings.ingest_max_backoff)) from exc
        error: Exception = exc
    except Exception as exc:
        error = exc
    else:
        rejected = [rejection(seq, index, refs[index], f"parent: {why}")
                    for index, why in skipped]
        if rt.progress.batch_done(run_id, source, root, seq, written=0, rejected=rejected,
                                  child=kind):
            messages.finalize(app, run_id)
        return {"run_id": run_id, "seq": seq, "children": len(items), "batches": len(seqs)}
    dead_letter = {"source": source, "kind": kind, "seq": seq, "task": "children",
                   "root": root, "items": refs, "error": describe(error),
                   "attempts": self.request.retries + 1, "at": time.time()}
    if rt.progress.batch_failed(run_id, seq, dead_letter=dead_letter, child=kind):
        messages.finalize(app, run_id)
    return {"run_id": run_id, "seq": seq, "dead_lettered": dead_letter["error"]}
