"""Fair queues under mixed load: a webhook event and a small run during a big backfill.

    python ops/bench/fairness.py                    # the 1,000,000-item backfill; FAIRNESS.md
    python ops/bench/fairness.py --items 200000     # a quicker look (FAIRNESS.md only with --out)

Everything local, on one Redis: two plain ``celery -A tasks worker`` nodes (the defaults:
threads, 8 at once each), one ``sluice serve``, a SQLite target (the default; PostgreSQL
with ``--dsn``).

- **The backfill**: ``--items`` GitHub-issue-like items (~0.7 KB each) from the fast bulk API
  (ops/bench/bulkapi.py: cursor paging, 1,000 a page, 5 ms a page), one run.
- **20 small resyncs**, sources ``small0``..``small19`` (200 items each, 50 a page, from the
  fake API, integrations/fakeapi.py, in a process of its own), running at once: each started
  again ``--small-every`` seconds after its last start (5 s; 0: as soon as it ends, which
  alone keeps the fleet busy), for as long as the backfill runs.
- **Webhooks**: signed GitHub ``issues`` events posted to ``sluice serve`` at ``--rate`` a
  second, one at a time; each event's latency is from its 202 to its row in the target (the
  table polled every 10 ms), as in ops/bench/webhooks.py.
- **The probe**: a 1,000-item source (50 a page, 20 pages), run on the idle fleet first (the
  median of three runs), then again and again during the load: its time from start to end
  against the idle one.

The machine's 2 cores are shared with the bench's own processes (the APIs, the sender, the
watchers) and with whatever else runs on it: the figures are noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shlex
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from celery import Celery

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from bench import Workers  # noqa: E402
from bulk import BulkApi  # noqa: E402
from webhooks import SECRET, delivery, pct  # noqa: E402

from tasks import messages  # noqa: E402
from tasks.operator.redisserver import RedisServer, free_port  # noqa: E402
from tasks.operator.supervisor import Child, celery  # noqa: E402
from tasks.runs.progress import Progress, Run  # noqa: E402
from tasks.worker import broker  # noqa: E402
from tests.support.serve import Serve  # noqa: E402

SMALL, SMALL_ITEMS, PROBE_ITEMS = 20, 200, 1_000
HOOKS, ENTITIES = "gh_issue", "bench_fair_entities"  # the webhook events' table, the rest's
SOURCE = """
[sources.{name}]
integration = "rest"
base_url = "{url}"
[sources.{name}.kinds.item]
path = "{path}"
items = "data"
paginator = {{ type = "cursor", cursor_path = "next_cursor", limit = {limit} }}
"""
CONFIG = """
[target]
{target}

[sources.gh]
integration = "github"
org = "acme"
token = "unused"
webhook_secret = "${{BENCH_HOOK_SECRET}}"
kinds = ["issue"]
"""


class Fleet:
    """The bench's side: start runs and wait for them, on the workers' Redis."""

    def __init__(self, redis_url: str) -> None:
        import redis

        self.progress = Progress(redis.Redis.from_url(redis_url))
        broker.install()  # its messages wake an idle worker, as `sluice run`'s do
        self.app = Celery("sluice-bench", broker=redis_url)
        self.app.conf.update(task_serializer="json", accept_content=["json"])

    def start(self, source: str) -> str:
        run = self.progress.create_run(source, "item")
        messages.resync(self.app, source, "item", run.run_id)
        return run.run_id

    def wait(self, run_id: str, *, timeout: float = 3600) -> Run:
        deadline = time.monotonic() + timeout
        while (run := self.progress.get(run_id)) is None or not run.state.ended:
            if time.monotonic() > deadline:
                raise RuntimeError(f"run {run_id} did not end: {run}")
            time.sleep(0.05)
        return run

    def timed(self, source: str) -> float:
        started = time.monotonic()
        run = self.wait(self.start(source))
        if run.state != "succeeded":
            letters = self.progress.dead_letters(run.run_id)
            why = next((d.error for d in letters.values()), run.reason)
            raise RuntimeError(f"{source}: run {run.run_id} {run.state}: {why}")
        return time.monotonic() - started


class Hooks:
    """Events posted at a steady rate; each one's 202 and first sight of its row."""

    def __init__(self, url: str, db: Path, rate: float, dsn: str) -> None:
        self.url, self.db, self.rate, self.dsn = url, db, rate, dsn
        self.answered: dict[int, float] = {}
        self.seen: dict[int, float] = {}
        self.stop = threading.Event()
        self.next = 0

    def send(self, until: threading.Event) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            at = time.monotonic()
            while not until.is_set():
                body, headers = delivery(self.next)
                answer = http.post("/webhooks/gh", content=body, headers=headers)
                if answer.status_code != 202:
                    raise RuntimeError(f"event {self.next}: {answer.status_code} {answer.text}")
                self.answered[self.next] = time.monotonic()
                self.next += 1
                at += 1 / self.rate
                time.sleep(max(0.0, at - time.monotonic()))

    def watch(self) -> None:
        """Until ``stop``: the first sight of each event's row (the table read every 10 ms, on
        one connection)."""
        if self.dsn:
            import psycopg

            conn: Any = psycopg.connect(self.dsn, autocommit=True)
            missing: type[Exception] = psycopg.errors.UndefinedTable
        else:
            conn, missing = sqlite3.connect(self.db, timeout=30), sqlite3.OperationalError
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                try:
                    rows = conn.execute(f"SELECT number FROM {HOOKS}").fetchall()
                except missing:  # no table yet
                    rows = []
                for (n,) in rows:
                    self.seen.setdefault(n, now)
                time.sleep(0.01)
        finally:
            conn.close()

    def during(self, body: threading.Event) -> list[float]:
        """Send until ``body`` is set, then wait for every row; the latencies (s)."""
        first = self.next
        watcher = threading.Thread(target=self.watch, daemon=True)
        watcher.start()
        self.send(body)
        deadline = time.monotonic() + 120
        while any(n not in self.seen for n in range(first, self.next)):
            if time.monotonic() > deadline:
                raise RuntimeError("webhook events never landed")
            time.sleep(0.05)
        self.stop.set()
        watcher.join()
        self.stop.clear()
        return [self.seen[n] - self.answered[n] for n in range(first, self.next)]


def looping(fleet: Fleet, source: str, every: float, stop: threading.Event,
            done: list[float], errors: list[Exception]) -> None:
    """Run ``source`` again and again until ``stop``; a failure stops the whole bench."""
    try:
        while not stop.is_set():
            started = time.monotonic()
            done.append(fleet.timed(source))
            stop.wait(max(0.0, started + every - time.monotonic()))
    except Exception as exc:
        errors.append(exc)
        stop.set()


@contextlib.contextmanager
def fake_api(items: dict[str, int]) -> Iterator[str]:
    """integrations/fakeapi.py in a process of its own (not this busy one); its URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "integrations.fakeapi", "--port", str(port), "--items",
         ",".join(f"{k}={n}" for k, n in items.items())], stdout=subprocess.PIPE, text=True,
        cwd=HERE.parents[1])
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("fake API"), line
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def bulk_api(args: argparse.Namespace) -> Iterator[BulkApi]:
    api = BulkApi(args)
    try:
        yield api
    finally:
        api.stop()


def drop(dsn: str) -> None:
    if dsn:
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:
            for table in (HOOKS, ENTITIES, f"{ENTITIES}_state"):
                conn.execute(f"DROP TABLE IF EXISTS {table}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=10.0, help="webhook events a second")
    parser.add_argument("--small", type=int, default=SMALL, help="small sources")
    parser.add_argument("--small-every", type=float, default=5.0,
                        help="seconds from a small run's start to its next (0: back to back)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--urgent-node", action="store_true",
                        help="a third node that takes only webhook batches and run ends "
                        "(-Q sluice.urgent)")
    parser.add_argument("--dsn", default="", help="PostgreSQL as the target (not SQLite); "
                        f"its tables {HOOKS} and {ENTITIES} are dropped first and after")
    a = parser.parse_args()
    out = a.out or (HERE / "FAIRNESS.md" if a.items == 1_000_000 else None)
    command = shlex.join(["python", "ops/bench/fairness.py", *sys.argv[1:]])
    os.environ["BENCH_HOOK_SECRET"] = SECRET
    api_args = argparse.Namespace(items=a.items, latency=0.02, cursor_latency=0.005,
                                  page_size=500, cursor_page_size=1000)
    sizes = {**{f"small{i}": SMALL_ITEMS for i in range(a.small)}, "probe": PROBE_ITEMS}
    with tempfile.TemporaryDirectory(prefix="sluice-fair-") as tmp, RedisServer() as server, \
            fake_api(sizes) as fake, bulk_api(api_args) as bulk:
        db = Path(tmp) / "fair.db"
        config = Path(tmp) / "sluice.toml"
        target = (f'type = "postgres"\ndsn = "{a.dsn}"\ntable = "{ENTITIES}"' if a.dsn
                  else f'path = "{db}"')
        drop(a.dsn)
        text = CONFIG.format(target=target) + SOURCE.format(
            name="backfill", url=bulk.url, path="/cursor/issues", limit=1000)
        for name in sizes:
            text += SOURCE.format(name=name, url=fake, path=f"/cursor/{name}", limit=50)
        config.write_text(text)
        fleet = Fleet(server.url)
        workers = Workers(config, server.url, 2, Path(tmp) / "worker.log", threads=0)
        if a.urgent_node:
            workers.procs.append(Child("urgent", celery(
                "worker", "-Q", messages.URGENT, "-n", "urgent@%h", "--loglevel", "WARNING"),
                log=Path(tmp) / "urgent.log", cwd=HERE.parents[1],
                env={**os.environ, "SLUICE_CONFIG": str(config),
                     "SLUICE_REDIS_URL": server.url}).start())
        try:
            with Serve(config, server.url, log=Path(tmp) / "serve.log",
                       env={"BENCH_HOOK_SECRET": SECRET}) as serve:
                hooks = Hooks(serve.url, db, a.rate, a.dsn)
                # The idle fleet: the probe, and webhooks alone (after one that makes the
                # table).
                warm = threading.Event()
                threading.Timer(1, warm.set).start()
                hooks.during(warm)
                idle = statistics.median(fleet.timed("probe") for _ in range(3))
                quiet = threading.Event()
                threading.Timer(10, quiet.set).start()
                idle_hooks = hooks.during(quiet)
                print(f"idle: probe {idle:.2f} s, webhook p99 {pct(idle_hooks, 99):.3f} s")
                # The load: the backfill, 20 small resyncs in a loop, webhooks, probes.
                backfill = fleet.start("backfill")
                over = threading.Event()
                small: list[float] = []
                errors: list[Exception] = []
                loops = [threading.Thread(target=looping, args=(fleet, f"small{i}", a.small_every,
                                                                 over, small, errors),
                                          daemon=True) for i in range(a.small)]
                for t in loops:
                    t.start()
                probes: list[float] = []

                def probing() -> None:
                    try:
                        while (run := fleet.progress.get(backfill)) is None or \
                                not (run.state.ended or over.is_set()):
                            probes.append(fleet.timed("probe"))
                            print(f"probe {probes[-1]:.2f} s; backfill "
                                  f"{run.items_written if run else 0:,} items")
                            time.sleep(1)
                    except Exception as exc:
                        errors.append(exc)
                    over.set()

                prober = threading.Thread(target=probing, daemon=True)
                prober.start()
                loaded_hooks = hooks.during(over)
                prober.join()
                for t in loops:
                    t.join()
                if errors:
                    raise errors[0]
                run = fleet.wait(backfill)
                took = (run.ended_at or time.time()) - run.started_at
                print(f"backfill: {run.state}, {run.items_written:,} items, {took:.1f} s")
                if run.state != "succeeded" or run.items_written != a.items:
                    raise RuntimeError(f"backfill: {run}")
        finally:
            workers.stop()
            drop(a.dsn)
    ratio = [p / idle for p in probes]
    pace = (f"{a.small_every:g} s after its last start" if a.small_every
            else "as soon as it ends")
    where = "PostgreSQL" if a.dsn else "SQLite"
    extra = " and one `-Q sluice.urgent`" if a.urgent_node else ""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())

    def ms(values: list[float], p: float) -> str:
        return f"{pct(values, p) * 1000:.0f}"

    report = f"""# Fair queues: a webhook and a small run during a backfill

`{command}` — measured {when} on {os.cpu_count()} cores ({platform.machine()}, Python \
{platform.python_version()}), shared with other work (noisy figures).

Two plain `celery -A tasks worker` nodes{extra}, one `sluice serve`, {where}. Load: a backfill of
{a.items:,} items (bulk API, 1,000 a page) in {took:.0f} s ({a.items / took:,.0f} items/s);
{a.small} small resyncs of {SMALL_ITEMS} items at once, each started again {pace}
({len(small)} runs done, median {statistics.median(small or [0]):.2f} s); webhook events
at {a.rate:g}/s.

| webhook event, 202 → row | events | p50 (ms) | p99 (ms) | max (ms) |
|---|---:|---:|---:|---:|
| idle fleet | {len(idle_hooks)} | {ms(idle_hooks, 50)} | {ms(idle_hooks, 99)} | \
{max(idle_hooks) * 1000:.0f} |
| during the load | {len(loaded_hooks)} | {ms(loaded_hooks, 50)} | {ms(loaded_hooks, 99)} | \
{max(loaded_hooks) * 1000:.0f} |

| the {PROBE_ITEMS:,}-item run | runs | seconds: median | p90 | max | × idle: median | p90 | max |
|---|---:|---:|---:|---:|---:|---:|---:|
| idle fleet | 3 | {idle:.2f} | | | 1.0 | | |
| during the load | {len(probes)} | {statistics.median(probes):.2f} | {pct(probes, 90):.2f} | \
{max(probes):.2f} | {statistics.median(ratio):.2f} | {pct(ratio, 90):.2f} | {max(ratio):.2f} |

The bounds (issue 20): webhook p99 ≤ 1,000 ms; the {PROBE_ITEMS:,}-item run within 2× idle.
"""
    print(report)
    if out is not None:
        out.write_text(report)


if __name__ == "__main__":
    main()
