"""The producer's time windows (``slices`` of a kind; ``integrations.slices``).

The first producer task of a sliced run cuts the run's span into windows, each a partition
of the run, claims as many as ``max_concurrency`` allows and sends them out in tasks of
``WINDOWS_PER_TASK`` windows: each such task (on any worker) reads its windows at once, one
thread each on the process's event loop, and a window that ends makes room for the next one
claimed, so that many windows are read at once across the fleet while a task holds one worker
slot, not one per window (the batches need the others). Windows left when the task's time is
up go on in one fresh task. A window whose first page is too full is split into pieces at once,
2 to 16 as its count asks (``Resplit``): the partition goes on with the first piece, each other
piece is a new partition, claimed like the others.

    full run          [start, end or the run's start)
    incremental run   [watermark - lookback, the run's start) (no watermark yet: from start)
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from integrations.errors import ConfigError
from integrations.slices import Slices
from tasks import messages
from tasks.app import app
from tasks.runs.progress import Run
from tasks.worker import runtime

log = logging.getLogger(__name__)

WINDOWS_PER_TASK = 8  # windows one producer task reads at once (a worker slot each task)


class Resplit(Exception):
    """The partition's window was split: it reads its first piece from the start."""


def since(rt: runtime.Runtime, run: Run) -> Any:
    """What an incremental run of a sliced kind reads from (None: everything)."""
    integration = rt.integration(run.source)
    incremental = integration.incremental(run.kind)
    if incremental is None or run.full:
        return None
    marks = rt.watermarks().get(run.source, run.kind, mapping=integration.mapping(run.kind))
    return incremental.since(marks.get(json.dumps(None)))


def cut(rt: runtime.Runtime, run: Run, slices: Slices) -> bool:
    """Cut the run into windows and start them. False: the span is empty (nothing to read).
    Raises ConfigError when it would be too many windows."""
    start = since(rt, run)
    try:
        lo, hi = slices.span(now=run.started_at, since=start)
        windows = slices.cut(lo, hi)
    except ValueError as exc:
        raise ConfigError(f"{rt.config.path}: sources.{run.source}.kinds.{run.kind}.slices."
                          f"{exc}") from None
    if not windows:
        return False
    rt.windows.cut(run.run_id, windows, incremental=start is not None)
    log.info("run %s: %s/%s in %d windows of %s", run.run_id, run.source, run.kind,
             len(windows), slices.step)
    start_windows(rt, run)
    return True


def start_windows(rt: runtime.Runtime, run: Run) -> None:
    """Send out the windows that may start now, ``WINDOWS_PER_TASK`` to a task."""
    limit = rt.config.source(run.source).max_concurrency
    claimed = rt.windows.claim(run.run_id, limit, most=limit)
    for i in range(0, len(claimed), WINDOWS_PER_TASK):
        messages.resync(app, run.source, run.kind, run.run_id,
                        windows=claimed[i:i + WINDOWS_PER_TASK], trace=run.traceparent)


def host(rt: runtime.Runtime, run: Run, windows: list[int],
         produce: Callable[[int], bool]) -> None:
    """Read ``windows`` at once, a thread each (``produce(partition)``: True when the window
    is done or failed, False when it goes on later). While the task's time lasts, a window
    that ends makes room for the next one claimed; what is left then goes on in one fresh
    task."""
    limit = rt.config.source(run.source).max_concurrency
    deadline = time.monotonic() + rt.settings.producer_slice_seconds
    later: list[int] = []
    with ThreadPoolExecutor(WINDOWS_PER_TASK, thread_name_prefix="window") as pool:
        # Each window's thread runs in a copy of the task's context: its spans (requests,
        # pages) belong to the task's trace (tasks/traces).
        def submit(partition: int) -> Future[bool]:
            return pool.submit(contextvars.copy_context().run, produce, partition)

        running: dict[Future[bool], int] = {submit(p): p for p in windows}
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                partition = running.pop(future)
                if not future.result():
                    later.append(partition)
            if time.monotonic() < deadline and not runtime.STOPPING.is_set():
                room = WINDOWS_PER_TASK - len(running) - len(later)
                for partition in rt.windows.claim(run.run_id, limit, most=max(0, room)):
                    running[submit(partition)] = partition
    if later:
        messages.resync(app, run.source, run.kind, run.run_id, windows=later,
                        trace=run.traceparent)
