"""The producer's time windows (``slices`` of a kind; ``integrations.slices``).

The first producer task of a sliced run cuts the run's span into windows, each a partition
of the run, and starts as many as ``max_concurrency`` allows (its own, window 0, among them);
every window that ends starts the next one, so that many are read at once across the fleet.
A window whose first page is too full is split in two (``Split``): the partition goes on
with the first half, the second half is a new partition, started like the others.

    full run          [start, end or the run's start)
    incremental run   [watermark - lookback, the run's start) (no watermark yet: from start)
"""

from __future__ import annotations

import json
import logging
from typing import Any

from integrations.errors import ConfigError
from integrations.slices import Slices
from tasks import messages
from tasks.app import app
from tasks.runs.progress import Run
from tasks.worker import runtime

log = logging.getLogger(__name__)


class Resplit(Exception):
    """The partition's window was split: it reads its first half from the start."""


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
        raise ConfigError(f"{rt.config.path}: sources.{run.source}.kinds.{run.kind}.{exc}"
                          ) from None
    if not windows:
        return False
    rt.windows.cut(run.run_id, windows, incremental=start is not None)
    log.info("run %s: %s/%s in %d windows of %s", run.run_id, run.source, run.kind,
             len(windows), slices.step)
    start_windows(rt, run)
    return True


def start_windows(rt: runtime.Runtime, run: Run) -> None:
    """Start the windows that may start now (none when the run is not sliced)."""
    limit = rt.config.source(run.source).max_concurrency
    for partition in rt.windows.claim(run.run_id, limit):
        messages.resync(app, run.source, run.kind, run.run_id, partition=partition)
