"""``sluice``: run resyncs on the running workers and look at their runs.

    sluice check                          validate sluice.toml and show what it holds
    sluice run SOURCE [--kind K]... [--wait] [--json]
    sluice status [RUN_ID] [--json]
    sluice failed list [RUN_ID] | failed retry RUN_ID
    sluice entities [SOURCE [KIND]]       what the target holds
    sluice standalone [--once]            everything on this machine, with a demo API
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from integrations.errors import ConfigError
from integrations.pager import describe_seq
from tasks.config import SluiceConfig, load_config
from tasks.runs.progress import Progress, Run, RunState

REDIS_PATIENCE = 120.0  # seconds `sluice run --wait` waits for an unreachable Redis


def _safe_url(url: str) -> str:
    """The URL without its password."""
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(url))


def _config_path(arg: str | None) -> Path:
    return Path(arg or os.environ.get("SLUICE_CONFIG") or "sluice.toml")


def _progress() -> Progress:
    """The run records, on a client that rides out a Redis restart of about half a minute."""
    from tasks.worker.runtime import connect_redis
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
    return wanted or known


def bar(run: Run, width: int = 24) -> str:
    done = run.batches_done + run.batches_failed
    total = run.batches_enqueued
    filled = int(width * done / total) if total else 0
    more = "" if run.producer_done else "+"
    return (f"{run.source}/{run.kind:<12} [{'#' * filled}{'.' * (width - filled)}] "
            f"{done}/{total}{more} batches  {run.items_written} written  "
            f"{run.items_rejected} rejected  {run.state}")


def line(run: Run) -> str:
    return json.dumps(run.as_json())


def wait(progress: Progress, run_ids: list[str], *, show: bool, stall_seconds: float,
         poll: float = 0.2, out: Any = sys.stderr,
         workers: Callable[[], list[str]] = consumers) -> list[Run]:
    """Poll until every run has ended, drawing one progress line per run (redrawn in place on
    a terminal, every few seconds otherwise). Runs without progress are marked stalled.

    Says so when no worker consumes the queue (a few seconds after the start, while no page
    has come), and rides out a Redis that is unreachable for a while."""
    tty = out.isatty()
    started = time.monotonic()
    drawn, last_drawn, last_watch, asked, down_since = 0, 0.0, 0.0, 0.0, None
    while True:
        now = time.monotonic()
        try:
            if now - last_watch > 5:
                progress.mark_stalled(after=stall_seconds)
                last_watch = now
            runs = [_get(progress, r) for r in run_ids]
        except redis.ConnectionError as exc:
            if down_since is None:
                down_since = now
                out.write(f"sluice: Redis is unreachable ({exc}); waiting for it\n")
            elif now - down_since > REDIS_PATIENCE:
                raise
            time.sleep(1)
            continue
        if down_since is not None:
            out.write("sluice: Redis is back\n")
            down_since = None
        ended = all(r.state.ended for r in runs)
        quiet = not any(r.pages or r.batches_done for r in runs)
        if (not ended and quiet and now - started > NO_WORKER_AFTER and now - asked > 30):
            asked = now
            if not workers():
                from tasks.settings import get_settings

                url = _safe_url(get_settings().queue_url)
                out.write(f"sluice: no worker consumes the queue on {url}: the run waits until "
                          "one does. Start one with the same SLUICE_REDIS_URL and sluice.toml: "
                          "celery -A tasks worker\n")
                out.flush()
        if show and (tty or ended or now - last_drawn > 5):
            if tty and drawn:
                out.write(f"\x1b[{drawn}F")
            for run in runs:
                out.write(("\x1b[2K" if tty else "") + bar(run) + "\n")
            out.flush()
            drawn, last_drawn = len(runs), now
        if ended:
            return runs
        time.sleep(poll)


def cmd_check(args: argparse.Namespace) -> int:
    config = load_config(_config_path(args.config))
    print(f"{config.path}: ok")
    print(f"target: {config.target.type}")
    for name, source in config.sources.items():
        print(f"source {name} ({source.integration}): kinds {', '.join(source.kind_names())}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    config = load_config(_config_path(args.config))
    kinds = _kinds(config, args.source, args.kind)
    progress = _progress()
    from tasks.schedule import start_runs

    runs = start_runs(progress, args.source, kinds, config_digest=config.digest)
    for run in runs:
        if not args.json:
            note = f" ({run.reason})" if run.reason else ""
            print(f"{run.source}/{run.kind}: run {run.run_id} {run.state}{note}")
    if args.wait:
        from tasks.settings import get_settings

        runs = wait(progress, [r.run_id for r in runs], show=not args.json,
                    stall_seconds=get_settings().stall_seconds)
    if args.json:
        for run in runs:
            print(line(run))
    elif args.wait:
        for run in runs:
            print(summary_text(run))
    if not args.wait:
        return 0
    # partial (stale entities not deleted), failed, stalled, lost: not a plain success.
    return 0 if all(r.state == RunState.SUCCEEDED for r in runs) else 1


def summary_text(run: Run) -> str:
    text = (f"{run.source}/{run.kind} run {run.run_id}: {run.state}; "
            f"{run.items_written} written, {run.items_rejected} rejected, "
            f"{run.batches_failed} batches failed, {run.deleted} deleted")
    for key in ("reason", "deletion_skipped"):
        if getattr(run, key):
            text += f"\n  {key.replace('_', ' ')}: {getattr(run, key)}"
    return text


def cmd_status(args: argparse.Namespace) -> int:
    progress = _progress()
    if args.run_id:
        run = progress.get(args.run_id)
        if run is None:
            print(f"no run {args.run_id}", file=sys.stderr)
            return 1
        runs = [run]
    else:
        runs = progress.recent(args.limit)
    for run in runs:
        print(line(run) if args.json else summary_text(run))
    return 0


def _count(items: Any) -> str:
    """How many items a dead letter holds (its JSON text, when it could not be decoded)."""
    return str(len(items)) if isinstance(items, list) else "undecodable"


def cmd_failed(args: argparse.Namespace) -> int:
    progress = _progress()
    run_ids = [args.run_id] if args.run_id else [r.run_id for r in progress.recent(100)]
    if args.action == "retry":
        if not args.run_id:
            print("sluice failed retry needs a RUN_ID", file=sys.stderr)
            return 2
        from tasks import messages
        from tasks.app import app

        letters = progress.dead_letters(args.run_id)
        run = progress.get(args.run_id)
        run_seq = run.run_seq if run else None
        for seq, letter in sorted(letters.items()):
            messages.batch(app, args.run_id, letter["source"], letter["kind"], seq,
                           letter["items"], run_seq=run_seq, note=" (retry)")
        print(f"run {args.run_id}: {len(letters)} dead-lettered batch(es) enqueued again")
        return 0
    for run_id in run_ids:
        for seq, letter in sorted(progress.dead_letters(run_id).items()):
            print(f"{run_id} batch {seq} ({letter['source']}/{letter['kind']}, "
                  f"{_count(letter['items'])} items, {letter['attempts']} attempts): "
                  f"{letter['error']}")
        for rec in progress.rejected(run_id):
            print(f"{run_id} rejected {describe_seq(rec['seq'])} item {rec['index']}: "
                  f"{rec['reason']}: {rec['item']}")
    return 0


def cmd_entities(args: argparse.Namespace) -> int:
    from tasks.config import SqliteTarget
    from tasks.targets import open_target
    from tasks.targets.base import Readable

    config = None if args.db else load_config(_config_path(args.config))
    settings = SqliteTarget(path=args.db) if config is None else config.target
    if settings.type == "http":
        print("sluice: the http target cannot be read back", file=sys.stderr)
        return 2
    target = open_target(settings)
    assert isinstance(target, Readable)
    try:
        counts = target.counts()
        if args.source is None:
            for source, kind, count in counts:
                print(f"{source}/{kind}: {count}")
            return 0
        if config is not None:
            _kinds(config, args.source, [args.kind] if args.kind else None)
        elif not any(s == args.source and args.kind in (None, k) for s, k, _ in counts):
            held = ", ".join(f"{s}/{k}" for s, k, _ in counts) or "nothing"
            what = f"{args.source}/{args.kind}" if args.kind else args.source
            raise ConfigError(f"{args.db} holds no entities of {what} (it holds: {held})")
        for entity in target.read(args.source, args.kind, limit=args.limit):
            print(json.dumps(entity))
        return 0
    finally:
        target.close()


def cmd_metrics(args: argparse.Namespace) -> int:
    from tasks.runs.metrics import serve

    print(f"sluice metrics on http://{args.host}:{args.port}/metrics", flush=True)
    serve(_progress(), host=args.host, port=args.port)
    return 0


def cmd_standalone(args: argparse.Namespace) -> int:
    from tasks.operator.standalone import standalone

    return standalone(config=args.config, once=args.once, workers=args.workers,
                      flower_port=args.flower_port, logs=args.logs)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sluice", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    config_help = "sluice.toml (default: $SLUICE_CONFIG, else ./sluice.toml)"
    p.add_argument("--config", help=config_help)
    # Also after the subcommand (`sluice check --config x.toml`); SUPPRESS keeps a value given
    # before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help=config_help)
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kwargs)

    command("check", help="validate the configuration").set_defaults(func=cmd_check)
    run = command("run", help="enqueue resyncs of a source's kinds")
    run.add_argument("source")
    run.add_argument("--kind", action="append", help="a kind to resync (repeatable; default all)")
    run.add_argument("--wait", action="store_true", help="show progress; exit 0 only if all succeed")
    run.add_argument("--json", action="store_true", help="print one final JSON line per run")
    run.set_defaults(func=cmd_run)
    status = command("status", help="show runs")
    status.add_argument("run_id", nargs="?")
    status.add_argument("--json", action="store_true")
    status.add_argument("--limit", type=int, default=20)
    status.set_defaults(func=cmd_status)
    failed = command("failed", help="dead-lettered batches")
    failed.add_argument("action", choices=["list", "retry"])
    failed.add_argument("run_id", nargs="?")
    failed.set_defaults(func=cmd_failed)
    ents = command("entities", help="what the target holds (SQLite, PostgreSQL)")
    ents.add_argument("source", nargs="?", help="without it: a count per source and kind")
    ents.add_argument("kind", nargs="?")
    ents.add_argument("--limit", type=int, default=20)
    ents.add_argument("--db", help="a SQLite file to read instead of the config's target")
    ents.set_defaults(func=cmd_entities)
    metrics = command("metrics", help="serve Prometheus metrics of runs")
    metrics.add_argument("--host", default="127.0.0.1")
    metrics.add_argument("--port", type=int, default=9808)
    metrics.set_defaults(func=cmd_metrics)
    alone = command("standalone", help="Redis, workers, beat, Flower and (without "
                           "--config) a demo API on this machine; resync everything")
    alone.add_argument("--once", action="store_true",
                       help="exit after the first resync of every source, with its outcome")
    alone.add_argument("--workers", type=int, default=None,
                       help="tasks at once (default: the worker's, 8 threads)")
    alone.add_argument("--flower-port", type=int, default=5555)
    alone.add_argument("--logs", help="directory for the children's logs (default: a temp dir)")
    alone.set_defaults(func=cmd_standalone)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 2
    except redis.ConnectionError as exc:
        from tasks.settings import get_settings

        url = get_settings().redis_url
        print(f"sluice: cannot reach Redis at {_safe_url(url)} ($SLUICE_REDIS_URL): {exc}",
              file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `sluice status | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
