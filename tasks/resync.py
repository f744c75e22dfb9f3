"""The producer: ``resync(source, kind)`` pages the API and publishes every page as an
``ingest_batch`` task the moment it arrives.

Pages come from ``integrations.pager``: followed one after another, or, when the API reveals
how many there are, fetched ``max_concurrency`` at a time. A producer task is short: after
``producer_slice_pages`` pages or ``producer_slice_seconds`` it stops, and a fresh task with the
same run id continues from the checkpoint saved after every page. So a killed worker loses at
most one slice, and the broker's visibility timeout can stay at minutes.

A kind can be split into partitions, each a producer task of its own (on any worker) within the
same run: page ranges once the total is known (``partitions = N``), or the keys an integration's
``partitions()`` returns (a repository, a time window).

While ``max_in_flight`` batches of the run wait to be written, no page is requested
(backpressure); after a second of that the slice ends and a fresh task continues behind the
queued batches, so a producer never holds a worker process that its own batches need.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from celery import Task

from integrations import pager
from integrations.errors import ConfigError, RunLost, SluiceError
from tasks import runtime
from tasks.app import app
from tasks.finalize import finalize
from tasks.ingest import ingest_batch
from tasks.progress import RunState

POLL_SECONDS = 0.05
YIELD_AFTER = 1.0  # seconds of backpressure after which a producer slice ends


class SliceOver(Exception):
    """This task's slice of time is used up; a fresh task continues."""


def summary(run: dict[str, Any]) -> dict[str, Any]:
    return {"run_id": run.get("run_id"), "state": run.get("state"), "pages": run.get("pages")}


def continue_later(source: str, kind: str, run_id: str, partition: int) -> None:
    resync.apply_async((source, kind), {"run_id": run_id, "partition": partition},
                       argsrepr=f"{source}/{kind} run={run_id} partition={partition}",
                       kwargsrepr="{}")


def produce(rt: runtime.Runtime, run: dict[str, Any], partition: int) -> bool:
    """Fetch and publish pages for one slice. True when the partition's last page is out.

    Requests run on the process's event loop; publishing and recording (blocking Redis
    calls) run here, in the task's thread, so the loop goes on fetching while a page is
    being published.
    """
    run_id, source, kind = run["run_id"], run["source"], run["kind"]
    progress, settings = rt.progress, rt.settings
    src = rt.config.source(source)
    integration, client = rt.integration(source), rt.client(source)
    deadline = time.monotonic() + settings.producer_slice_seconds

    started, checkpoint, done = progress.partition(run_id, partition)
    if done or (started and checkpoint is None):
        return True  # a redelivered slice of a partition that already published its last page
    # Only the first slice of partition 0 of an unsplit run may split it (by keys, or later by
    # page ranges when the first page reveals the total).
    may_split = partition == 0 and not started and "partitions" not in run
    if may_split:
        keys = rt.run(integration.partitions(kind, client))
        if keys is not None:
            may_split = False  # the integration splits this kind, e.g. one part per repository
            progress.split(run_id, [{"key": k} for k in keys] or [{"key": None}])
            for i in range(1, len(keys)):
                continue_later(source, kind, run_id, i)
            if not keys:
                return True

    # Pages asked for but not yet published count against max_in_flight too: requests are
    # admitted on the loop (several at once) while this thread publishes. A request reserves
    # its place before Redis is asked, so concurrent admissions and a page published meanwhile
    # can only be counted twice, never missed. Each counter has one writer.
    asked, handed = 0, 0

    async def admit() -> None:
        nonlocal asked
        if asked >= settings.producer_slice_pages or time.monotonic() >= deadline:
            raise SliceOver
        blocked_until = time.monotonic() + YIELD_AFTER
        while True:
            asked += 1
            held = asked - handed
            if held + await asyncio.to_thread(progress.in_flight, run_id) <= src.max_in_flight:
                return
            asked -= 1
            # Hand the process back rather than wait: on a small pool (one process, say) the
            # batches this producer waits for need it. The continuation queues behind them.
            if time.monotonic() >= min(deadline, blocked_until):
                raise SliceOver
            await asyncio.sleep(POLL_SECONDS)

    pages = pager.pages(
        integration, kind, client, checkpoint=checkpoint if started else None,
        partition=progress.key(run_id, partition), base=partition * pager.PARTITION_SPAN,
        concurrency=src.max_concurrency,
        published=progress.published(run_id) if started else (), admit=admit)

    async def next_page() -> pager.Page | None:
        return await anext(pages, None)

    try:
        while (page := rt.run(next_page())) is not None:
            if page.items:
                # Publish first, record second: a crash in between fetches this page again
                # from the checkpoint, with the same seq, and the sets count it once.
                ingest_batch.apply_async(
                    (run_id, source, kind, page.seq, page.items),
                    argsrepr=(f"run={run_id} {source}/{kind} page={page.seq} "
                              f"items={len(page.items)}"),
                    kwargsrepr="{}")
                if not progress.record_page(run_id, source, kind, page.seq, len(page.items),
                                            page.checkpoint, partition=partition):
                    raise RunLost(f"run {run_id}: its record is gone from Redis; stopping")
            else:
                progress.save_cursor(run_id, page.checkpoint, partition=partition)
            handed += 1
            if (may_split and src.partitions > 1 and page.checkpoint is not None
                    and "plan" in page.checkpoint):
                # The total is known: hand page ranges to producer tasks on other workers.
                parts = pager.split(page.checkpoint, src.partitions)
                progress.split(run_id, [{"checkpoint": c} for c in parts])
                for i in range(1, len(parts)):
                    continue_later(source, kind, run_id, i)
                return False  # this task's own range continues in a fresh task
    except SliceOver:
        return False
    finally:
        rt.run(pages.aclose())
    return True


@app.task(bind=True, name="sluice.resync")
def resync(self: Task, source: str, kind: str, run_id: str | None = None,
           partition: int = 0) -> dict[str, Any]:
    """Create (or join) the run of (source, kind) and produce one slice of a partition."""
    rt = runtime.current()
    if run_id is None:
        if kind not in rt.integration(source).kinds():  # an error here, not a stuck run
            raise ConfigError(f"{rt.config.path}: source {source!r} has no kind {kind!r}")
        run = rt.progress.create_run(source, kind)
    else:
        run = rt.progress.get(run_id)
    if run.get("state") != RunState.RUNNING or run.get("producer_done"):
        return summary(run)
    try:
        finished = produce(rt, run, partition)
    except SluiceError as exc:
        if rt.progress.producer_done(run["run_id"], partition=partition,
                                     error=f"{type(exc).__name__}: {exc}"):
            finalize.delay(run["run_id"])
        return summary(rt.progress.get(run["run_id"]))
    if not finished:
        continue_later(source, kind, run["run_id"], partition)
    elif rt.progress.producer_done(run["run_id"], partition=partition):
        finalize.delay(run["run_id"])
    return summary(rt.progress.get(run["run_id"]))
