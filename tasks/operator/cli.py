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
is click's (2). The ``sluice`` script (``tasks.operator.entry``) comes here for ``run`` only
when the running workers did not start the runs (``tasks.operator.thin``), or to watch them.

Output: ``--json`` prints one ``Run.as_json()`` line per run on stdout and nothing else. The
progress of ``run --wait`` goes to stderr (``tasks.operator.watch``): rich bars redrawn in
place on a terminal, plain lines every few seconds otherwise; ``status`` draws a rich table on
a terminal and prints plain lines when piped.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import redis
from kombu.exceptions import OperationalError
from rich.console import Console
from rich.text import Text

from integrations.errors import ConfigError
from tasks import traces
from tasks.operator import thin
from tasks.operator.entry import collector_off
from tasks.operator.watch import safe_url, summary_text, wait
from tasks.runs.deadletter import DeadLetter
from tasks.runs.progress import Progress, Run, RunState
from tasks.runs.webhooks import RUN_PREFIX, WebhookLog

if TYPE_CHECKING:
    from tasks.config import SluiceConfig


def _progress() -> Progress:
    """The run records, on a client that rides out a Redis restart of about half a minute."""
    from tasks.runs.client import connect_redis
    from tasks.settings import get_settings

    settings = get_settings()
    return Progress.from_settings(settings, connect_redis(settings.redis_url))


def line(run: Run) -> str:
    return json.dumps(run.as_json())


# The commands ---------------------------------------------------------------------------------

class _Sluice(click.Group):
    """The ``sluice`` group. A command returns its exit code; the errors an operator meets (a
    bad sluice.toml, Redis down, Ctrl-C, a closed pipe) become a message and an exit code here
    rather than a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        code = exit_code(lambda: super(_Sluice, self).invoke(ctx))
        ctx.exit(code)


def exit_code(command: Callable[[], Any]) -> int:
    """The exit code of ``command`` (a command's, or what ``sluice run``'s thin start does
    after the runs are started): the errors an operator meets become a message and a code."""
    try:
        code = command()
        return code if isinstance(code, int) else 0
    except ConfigError as exc:
        click.echo(f"sluice: {exc}", err=True)
        return 2
    except redis.ConnectionError as exc:
        from tasks.settings import get_settings

        url = get_settings().redis_url
        click.echo(f"sluice: cannot reach Redis at {safe_url(url)} ($SLUICE_REDIS_URL): "
                   f"{exc}", err=True)
        return 3
    except OperationalError as exc:  # kombu's: its message names no host
        from tasks.settings import get_settings

        settings = get_settings()
        where = "$SLUICE_BROKER_URL" if settings.broker_url else "$SLUICE_REDIS_URL"
        click.echo(f"sluice: cannot reach the broker at {safe_url(settings.queue_url)} "
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
    with collector_off():  # what it imports now is no garbage either (tasks/operator/entry.py)
        config = _config()
        wanted = config.kinds_to_run(source, list(kinds) or None)
        progress = _progress()
        from tasks.start import start_runs

        traces.setup("cli")
        runs = start_runs(progress, source, wanted, config_digest=config.digest, full=full)
    started = [run.as_json() for run in runs]
    if not as_json or not wait_:
        thin.print_started(started, as_json=as_json)
    if not wait_:
        return 0
    return _watch(progress, started, as_json=as_json)


def watched(started: list[dict[str, Any]], *, as_json: bool) -> int:
    """``sluice run --wait`` after a worker started its runs (``tasks.operator.thin``, which
    has printed them)."""
    atexit.register(gc.freeze)  # as main() does

    def watch() -> int:
        with collector_off():
            progress = _progress()
        return _watch(progress, started, as_json=as_json)

    return exit_code(watch)


def _watch(progress: Progress, started: list[dict[str, Any]], *, as_json: bool) -> int:
    """``sluice run --wait``, its runs started (``Run.as_json``) and printed: show their
    progress until they end; exit 0 only if all succeeded."""
    from tasks.settings import get_settings

    ended = wait(progress, [r["run_id"] for r in started], show=not as_json,
                 stall_seconds=get_settings().stall_seconds)
    for run in ended:
        click.echo(line(run) if as_json else summary_text(run))
    # partial (stale entities not deleted), failed, stalled, lost: not a plain success.
    return 0 if all(r.state == RunState.SUCCEEDED for r in ended) else 1


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
            config.kinds_to_run(source, [kind] if kind else None)
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
    from tasks.operator.exporter import serve

    # Said once the port listens: whoever reads this line (a supervisor, a test) may scrape.
    serve(_progress(), host=host, port=port,
          ready=lambda: click.echo(f"sluice metrics on http://{host}:{port}/metrics"))
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
    # At exit, after the other exit handlers (traces flushed): the objects of the imports are
    # no garbage, and the interpreter's last collections over them cost 0.12-0.16 s between the
    # command's end and the process's (frozen, the collector skips them).
    atexit.register(gc.freeze)
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
