"""Waiting for runs to end, and showing them meanwhile (``sluice run --wait``, ``sluice
standalone``): a progress bar per kind, live on a terminal and as plain lines otherwise;
the notices on the way (no worker listens, Redis is unreachable); a run's summary at the end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, TextIO

import redis
from rich.console import Console
from rich.text import Text

from tasks.runs import keys
from tasks.runs.progress import Progress, Run, RunState

if TYPE_CHECKING:
    from rich.progress import TaskID

REDIS_PATIENCE = 120.0  # seconds `sluice run --wait` waits for an unreachable Redis


def safe_url(url: str) -> str:
    """The URL without its password."""
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(url))


def _get(progress: Progress, run_id: str) -> Run:
    """The run record; a record that is gone reads as a 'lost' run that says so."""
    return progress.get(run_id) or Run(
        run_id=run_id, state=RunState.LOST, producer_done=True,
        reason="the run record is gone from Redis (expired, or Redis lost its data)")


NO_WORKER_AFTER = 3.0  # seconds without a page before asking whether any worker listens


def consumers() -> list[str]:
    """Names of the workers that consume Sluice's queue now (asked over the broker)."""
    from tasks.app import QUEUE, app

    answers = app.control.inspect(timeout=1.0).active_queues() or {}
    return sorted(w for w, queues in answers.items() if any(q["name"] == QUEUE for q in queues))


class ProgressRow(NamedTuple):
    """One kind's progress in a run: the run's own kind, then each child kind."""

    key: str  # run id, and the kind
    label: str  # source/kind
    done: int  # batches ended (written or dead-lettered)
    total: int  # batches enqueued
    more: str  # '+' while more may come (the producer still pages, parents still fan out)
    written: int
    rejected: int
    state: str
    handled: int = 0  # items written, rejected or left out by a selector
    expected: int = 0  # items the API announced (0: it announced no total)

    def fraction(self) -> float | None:
        """How full the bar is: batches ended of those enqueued once the run ended, items
        handled of those the API announced while it runs; None (an open-ended count) when
        the API announced no total, since batches enqueued so far only ever run just ahead
        of those written."""
        if RunState(self.state).ended:
            return self.done / self.total if self.total else 1.0
        if self.expected:
            return min(1.0, self.handled / self.expected)
        return None


def rows(run: Run) -> list[ProgressRow]:
    """A run's progress, one row per kind (a run of a parent kind carries its children)."""
    own_done = run.own("batches_done") + run.own("batches_failed")
    own_total = run.own("batches_enqueued")
    handled = sum(run.own(n) for n in ("items_written", "items_rejected", "items_skipped"))
    found = [ProgressRow(run.run_id, f"{run.source}/{run.kind}", own_done, own_total,
                 "" if run.producer_done else "+", run.own("items_written"),
                 run.own("items_rejected"), str(run.state), handled, run.items_expected)]
    parents_pending = not run.producer_done or own_done < own_total
    for kind, counts in sorted(run.children.items()):
        found.append(ProgressRow(
            f"{run.run_id}/{kind}", f"{run.source}/{kind}",
            counts.get("batches_done", 0) + counts.get("batches_failed", 0),
            counts.get("batches_enqueued", 0), "+" if parents_pending else "",
            counts.get("items_written", 0), counts.get("items_rejected", 0), str(run.state)))
    return found


def bar(row: ProgressRow, width: int = 24) -> str:
    """A kind's progress as one plain line (stderr not a terminal: a log, a pipe); with no
    total announced, the bar is ``~`` (open-ended) and the counts say how far it got."""
    fraction = row.fraction()
    filled = int(width * fraction) if fraction is not None else 0
    meter = "~" * width if fraction is None else "#" * filled + "." * (width - filled)
    return (f"{row.label:<{len(row.label.split('/')[0]) + 13}} [{meter}] "
            f"{row.done}/{row.total}{row.more} batches  {row.written} written  "
            f"{row.rejected} rejected  {row.state}")


class _Display:
    """Where wait() shows its runs and says what it notices: plain lines every few seconds
    (or only its notices, with show=False)."""

    EVERY = 5.0  # seconds between two sets of plain lines

    def __init__(self, out: TextIO, *, show: bool) -> None:
        self.out, self.showing = out, show
        self.last_shown: float | None = None

    def __enter__(self) -> _Display:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def show(self, runs: list[Run], *, ended: bool) -> None:
        now = time.monotonic()
        if not self.showing or not (ended or self.last_shown is None
                                    or now - self.last_shown > self.EVERY):
            return
        for run in runs:
            for row in rows(run):
                self.out.write(bar(row) + "\n")
        self.out.flush()
        self.last_shown = now


class _LiveDisplay(_Display):
    """On a terminal: a rich Progress, one bar per run, redrawn in place; notices print above
    it. Nothing of it goes to stdout (it is not redirected: `--json` output stays pure)."""

    def __init__(self, out: TextIO) -> None:
        from rich.progress import BarColumn, TextColumn
        from rich.progress import Progress as Bars

        super().__init__(out, show=True)
        self.console = Console(file=out, force_terminal=True, highlight=False)
        self.bars = Bars(
            TextColumn("{task.description}", markup=False),
            BarColumn(bar_width=24, finished_style="green"),
            TextColumn("{task.fields[batches]} batches", markup=False),
            TextColumn("{task.fields[written]} written", markup=False),
            TextColumn("{task.fields[rejected]} rejected", markup=False),
            TextColumn("{task.fields[state]}", markup=False),
            console=self.console, auto_refresh=False, redirect_stdout=False)
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> _Display:
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()  # the last frame stays on the screen

    def say(self, text: str) -> None:
        self.console.print(Text(text))

    def show(self, runs: list[Run], *, ended: bool) -> None:
        for row in (row for run in runs for row in rows(run)):
            task = self.tasks.get(row.key)
            if task is None:
                task = self.tasks[row.key] = self.bars.add_task(row.label, total=None,
                                                                visible=False)
            # No total announced: a pulsing bar (an open-ended count beside it).
            fraction = row.fraction()
            self.bars.update(task, total=None if fraction is None else 1.0,
                             completed=fraction or 0.0, visible=True,
                             batches=f"{row.done}/{row.total}{row.more}", written=row.written,
                             rejected=row.rejected, state=row.state)
        self.bars.refresh()


def _display(out: TextIO, *, show: bool) -> _Display:
    """Live bars on a terminal (not a dumb one), plain lines otherwise."""
    if show and out.isatty() and not Console(file=out, force_terminal=True).is_dumb_terminal:
        return _LiveDisplay(out)
    return _Display(out, show=show)


class _Reader:
    """Reads the runs for wait(), ending every few seconds the runs that cannot end well
    (``Progress.watch``); rides out a Redis that is unreachable for up to REDIS_PATIENCE
    seconds (read() returns None meanwhile)."""

    def __init__(self, progress: Progress, run_ids: list[str], stall_seconds: float,
                 say: Callable[[str], None]) -> None:
        self.progress, self.run_ids, self.stall_seconds, self.say = (
            progress, run_ids, stall_seconds, say)
        self.last_watch = 0.0
        self.down_since: float | None = None

    def read(self) -> list[Run] | None:
        now = time.monotonic()
        try:
            if now - self.last_watch > 5:
                self.progress.watch(stall_after=self.stall_seconds)
                self.last_watch = now
            runs = [_get(self.progress, r) for r in self.run_ids]
        except redis.ConnectionError as exc:
            if self.down_since is None:
                self.down_since = now
                self.say(f"sluice: Redis is unreachable ({exc}); waiting for it")
            elif now - self.down_since > REDIS_PATIENCE:
                raise
            return None
        if self.down_since is not None:
            self.say("sluice: Redis is back")
            self.down_since = None
        return runs


class _Ends:
    """Wakes wait() the moment a run ends: run_lib.lua publishes each run's id on
    ``keys.RUNS_ENDED`` as it ends. Subscribed before wait() first reads the runs, so an end
    between a read and the next sleep still wakes it. Any run's end wakes it (wait() reads
    its own runs again); without the channel (Redis unreachable, a client without pub/sub) it
    sleeps out the poll as before."""

    def __init__(self, client: redis.Redis) -> None:
        self.pubsub: redis.client.PubSub | None = None
        try:
            self.pubsub = client.pubsub(ignore_subscribe_messages=True)
            self.pubsub.subscribe(keys.RUNS_ENDED)
        except (redis.RedisError, AttributeError, NotImplementedError):
            self.close()

    def sleep(self, seconds: float) -> None:
        """Until a run ends, or ``seconds`` at most."""
        if self.pubsub is None:
            time.sleep(seconds)
            return
        deadline = time.monotonic() + seconds
        try:
            while (left := deadline - time.monotonic()) > 0:
                if self.pubsub.get_message(timeout=left) is not None:
                    return
        except redis.RedisError:  # the reads ride Redis out; this goes back to sleeping
            self.close()
            time.sleep(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        if self.pubsub is not None:
            self.pubsub.close()
            self.pubsub = None


def _no_worker(workers: Callable[[], list[str]], say: Callable[[str], None]) -> None:
    """Says so when no worker consumes the queue."""
    if workers():
        return
    from tasks.settings import get_settings

    url = safe_url(get_settings().queue_url)
    say(f"sluice: no worker consumes the queue on {url}: the run waits until one does. Start "
        "one with the same SLUICE_REDIS_URL and sluice.toml: celery -A tasks worker")


def wait(progress: Progress, run_ids: list[str], *, show: bool, stall_seconds: float,
         poll: float = 0.2, out: TextIO | None = None,
         workers: Callable[[], list[str]] = consumers) -> list[Run]:
    """Poll until every run has ended, showing one progress bar per run on `out` (stderr by
    default): live on a terminal, as plain lines every few seconds otherwise. Runs without
    progress are marked stalled, runs Redis restarted or failed over under are failed.

    Says so when no worker consumes the queue (a few seconds after the start, while no page
    has come), and rides out a Redis that is unreachable for a while."""
    ends = _Ends(progress.r)
    try:
        with _display(out or sys.stderr, show=show) as display:
            return _wait(progress, run_ids, stall_seconds, poll, display, workers, ends)
    finally:
        ends.close()


def _wait(progress: Progress, run_ids: list[str], stall_seconds: float, poll: float,
          display: _Display, workers: Callable[[], list[str]], ends: _Ends) -> list[Run]:
    reader = _Reader(progress, run_ids, stall_seconds, display.say)
    started, asked = time.monotonic(), 0.0
    while True:
        runs = reader.read()
        if runs is None:
            time.sleep(1)
            continue
        now = time.monotonic()
        ended = all(r.state.ended for r in runs)
        quiet = not any(r.pages or r.batches_done for r in runs)
        if not ended and quiet and now - started > NO_WORKER_AFTER and now - asked > 30:
            asked = now
            _no_worker(workers, display.say)
        display.show(runs, ended=ended)
        if ended:
            return runs
        ends.sleep(poll)


def summary_text(run: Run) -> str:
    mode = " (incremental)" if run.incremental else " (full)" if run.full else ""
    text = (f"{run.source}/{run.kind} run {run.run_id}{mode}: {run.state}; "
            f"{run.items_written} written, {run.items_rejected} rejected, "
            f"{run.batches_failed} batches failed, {run.deleted + run.items_deleted} deleted")
    if run.items_deleted:  # rows the API's tombstones deleted, besides stale ones
        text += f" ({run.items_deleted} by the API's tombstones)"
    if run.moved:
        text += (f"\n  moved: {run.moved} rows left in entities from before the kind's"
                 " mapping deleted (its table holds the kind)")
    for key in ("reason", "deletion_skipped", "watermark"):
        if getattr(run, key):
            text += f"\n  {key.replace('_', ' ')}: {getattr(run, key)}"
    return text
