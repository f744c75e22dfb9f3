"""The producer: ``resync(source, kind)`` pages the API and publishes every page as an
``ingest_batch`` task the moment it arrives.

A producer task is short: after ``producer_slice_pages`` pages or ``producer_slice_seconds`` it
saves its cursor (it does after every page anyway) and continues in a fresh task with the same
run id. So a killed worker loses at most one slice, and the broker's visibility timeout can
stay at minutes. While more than ``max_in_flight`` batches of the run wait to be written, it
does not fetch (backpressure); that wait counts towards its slice, so a producer never holds a
worker process that its own batches need.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from celery import Task

from integrations.errors import ConfigError, RunLost, SluiceError
from tasks import runtime
from tasks.app import app
from tasks.finalize import finalize
from tasks.ingest import ingest_batch
from tasks.progress import RunState

POLL_SECONDS = 0.05


def summary(run: dict[str, Any]) -> dict[str, Any]:
    return {"run_id": run.get("run_id"), "state": run.get("state"), "pages": run.get("pages")}


async def produce(rt: runtime.Runtime, run: dict[str, Any]) -> bool:
    """Fetch and publish pages for one slice. True when the last page was published."""
    run_id, source, kind = run["run_id"], run["source"], run["kind"]
    settings = rt.settings
    max_in_flight = rt.config.source(source).max_in_flight
    started, state = rt.progress.cursor(run_id)
    if started and state is None:
        return True  # a redelivered slice of a producer that already published its last page
    deadline = time.monotonic() + settings.producer_slice_seconds
    budget = settings.producer_slice_pages
    seq = rt.progress.next_seq(run_id)
    pages = rt.integration(source).pages(kind, rt.client(source), state=state)
    try:
        while True:
            # Backpressure: ask for the next page only when the workers have room for it.
            while rt.progress.in_flight(run_id) >= max_in_flight and time.monotonic() < deadline:
                await asyncio.sleep(POLL_SECONDS)
            if budget <= 0 or time.monotonic() >= deadline:
                return False
            try:
                page = await anext(pages)
            except StopAsyncIteration:
                return True
            if page.items:
                # Publish first, record second: a crash in between re-fetches this page from
                # the saved cursor with the same seq, and the sets count it once.
                ingest_batch.apply_async(
                    (run_id, source, kind, seq, page.items),
                    argsrepr=f"run={run_id} {source}/{kind} page={seq} items={len(page.items)}",
                    kwargsrepr="{}",
                )
                if not rt.progress.record_page(run_id, source, kind, seq, len(page.items),
                                               page.state):
                    raise RunLost(f"run {run_id}: its record is gone from Redis; stopping")
                seq += 1
            else:
                rt.progress.save_cursor(run_id, page.state)
            if page.state is None:
                return True
            budget -= 1
    finally:
        await pages.aclose()


@app.task(bind=True, name="sluice.resync")
def resync(self: Task, source: str, kind: str, run_id: str | None = None) -> dict[str, Any]:
    """Create (or join) the run of (source, kind) and produce one slice of it."""
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
        finished = rt.run(produce(rt, run))
    except SluiceError as exc:
        if rt.progress.producer_done(run["run_id"], error=f"{type(exc).__name__}: {exc}"):
            finalize.delay(run["run_id"])
        return summary(rt.progress.get(run["run_id"]))
    if not finished:
        self.apply_async((source, kind), {"run_id": run["run_id"]},
                         argsrepr=f"{source}/{kind} run={run['run_id']} (continued)")
    elif rt.progress.producer_done(run["run_id"]):
        finalize.delay(run["run_id"])
    return summary(rt.progress.get(run["run_id"]))
