"""The producer: ``resync(source, kind)`` pages the API and publishes every page as an
``ingest_batch`` task the moment it arrives.

Pages come from ``integrations.pager``: followed one after another, or, when the API reveals
how many there are, fetched ``max_concurrency`` at a time. A producer task is short: after
``producer_slice_pages`` pages or ``producer_slice_seconds`` it stops, and a fresh task with the
same run id continues from the checkpoint saved after every page. So a killed worker loses at
most one slice, and the broker's visibility timeout can stay at minutes.

A kind can be split into partitions, each a producer task of its own (on any worker) within the
same run: page ranges once the total is known (``partitions = N``), or the keys an integration's
``partition_keys()`` returns (a repository), or the time windows of a kind with ``slices``
(``tasks.slicing``: a task reads several windows at once, and a window too full is split into
pieces).

While ``max_in_flight`` batches of the run wait to be written, no page is requested
(backpressure); after a second of that the slice ends and a fresh task continues behind the
queued batches, so a producer never holds a worker process that its own batches need.

A SIGTERM during a slice (a warm shutdown of the whole process group: systemd's default
KillMode, ``sluice standalone`` at Ctrl-C) ends the slice after the page in hand, and the
continuation goes to the queue for another worker, instead of the process dying mid-slice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import AsyncGenerator
from dataclasses import replace
from typing import Any

from celery import Celery, Task

from integrations import pager
from integrations.errors import ConfigError, PagingCycle, RunLost, TooManyPages
from integrations.fetched import Fetched
from integrations.incremental import newest, older
from integrations.slices import Window, held
from tasks import messages, slicing, traces
from tasks.app import app
from tasks.boundary import Guard
from tasks.messages import batches
from tasks.runs.progress import Cycle, PageRecord, Recorded, Run, RunState, Stopped
from tasks.runs.windows import FULL, GONE, MOVED
from tasks.worker import runtime

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05
YIELD_AFTER = 1.0  # seconds of backpressure after which a producer slice ends


class SliceOver(Exception):
    """This task's slice of time is used up; a fresh task continues."""


def summary(run_id: str, run: Run | None) -> dict[str, Any]:
    """The task's result (shown by Flower)."""
    if run is None:
        return {"run_id": run_id, "state": str(RunState.LOST)}
    return {"run_id": run_id, "state": str(run.state), "pages": run.pages}


def continue_later(run: Run, partition: int, sender: Celery = app) -> None:
    """A producer slice of the run's partition, under the run's trace."""
    messages.resync(sender, run.source, run.kind, run.run_id, partition=partition,
                    trace=run.traceparent)


def produce(rt: runtime.Runtime, run: Run, partition: int) -> bool:
    """Fetch and publish pages for one slice. True when the partition's last page is out."""
    return Slice(rt, run, partition).produce()


class Slice:
    """One producer task's share of a partition: bounded in pages and seconds.

    Requests run on the process's event loop; publishing and recording (blocking Redis
    calls) run here, in the task's thread, so the loop goes on fetching while a page is
    being published. Tasks go out on ``sender`` (the workers' app; a unit test's own).
    """

    def __init__(self, rt: runtime.Runtime, run: Run, partition: int, *,
                 sender: Celery = app) -> None:
        self.rt, self.run, self.partition, self.sender = rt, run, partition, sender
        self.src = rt.config.source(run.source)
        self.deadline = time.monotonic() + rt.settings.producer_slice_seconds
        # Pages asked for but not yet published count against max_in_flight too: requests are
        # admitted on the loop (several at once) while this thread publishes. A request
        # reserves its place before Redis is asked, so concurrent admissions and a page
        # published meanwhile can only be counted twice, never missed. Each counter has one
        # writer.
        self.asked, self.handed = 0, 0
        self.incremental = rt.integration(run.source).incremental(run.kind)
        self.since: Any = None  # this partition reads what changed since then (None: all)
        self.newest: Any = None  # the newest cursor value it has published
        # Items the run had read (as of this slice's start, plus this slice's): past
        # bulk_after_items its batches go to the bulk queue.
        self.items_read = run.items_fetched
        self.slices = rt.integration(run.source).slices(run.kind)
        self.bounds: Window | None = None  # the time window this partition reads

    def produce(self) -> bool:
        rt, run, partition = self.rt, self.run, self.partition
        started, checkpoint, done = rt.progress.partition(run.run_id, partition)
        if done or (started and checkpoint is None):
            return True  # a redelivered slice of a partition that already published its last
        # Only the first slice of partition 0 of an unsplit run may split it (into time
        # windows, by keys, or later by page ranges when the first page reveals the total).
        may_split = partition == 0 and not started and run.partitions is None
        integration, client = rt.integration(run.source), rt.client(run.source)
        if may_split:
            keys = rt.run(integration.partition_keys(run.kind, client))
            if keys is not None:  # the integration splits this kind, e.g. one per repository
                self.split_by_keys(keys)
                if not keys:
                    return True
                may_split = False
        while True:
            self.bounds = rt.windows.get(run.run_id, partition) if self.slices else None
            try:
                return self.follow(started, checkpoint, may_split=may_split)
            except slicing.Resplit:
                continue  # the first half of the window, from its first page

    def follow(self, started: bool, checkpoint: Any, *, may_split: bool) -> bool:
        """Page the partition (from ``checkpoint`` once ``started``) for this slice."""
        rt, run, partition = self.rt, self.run, self.partition
        integration, client = rt.integration(run.source), rt.client(run.source)
        key = rt.progress.key(run.run_id, partition)
        if self.bounds is not None:
            key = {"window": self.bounds}
        self.since = self.window(key)
        self.newest = rt.progress.newest(run.run_id, partition) if started else None
        stopping = self.stop_at() is not None  # newest first, read in order until older ones
        pages = pager.pages(
            integration, run.kind, client, checkpoint=checkpoint if started else None,
            key=key, base=partition * pager.PARTITION_SPAN,
            concurrency=1 if stopping else self.src.max_concurrency,
            published=rt.progress.published(run.run_id) if started else (), admit=self.admit,
            split=(self.split_by_ranges if may_split and self.src.partitions > 1
                   and not stopping else None),
            since=self.since if self.incremental and self.incremental.param else None,
            look=self.look if self.bounds is not None and not started else None)

        async def next_page() -> pager.Page | None:
            return await anext(pages, None)

        try:
            while (page := rt.run(next_page())) is not None:
                if self.publish(page):
                    return True  # the rest is older than the watermark
                if runtime.STOPPING.is_set():
                    return False  # shutting down: a fresh task goes on from this page
        except SliceOver:
            return False
        finally:
            rt.run(_close(pages))
        return True

    async def look(self, first: Fetched) -> None:
        """A window's first page: split the window into pieces when it shows too many items,
        as many as that count asks for (``Slices.pieces``), so that one split, not a level of
        halving per first page, brings each piece within ``max_window_items``. The partition
        reads the first piece from its first page (this page is asked for again); the others
        are new partitions. Raises Resplit then."""
        assert self.slices is not None and self.bounds is not None
        slices, count = self.slices, held(first)
        pieces = slices.split(self.bounds, slices.pieces(count)) if slices.crowded(first) else None
        if pieces is None:
            return
        run = self.run
        done = await asyncio.to_thread(self.rt.windows.split, run.run_id, self.partition, pieces)
        if done.first == GONE:
            raise RunLost(f"run {run.run_id}: its record is gone from Redis; stopping")
        if done.first == FULL:
            return  # as many windows as a run may have: this one is read whole
        if done.first == MOVED:
            raise slicing.Resplit  # another reader of the partition split it: read what it kept
        log.info("run %s: window %s of %s/%s split into %d at %s (its first page: %d items or "
                 "more)", run.run_id, self.bounds, run.source, run.kind, done.added + 1,
                 [p[0] for p in pieces[1:done.added + 1]], count)
        await asyncio.to_thread(slicing.start_windows, self.rt, run)
        raise slicing.Resplit

    def window(self, key: Any) -> Any:
        """What this partition asks changes since: decided when it starts (from the kind's
        watermark for its key, unless the run reads everything) and kept on the run."""
        progress, run = self.rt.progress, self.run
        known, since = progress.window(run.run_id, self.partition)
        if known:
            return since
        if self.incremental is not None and not run.full:
            # Empty when they were read with another mapping (one added, changed or removed
            # since): the partition reads everything, from ``initial`` if there is one.
            marks = self.rt.watermarks().get(
                run.source, run.kind, mapping=self.rt.integration(run.source).mapping(run.kind))
            since = self.incremental.since(marks.get(json.dumps(key)))
        progress.set_window(run.run_id, self.partition, since)
        return since

    def stop_at(self) -> Any:
        """With ``stop_when_older``: the value before which an item ends the paging."""
        inc = self.incremental
        return self.since if inc is not None and inc.stop_when_older else None

    def split_by_keys(self, keys: list[Any]) -> None:
        run = self.run
        self.rt.progress.split(run.run_id, [{"key": k} for k in keys] or [{"key": None}])
        for i in range(1, len(keys)):
            continue_later(run, i, self.sender)

    async def split_by_ranges(self, checkpoint: pager.Planned) -> pager.Planned:
        """The total is known: hand page ranges to producer tasks on other workers; this one
        fetches the first range."""
        parts = pager.split(checkpoint, self.src.partitions)
        run = self.run

        def hand_out() -> None:
            self.rt.progress.split(run.run_id,
                                   [{"checkpoint": c, "since": self.since} for c in parts])
            for i in range(1, len(parts)):
                continue_later(run, i, self.sender)

        await asyncio.to_thread(hand_out)
        return parts[0]

    async def admit(self) -> None:
        """Before each request: within the slice's bounds, and room in max_in_flight."""
        if (self.asked >= self.rt.settings.producer_slice_pages
                or time.monotonic() >= self.deadline or runtime.STOPPING.is_set()):
            raise SliceOver
        blocked_until = time.monotonic() + YIELD_AFTER
        while True:
            self.asked += 1
            held = self.asked - self.handed
            in_flight, others_wait = await asyncio.to_thread(self.load)
            if held + in_flight <= self.max_in_flight(others_wait):
                return
            self.asked -= 1
            # Hand the process back rather than wait: on a small pool (one process, say) the
            # batches this producer waits for need it. The continuation queues behind them.
            if time.monotonic() >= min(self.deadline, blocked_until):
                raise SliceOver
            await asyncio.sleep(POLL_SECONDS)

    def bulk(self) -> bool:
        """Whether the run is a backfill: its batches go to the bulk queue, fewer at once."""
        return self.items_read >= self.rt.settings.bulk_after_items

    def max_in_flight(self, others_wait: bool) -> int:
        """The source's max_in_flight; for a backfill while other work waits in the queues,
        at most bulk_max_in_flight, so the fleet's threads and cores go to that work first.
        A backfill alone takes the whole fleet."""
        limit = self.src.max_in_flight
        if self.bulk() and others_wait:
            return min(limit, self.rt.settings.bulk_max_in_flight)
        return limit

    def load(self) -> tuple[int, bool]:
        """The run's batches in flight, and (for a backfill) whether other work waits."""
        return (self.rt.progress.in_flight(self.run.run_id),
                self.bulk() and self.others_wait())

    def others_wait(self) -> bool:
        """Whether a queue other than the bulk one holds messages. Seen where the queue is on
        Sluice's Redis (one LLEN each); on another broker (RabbitMQ) taken to be so."""
        if self.rt.settings.broker_url is not None:
            return True
        pipe = self.rt.redis.pipeline(transaction=False)
        for queue in messages.QUEUES:
            if queue != messages.BULK:
                pipe.llen(queue)
        return any(pipe.execute())

    def publish(self, page: pager.Page) -> bool:
        """Publish the page's batches, then record it. A crash in between fetches this page
        again from the checkpoint, with the same seqs, and the sets count it once.
        True: the page held an item older than the watermark (``stop_when_older``): what
        came before it is published, and the partition is done."""
        run, src = self.run, self.src
        page, stop = self.newer_part(page)
        parts = batches(page, max_items=src.max_batch_items, max_bytes=src.max_batch_bytes)
        bulk = self.bulk()
        with traces.span("sluice.produce page", {"sluice.seq": page.seq, "sluice.batches":
                                                 len(parts), "sluice.items": len(page.items)}):
            for batch in parts:
                messages.batch(self.sender, run.run_id, run.source, run.kind, batch.seq,
                               batch.items, count=batch.size, run_seq=run.run_seq, bulk=bulk)
        self.items_read += len(page.items)
        digest = hashlib.sha1("".join(b.items for b in parts).encode()).hexdigest()[:20]
        recorded = self.rt.progress.record_page(run.run_id, run.source, run.kind, PageRecord(
            batches=tuple(batch.seq for batch in parts), items=len(page.items),
            checkpoint=page.checkpoint, partition=self.partition, total=page.total,
            truncated=page.truncated, page=page.seq, items_digest=digest if parts else "",
            newest=self.raise_newest(page)))
        self.check(page, recorded)
        self.handed += 1
        return stop

    def newer_part(self, page: pager.Page) -> tuple[pager.Page, bool]:
        """With ``stop_when_older``: the page up to its first item older than the watermark
        (the partition's last page then), and whether there was one."""
        threshold, inc = self.stop_at(), self.incremental
        if threshold is None or inc is None:
            return page, False
        for i, item in enumerate(page.items):
            if older(inc.value(item), threshold):
                return replace(page, items=page.items[:i], checkpoint=None, truncated=None,
                               total=None), True
        return replace(page, total=None), False  # a total counts what is not read

    def raise_newest(self, page: pager.Page) -> Any:
        """The partition's newest cursor value, when this page raised it (else None)."""
        if self.incremental is None:
            return None
        value = newest([self.incremental.value(item) for item in page.items])
        if value is None or (self.newest is not None and not older(self.newest, value)):
            return None
        self.newest = value
        return value

    def check(self, page: pager.Page, recorded: Recorded | Cycle | Stopped) -> None:
        """Stop a run whose record is gone (or was kept by a Redis server since lost), whose
        paging goes round, or that never ends."""
        name = f"{self.run.source}/{self.run.kind}"
        if isinstance(recorded, Stopped):
            raise RunLost(f"run {self.run.run_id}: {recorded.why}; stopping")
        if isinstance(recorded, Cycle) and recorded.what == "items":
            raise PagingCycle(
                f"{name}: page {page.seq} holds the very items of page {recorded.page}: the "
                "API ignores where the paging asks it to go on; stopping")
        if isinstance(recorded, Cycle):
            assert page.checkpoint is not None and "next" in page.checkpoint
            what = self.rt.config.redactor.data(page.checkpoint["next"])
            raise PagingCycle(
                f"{name}: the API led back to a page this run already asked for: "
                f"page {page.checkpoint['seq']} would ask for {what} again, as page "
                f"{recorded.page} did; stopping")
        if recorded.pages > self.src.max_pages:
            raise TooManyPages(
                f"{name}: more than max_pages ({self.src.max_pages}) pages in one run: "
                "an API that never stops paging, or a kind bigger than this source "
                "allows (raise max_pages)")


async def _close(pages: AsyncGenerator[Any, None]) -> None:
    """Close the page generator (cancelling its requests) once nothing runs inside it: after
    an interrupted ``rt.run(next_page())`` the cancelled step may still be unwinding."""
    while getattr(pages, "ag_running", False):  # a native async generator's flag
        await asyncio.sleep(0.01)
    await pages.aclose()


def check_run(rt: runtime.Runtime, run: Run) -> None:
    """This worker can produce the run: it has the sluice.toml the run was started with
    (loaded again if it changed) and knows the source and kind. Raises ConfigError."""
    wanted = run.config_digest
    if wanted and wanted != rt.config.digest:
        rt.refresh(force=True)
        if wanted != rt.config.digest:
            why = f": {rt.reload_error}" if rt.reload_error else ""
            raise ConfigError(
                f"worker {socket.gethostname()} pid {os.getpid()} has another {rt.config.path} "
                f"(digest {rt.config.digest}) than the run was started with ({wanted}){why}")
    known = rt.integration(run.source).kinds()
    if run.kind not in known:
        raise ConfigError(f"{rt.config.path}: source {run.source!r} has no kind "
                          f"{run.kind!r} (kinds: {', '.join(known)})")


def produce_partition(rt: runtime.Runtime, run: Run, partition: int) -> bool:
    """Produce one slice of a partition and record how it ended: True when the partition is
    done (its last page out, or failed: a failure ends the whole producer side, with the
    exception's type, message and place, so the run fails within seconds); False when a
    fresh task goes on."""
    with Guard(None, rt.settings, retries=0) as guard:  # a window's thread: no task of its own
        finished = produce(rt, run, partition)
    if guard.error is not None:
        fail(rt, run, partition, guard.why)
        return True
    if finished and rt.progress.producer_done(run.run_id, partition=partition):
        messages.finalize(app, run.run_id)
    return finished


def fail(rt: runtime.Runtime, run: Run, partition: int, why: str) -> None:
    """The producer gave up (``why``: ``describe`` of the exception): the run fails."""
    log.warning("run %s: producer of %s/%s failed: %s", run.run_id, run.source, run.kind, why)
    if rt.progress.producer_done(run.run_id, partition=partition, error=why):
        messages.finalize(app, run.run_id)


@app.task(bind=True, name="sluice.resync")
def resync(self: Task, source: str, kind: str, run_id: str | None = None,
           partition: int = 0, windows: list[int] | None = None) -> dict[str, Any]:
    """Create (or join) the run of (source, kind) and produce one slice of a partition, or
    of several time windows at once (``windows``: partitions of a sliced run)."""
    rt = runtime.current()
    run = rt.progress.create_run(source, kind) if run_id is None else rt.progress.get(run_id)
    if (run is None or run.state != RunState.RUNNING or run.producer_done
            or rt.progress.moved(run.run_id, source, kind)):  # failed now: Redis forgot
        return summary(run_id or "", run and rt.progress.get(run.run_id))
    # No retry of its own: every request was retried by the source's client (with the API's
    # Retry-After, up to max_retry_after); what is left fails the run within seconds.
    with Guard(self, rt.settings, retries=0) as guard:
        check_run(rt, run)
        sliced = rt.integration(source).slices(kind)
        if sliced is not None and windows is None:
            # The run's first task cuts it into windows and hands them out (a redelivered
            # one finds them cut: the tasks it sent read them).
            if run.partitions is None and not slicing.cut(rt, run, sliced) \
                    and rt.progress.producer_done(run.run_id):
                messages.finalize(app, run.run_id)  # nothing to read: an empty run
            return summary(run.run_id, rt.progress.get(run.run_id))
    if guard.error is not None:
        fail(rt, run, partition, guard.why)
        return summary(run.run_id, rt.progress.get(run.run_id))
    with runtime.handing_on():
        if windows is not None:
            slicing.host(rt, run, windows, lambda p: produce_partition(rt, run, p))
        elif not produce_partition(rt, run, partition):
            continue_later(run, partition)
    return summary(run.run_id, rt.progress.get(run.run_id))
