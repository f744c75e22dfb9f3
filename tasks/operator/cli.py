"""``sluice``: run resyncs on the running workers and look at their runs.

    sluice check                          validate sluice.toml and show what it holds
    sluice run SOURCE [--kind K]... [--wait] [--json]
    sluice status [RUN_ID] [--limit N] [--json]
    sluice failed list [RUN_ID] | failed retry RUN_ID   (webhook events: RUN_ID webhooks-SOURCE)
    sluice entities [SOURCE [KIND]] [--limit N] [--db FILE]   what the target holds
    sluice metrics [--host H] [--port P]  Prometheus metrics of runs
    sluice serve [--host H] [--port P]    the webhook endpoint (POST /webhooks/SOURCE)
    sluice standalone [--once]            everything on this machine (a demo without a config)

``--config PATH`` goes before or after the command. A click group (``sluice``) with one function
per command; ``failed`` is a sub-group of ``list`` and ``retry``. ``main()`` is the entry point:
a command returns its exit code, and the group turns a configuration error (2), an unreachable
Redis (3), Ctrl-C (130) and a closed pipe (0, quietly) into a message and a code; a usage error
is click's (2).

Output: ``--json`` prints one ``Run.as_json()`` line per run on stdout and nothing else. The
progress of ``run --wait`` goes to stderr: rich bars redrawn in place on a terminal, plain lines
every few seconds otherwise; ``status`` draws a rich table on a terminal and prints plain lines
when piped.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TextIO, TypeVar

import click
import redis
from kombu.exceptions import OperationalError
from rich.console import Console
from rich.text import Text

from integrations.errors import ConfigError
from tasks import traces
from tasks.runs.deadletter import DeadLetter
from tasks.runs.progress import Progress, Run, RunState
from tasks.runs.webhooks import RUN_PREFIX, WebhookLog

if TYPE_CHECKING:
    from rich.progress import TaskID

    from tasks.config import SluiceConfig

REDIS_PATIENCE = 120.0  # seconds `sluice run --wait` waits for an unreachable Redis


def _safe_url(url: str) -> str:
    """The URL without its password."""
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(url))


def _progress() -> Progress:
    """The run records, on a client that rides out a Redis restart of about half a minute."""
    from tasks.runs.client import connect_redis
    from tasks.settings import get_settings

    settings = get_settings()
    return Progress.from_settings(settings, connect_redis(settings.redis_url))


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


def _kinds(config: SluiceConfig, source: str, wanted: list[str] | None) -> list[str]:
    known = config.source(source).kind_names()
    for kind in wanted or []:
        if kind not in known:
            raise ConfigError(f"{config.path}: source {source!r} has no kind {kind!r}"
                              f" (kinds: {', '.join(known)})")
    return config.run_kinds(source, wanted)


class Row(NamedTuple):
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


def rows(run: Run) -> list[Row]:
    """A run's progress, one row per kind (a run of a parent kind carries its children)."""
    own_done = run.own("batches_done") + run.own("batches_failed")
    own_total = run.own("batches_enqueued")
    handled = sum(run.own(n) for n in ("items_written", "items_rejected", "items_skipped"))
    found = [Row(run.run_id, f"{run.source}/{run.kind}", own_done, own_total,
                 "" if run.producer_done else "+", run.own("items_written"),
                 run.own("items_rejected"), str(run.state), handled, run.items_expected)]
    parents_pending = not run.producer_done or own_done < own_total
    for kind, counts in sorted(run.children.items()):
        found.append(Row(
            f"{run.run_id}/{kind}", f"{run.source}/{kind}",
            counts.get("batches_done", 0) + counts.get("batches_failed", 0),
            counts.get("batches_enqueued", 0), "+" if parents_pending else "",
            counts.get("items_written", 0), counts.get("items_rejected", 0), str(run.state)))
    return found


def bar(row: Row, width: int = 24) -> str:
    """A kind's progress as one plain line (stderr not a terminal: a log, a pipe); with no
    total announced, the bar is ``~`` (open-ended) and the counts say how far it got."""
    fraction = row.fraction()
    filled = int(width * fraction) if fraction is not None else 0
    meter = "~" * width if fraction is None else "#" * filled + "." * (width - filled)
    return (f"{row.label:<{len(row.label.split('/')[0]) + 13}} [{meter}] "
            f"{row.done}/{row.total}{row.more} batches  {row.written} written  "
            f"{row.rejected} rejected  {row.state}")


def line(run: Run) -> str:
    return json.dumps(run.as_json())


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


def _no_worker(workers: Callable[[], list[str]], say: Callable[[str], None]) -> None:
    """Says so when no worker consumes the queue."""
    if workers():
        return
    from tasks.settings import get_settings

    url = _safe_url(get_settings().queue_url)
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
    with _display(out or sys.stderr, show=show) as display:
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
            time.sleep(poll)


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


# The commands ---------------------------------------------------------------------------------

class _Sluice(click.Group):
    """The ``sluice`` group. A command returns its exit code; the errors an operator meets (a
    bad sluice.toml, Redis down, Ctrl-C, a closed pipe) become a message and an exit code here
    rather than a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        code = self._exit_code(ctx)
        ctx.exit(code)

    def _exit_code(self, ctx: click.Context) -> int:
        try:
            code = super().invoke(ctx)
            return code if isinstance(code, int) else 0
        except ConfigError as exc:
            click.echo(f"sluice: {exc}", err=True)
            return 2
        except redis.ConnectionError as exc:
            from tasks.settings import get_settings

            url = get_settings().redis_url
            click.echo(f"sluice: cannot reach Redis at {_safe_url(url)} ($SLUICE_REDIS_URL): "
                       f"{exc}", err=True)
            return 3
        except OperationalError as exc:  # kombu's: its message names no host
            from tasks.settings import get_settings

            settings = get_settings()
            where = "$SLUICE_BROKER_URL" if settings.broker_url else "$SLUICE_REDIS_URL"
            click.echo(f"sluice: cannot reach the broker at {_safe_url(settings.queue_url)} "
                       f"({where}): {exc}", err=True)
            return 3
        except KeyboardInterrupt:
            return 130
        except BrokenPipeError:  # `sluice status | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0


_CONFIG_KEY = "sluice.config"


def _remember_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    # ctx.meta is shared by the whole context chain: a --config after the subcommand is parsed
    # later and wins over one before it, as with argparse before.
    if value is not None:
        ctx.meta[_CONFIG_KEY] = value


F = TypeVar("F", bound=Callable[..., Any])


def config_option(f: F) -> F:
    """``--config PATH``, accepted before the subcommand and after it."""
    return click.option("--config", metavar="PATH", expose_value=False,
                        callback=_remember_config,
                        help="sluice.toml (default: $SLUICE_CONFIG, else ./sluice.toml)")(f)


def _config() -> SluiceConfig:
    """sluice.toml (--config, else $SLUICE_CONFIG, else ./sluice.toml), validated; imported
    here, not at the top: `sluice status` does without the integrations and their models."""
    from tasks.config import get_config

    return get_config(_config_arg())


def _config_arg() -> str | None:
    """The --config given (before or after the subcommand), if any."""
    value = click.get_current_context().meta.get(_CONFIG_KEY)
    return value if isinstance(value, str) else None


@click.group("sluice", cls=_Sluice, context_settings={"help_option_names": ["-h", "--help"]})
@config_option
def sluice() -> None:
    """Run resyncs on the running workers and look at their runs.

    Exit codes: 0 done; 1 a run that did not succeed (run --wait), an unknown run (status);
    2 a usage or configuration error; 3 Redis unreachable; 130 interrupted.
    """


@sluice.command("check", help="validate the configuration")
@config_option
def cmd_check() -> int:
    config = _config()
    frozen = frozen_columns(config)
    if frozen:
        raise ConfigError(f"{config.path}: invalid configuration:\n  " + "\n  ".join(frozen))
    click.echo(f"{config.path}: ok")
    click.echo(f"target: {config.target.type}")
    for name, source in config.sources.items():
        click.echo(f"source {name} ({source.integration}): kinds "
                   f"{', '.join(source.kind_names())}")
    return 0


def frozen_columns(config: SluiceConfig) -> list[str]:
    """The mappings that would add a column to a table with ``schema = "freeze"`` (read from
    the target as it is; a SQLite file that does not exist yet has no table to compare)."""
    from integrations.registry import load
    from tasks.config import SqliteConfig
    from tasks.targets import open_target
    from tasks.targets.base import Target, Typed

    if isinstance(config.target, SqliteConfig) and not Path(config.target.path).exists():
        return []
    problems: list[str] = []
    target: Target | None = None
    for name, source in config.sources.items():
        integration = load(source)
        for kind in source.kind_names():
            mapping = integration.mapping(kind)
            if mapping is None or mapping.settings.schema_mode != "freeze":
                continue
            target = target or open_target(config.target)
            if not isinstance(target, Typed):
                continue
            table = mapping.table(name)
            have = target.table_columns(table)
            new = [c for c in mapping.settings.declared() if have is not None and c not in have]
            if new:
                problems.append(f"sources.{name}.{integration.mapping_key(kind)}: table "
                                f"{table} is frozen (schema = \"freeze\") and has no column "
                                f"{', '.join(new)}")
    if target is not None:
        target.close()
    return problems


@sluice.command("run", help="enqueue resyncs of a source's kinds")
@click.argument("source")
@click.option("--kind", "kinds", multiple=True, metavar="KIND",
              help="a kind to resync (repeatable; default all)")
@click.option("--wait", "wait_", is_flag=True, help="show progress; exit 0 only if all succeed")
@click.option("--json", "as_json", is_flag=True, help="print one final JSON line per run")
@click.option("--full", is_flag=True,
              help="incremental kinds read everything (then stale entities may be deleted)")
@config_option
def cmd_run(source: str, kinds: tuple[str, ...], wait_: bool, as_json: bool,
            full: bool) -> int:
    config = _config()
    wanted = _kinds(config, source, list(kinds) or None)
    progress = _progress()
    from tasks.schedule import start_runs

    traces.setup("cli")
    runs = start_runs(progress, source, wanted, config_digest=config.digest, full=full)
    for run in runs:
        if not as_json:
            note = f" ({run.reason})" if run.reason else ""
            click.echo(f"{run.source}/{run.kind}: run {run.run_id} {run.state}{note}")
    if wait_:
        from tasks.settings import get_settings

        runs = wait(progress, [r.run_id for r in runs], show=not as_json,
                    stall_seconds=get_settings().stall_seconds)
    if as_json:
        for run in runs:
            click.echo(line(run))
    elif wait_:
        for run in runs:
            click.echo(summary_text(run))
    if not wait_:
        return 0
    # partial (stale entities not deleted), failed, stalled, lost: not a plain success.
    return 0 if all(r.state == RunState.SUCCEEDED for r in runs) else 1


@sluice.command("status", help="show runs")
@click.argument("run_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="one JSON line per run")
@click.option("--limit", type=int, default=20, show_default=True, help="how many recent runs")
@config_option
def cmd_status(run_id: str | None, as_json: bool, limit: int) -> int:
    progress = _progress()
    if run_id:
        run = progress.get(run_id)
        if run is None:
            click.echo(f"no run {run_id}", err=True)
            return 1
        runs = [run]
    else:
        runs = progress.recent(limit)
    if not as_json and sys.stdout.isatty():
        _print_status(runs)
        return 0
    for run in runs:
        click.echo(line(run) if as_json else summary_text(run))
    return 0


def _print_status(runs: list[Run]) -> None:
    """The runs as a table, for a terminal (piped, status prints summary_text's lines); a
    run's reason, deletion skipped and watermark follow it, one line each."""
    from rich import box
    from rich.table import Table

    # Folded, never cut with an ellipsis, on a narrow terminal: a run id is there to be copied.
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for name in ("run", "source/kind", "state"):
        table.add_column(name, overflow="fold")
    for name in ("written", "rejected", "batches\nfailed", "deleted"):
        table.add_column(name, justify="right", overflow="fold")
    why: list[str] = []
    for run in runs:
        table.add_row(*(Text(cell) for cell in (  # Text: a reason's [brackets] are no markup
            run.run_id, f"{run.source}/{run.kind}",
            f"{run.state}{' (incremental)' if run.incremental else ''}", str(run.items_written),
            str(run.items_rejected), str(run.batches_failed),
            str(run.deleted + run.items_deleted))))
        why += [f"{run.run_id} {key.replace('_', ' ')}: {getattr(run, key)}"
                for key in ("reason", "deletion_skipped", "watermark") if getattr(run, key)]
    console = Console(force_terminal=True, highlight=False)
    console.print(table)
    for text in why:
        console.print(Text(text))


@sluice.group("failed", help="dead-lettered batches and rejected items")
@config_option
def failed() -> None:
    pass


@failed.command("list", help="dead-lettered batches and rejected items, with why (a source's "
                              "webhook events: webhooks-SOURCE)")
@click.argument("run_id", required=False)
@config_option
def cmd_failed_list(run_id: str | None) -> int:
    progress = _progress()
    hooks = WebhookLog(progress.r)
    if run_id:
        run_ids, sources = ([], [_webhook_source(run_id)]) if run_id.startswith(RUN_PREFIX) \
            else ([run_id], [])
    else:
        run_ids = [r.run_id for r in progress.recent(100)]
        sources = sorted(n for n, s in _config().sources.items()
                         if s.webhook_secret)
    from tasks.runs.seqs import describe_seq

    lines: list[str] = []
    for rid in run_ids:
        for seq, letter in sorted(progress.dead_letters(rid).items()):
            lines.append(f"{rid} batch {seq} ({letter.source}/{letter.kind}, "
                         f"{letter.count} items, {letter.attempts} attempts): {letter.error}")
        for rec in progress.rejected(rid):
            lines.append(f"{rid} rejected {describe_seq(rec['seq'])} item {rec['index']}: "
                         f"{rec['reason']}: {rec['item']}")
    for source in sources:
        for batch, letter in sorted(hooks.dead_letters(source).items()):
            lines.append(f"{RUN_PREFIX}{source} batch {batch} ({source}/{letter.kind}, "
                         f"{letter.count} events, {letter.attempts} attempts): {letter.error}")
        for rec in hooks.rejected(source):
            lines.append(f"{RUN_PREFIX}{source} rejected event {rec['index']} of batch "
                         f"{rec['batch']}: {rec['reason']}: {rec['item']}")
    for line in lines:
        click.echo(line)
    if not lines:
        where = run_id or "the last 100 runs" + (
            f" or the webhook events of {', '.join(sources)}" if sources else "")
        click.echo(f"no failures in {where}: no dead-lettered batch, no rejected item")
    return 0


def _webhook_source(run_id: str) -> str:
    """The source of ``webhooks-SOURCE``; a source sluice.toml does not name is an error."""
    source = run_id[len(RUN_PREFIX):]
    if source not in _config().sources:
        raise click.UsageError(f"{run_id}: sluice.toml has no source {source!r}")
    return source


@failed.command("retry", help="enqueue a run's dead-lettered batches again (a source's webhook "
                               "events: webhooks-SOURCE)")
@click.argument("run_id")
@config_option
def cmd_failed_retry(run_id: str) -> int:
    progress = _progress()
    from tasks import messages
    from tasks.app import app

    if run_id.startswith(RUN_PREFIX):
        source = _webhook_source(run_id)
        dead = WebhookLog(progress.r).dead_letters(source)
        for batch, letter in sorted(dead.items()):  # the same batch id: counted once
            events = letter.items
            messages.webhook(app, source, letter.kind, batch,
                             events if isinstance(events, str) else json.dumps(events),
                             count=len(events) if isinstance(events, list) else 0)
        click.echo(f"{run_id}: {len(dead)} dead-lettered batch(es) enqueued again")
        return 0
    letters = progress.dead_letters(run_id)
    run = progress.get(run_id)
    run_seq = run.run_seq if run else None
    traces.setup("cli")
    with traces.within(run.traceparent if run else ""):  # the retried batches join the run's
        resend(letters, run_id, run_seq)
    click.echo(f"run {run_id}: {len(letters)} dead-lettered batch(es) enqueued again")
    return 0


def resend(letters: dict[int, DeadLetter], run_id: str, run_seq: int | None) -> None:
    """Send the run's dead-lettered batches (and children tasks) again."""
    from tasks import messages
    from tasks.app import app

    for seq, letter in sorted(letters.items()):
        if letter.task == "children":  # the task that fetches children, again
            assert letter.root is not None, "a children task's letter names its root"
            messages.children(app, run_id, letter.source, letter.kind, seq,
                              json.dumps(letter.items), run_seq=run_seq or 0,
                              count=len(letter.items), root=letter.root, note=" (retry)")
            continue
        messages.batch(app, run_id, letter.source, letter.kind, seq, letter.items,
                       run_seq=run_seq, note=" (retry)", root=letter.root)


@sluice.command("preview", help="fetch a kind's first page, map it, print the rows (writes "
                                 "nothing)")
@click.argument("source")
@click.argument("kind")
@click.option("--limit", type=int, default=5, show_default=True, help="rows to print")
@config_option
def cmd_preview(source: str, kind: str, limit: int) -> int:
    from tasks.operator.preview import preview

    for text in preview(_config(), source, kind, limit=limit):
        click.echo(text)
    return 0


@sluice.command("entities", help="what the target holds (SQLite, PostgreSQL): a count per"
                                  " kind and per typed table, or the rows of SOURCE [KIND]")
@click.argument("source", required=False)
@click.argument("kind", required=False)
@click.option("--limit", type=int, default=20, show_default=True,
              help="entities to print (and rows of each typed table)")
@click.option("--db", metavar="PATH", help="a SQLite file to read instead of the config's target")
@config_option
def cmd_entities(source: str | None, kind: str | None, limit: int, db: str | None) -> int:
    from tasks.config import SqliteConfig
    from tasks.operator import entities
    from tasks.targets import open_target
    from tasks.targets.base import Readable

    config = None if db else _config()
    settings = config.target if config is not None else SqliteConfig(path=db or "")
    if settings.type == "http":
        click.echo("sluice: the http target cannot be read back", err=True)
        return 2
    target = open_target(settings)
    assert isinstance(target, Readable)
    try:
        tables = entities.tables_of(config, target)
        if source is None:
            for line in entities.counts(target, tables):
                click.echo(line)
            return 0
        if config is not None:
            _kinds(config, source, [kind] if kind else None)
        lines = entities.rows(target, source, kind, tables, limit=limit, guess=config is None)
        if config is None and not lines:
            held = ", ".join(entities.counts(target, tables)) or "nothing"
            what = f"{source}/{kind}" if kind else source
            raise ConfigError(f"{db} holds no entities of {what} (it holds: {held})")
        for line in lines:
            click.echo(line)
        return 0
    finally:
        target.close()


@sluice.command("schema", help="the tables the target needs (--sql: their SQL, for a DBA to run"
                                " so that Sluice's role needs no CREATE)")
@click.option("--sql", is_flag=True, help="print the SQL that makes them")
@click.option("--role", metavar="ROLE", help="with --sql: the grants ROLE needs (PostgreSQL)")
@config_option
def cmd_schema(sql: bool, role: str | None) -> int:
    from tasks.operator import schema

    config = _config()
    target = config.target
    if target.type == "http":
        click.echo("sluice: the http target keeps no tables", err=True)
        return 2
    if role is not None and (not sql or target.type != "postgres" or "$" in role):
        raise click.UsageError("--role goes with --sql on a PostgreSQL target, and names a"
                               " role without '$'")
    click.echo("\n".join(schema.sql(config, role=role) if sql else schema.tables(config)))
    return 0


@sluice.command("metrics", help="serve Prometheus metrics of runs")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=9808, show_default=True)
@config_option
def cmd_metrics(host: str, port: int) -> int:
    from tasks.runs.metrics import serve

    click.echo(f"sluice metrics on http://{host}:{port}/metrics")
    serve(_progress(), host=host, port=port)
    return 0


@sluice.command("serve", help="the webhook endpoint: POST /webhooks/SOURCE, GET /healthz")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@config_option
def cmd_serve(host: str, port: int) -> int:
    from tasks.serve.process import serve

    return serve(config=_config_arg(), host=host, port=port)


@sluice.command("standalone", short_help="everything on this machine (a demo without a config)",
                help="Redis, workers, beat, Flower and sluice serve on this machine; resync "
                     "every source of --config, else $SLUICE_CONFIG, else ./sluice.toml; with "
                     "none of them, a demo API and its demo configuration")
@click.option("--once", is_flag=True,
              help="exit after the first resync of every source, with its outcome")
@click.option("--workers", type=int, default=None,
              help="tasks at once (default: the worker's, 8 threads)")
@click.option("--flower-port", type=int, default=5555, show_default=True)
@click.option("--serve-port", type=int, default=8000, show_default=True,
              help="port of sluice serve, the webhook endpoint (on 127.0.0.1)")
@click.option("--logs", metavar="DIR",
              help="directory for the children's logs (default: a temp dir)")
@config_option
def cmd_standalone(once: bool, workers: int | None, flower_port: int, serve_port: int,
                   logs: str | None) -> int:
    from tasks.operator.standalone import standalone

    return standalone(config=_config_arg(), once=once, workers=workers,
                      flower_port=flower_port, serve_port=serve_port, logs=logs)


def main(argv: list[str] | None = None) -> int:
    """The ``sluice`` entry point: the exit code of the command (2 for a usage error)."""
    try:
        code = sluice.main(args=argv, prog_name="sluice", standalone_mode=False)
    except click.ClickException as exc:  # usage errors
        exc.show()
        return exc.exit_code
    except click.Abort:
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
