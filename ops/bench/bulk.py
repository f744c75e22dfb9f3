"""Sluice's bulk benchmark: a fast API (its pages cost its server next to nothing), where what
decides is each pipeline's own work per item (issue 19).

    python ops/bench/bulk.py                  # 200,000 items; tables to BULK.md
    python ops/bench/bulk.py --items 20000    # a quick check (BULK.md is not written)

In one run, on the same machine and services:

- the offset-paged API (GitHub-issue-like items, ~0.75 KB each, 500 a page, 20 ms a page, the
  total in every page) into PostgreSQL: Sluice into ``entities``, Sluice into a typed table
  (an 8-property mapping), the ideal one-process pipeline, the seeds' loop, and dlt; and into
  SQLite: Sluice and an ideal SQLite pipeline (``ops/bench/bulkpipes.py`` holds them all);
- the cursor-paged API (1,000 a page, 5 ms a page) into SQLite and PostgreSQL: Sluice and a
  plain loop (fetch a page, write it, follow the cursor);
- the reference Link case (RESULTS.md: 20,000 items, 100 a page, 100 ms a page, 50 ms a write
  to the HTTP sink): Sluice against the seeds' loop, as a user meets it.

Sluice runs as a user starts it: one plain ``celery -A tasks worker`` (started before the clock),
then ``sluice run bulk --wait`` in a directory whose sluice.toml sets the source (and the
paginator and items path it needs) and the target, nothing else. Each Sluice run has its own
Redis, so INFO's counters are that run's. py-spy samples the worker process during the run
(``--no-profile``: not). Every PostgreSQL table and schema the benchmark makes starts with
``bench_bulk_`` and is dropped after its row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import bench  # noqa: E402
from bulkmeter import (  # noqa: E402
    APP_NAME,
    PostgresBackends,
    Profile,
    RedisCounters,
    Spy,
    Watch,
    cpu_seconds,
    node_pids,
    peak_rss_mb,
)

from tasks.operator.redisserver import RedisServer, free_port  # noqa: E402
from tasks.runs import keys  # noqa: E402
from tasks.runs.progress import Progress  # noqa: E402
from tasks.worker import siblings  # noqa: E402

PREFIX = "bench_bulk_"
# The typed table: eight properties, as a mapping of GitHub issues usually has. Plain paths
# are read in Python; the labels' names run as jq.
MAPPING = """
[sources.bulk.kinds.issue.mapping]
table = "{table}"

[sources.bulk.kinds.issue.mapping.properties]
number = {{ jq = ".number", type = "integer" }}
title = ".title"
state = ".state"
author = ".user.login"
labels = {{ jq = "[.labels[].name]", type = "json" }}
milestone = ".milestone.title"
comments = {{ jq = ".comments", type = "integer" }}
updated = ".updated_at"
"""
OFFSET_KIND = """
[sources.bulk.kinds.issue]
path = "/offset/issues"
items = "items"
paginator = {{ type = "offset", offset_param = "offset", limit_param = "limit", \
limit = {limit}, total_path = "total" }}
"""
CURSOR_KIND = """
[sources.bulk.kinds.issue]
path = "/cursor/issues"
items = "data"
paginator = {{ type = "cursor", cursor_path = "next_cursor", cursor_param = "cursor", \
limit_param = "limit", limit = {limit} }}
"""


@dataclass
class Measurement:
    """One pipeline's measured run."""

    case: str  # which API and target
    name: str
    seconds: float
    items: int
    first: float | None = None  # seconds to the first item in the target
    exit: float | None = None  # Sluice: seconds to the command's exit
    cpu: dict[str, float] = field(default_factory=dict)  # process -> CPU seconds
    rss: dict[str, float] = field(default_factory=dict)  # process -> peak RSS (MB)
    requests: int = 0
    batches: int = 0
    redis: dict[str, Any] = field(default_factory=dict)
    profile: Profile | None = None
    page_bytes: float | None = None  # the API's mean answer, headers included
    note: str = ""

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds else 0.0


class BulkApi:
    """ops/bench/bulkapi.py in a process of its own."""

    def __init__(self, a: argparse.Namespace) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "bulkapi.py"), "--port", str(self.port), "--items",
             str(a.items), "--offset-latency", str(a.latency), "--cursor-latency",
             str(a.cursor_latency), "--offset-limit", str(a.page_size), "--cursor-limit",
             str(a.cursor_page_size)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("ready"), line
        self.url = f"http://127.0.0.1:{self.port}"
        self.page_bytes = 0.0

    def requests(self) -> int:
        """GETs answered since the last call (``page_bytes``: their mean size)."""
        got = httpx.get(f"{self.url}/_stats").json()
        httpx.delete(f"{self.url}/_stats")
        count = sum(got["requests"].values())
        self.page_bytes = got["bytes"] / count if count else 0.0
        return count

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# --- the target -----------------------------------------------------------------------------

def pg(a: argparse.Namespace) -> Any:
    import psycopg

    return psycopg.connect(a.dsn, autocommit=True, application_name=f"{APP_NAME}-observer")


def drop_all(a: argparse.Namespace) -> None:
    """Every table and schema this benchmark made (their names start with ``bench_bulk_``)."""
    if not a.dsn:
        return
    with pg(a) as conn:
        for (schema,) in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE "
                                      "'bench\\_bulk\\_%'").fetchall():
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        for (table,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = "
                                     "current_schema() AND tablename LIKE 'bench\\_bulk\\_%'"
                                     ).fetchall():
            conn.execute(f'DROP TABLE IF EXISTS "{table}" CASCADE')


def count_rows(a: argparse.Namespace, where: str) -> int:
    """Rows in a PostgreSQL table (``pg:TABLE``) or a SQLite file's table (``FILE:TABLE``)."""
    kind, _, rest = where.partition(":")
    if kind == "pg":
        with pg(a) as conn:
            return int(conn.execute(f'SELECT count(*) FROM {rest}').fetchone()[0])
    path, _, table = rest.rpartition(":")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return int(conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])


def first_row(a: argparse.Namespace, where: str) -> Watch:
    """A watch that fires when the table holds a row."""
    kind, _, rest = where.partition(":")
    if kind == "pg":
        conn = pg(a)
        return Watch(lambda: conn.execute(f"SELECT 1 FROM {rest} LIMIT 1").fetchone()
                     is not None)
    path, _, table = rest.rpartition(":")

    def ready() -> bool:
        if not Path(path).exists():
            return False
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.05) as conn:
            return conn.execute(f'SELECT 1 FROM "{table}" LIMIT 1').fetchone() is not None

    return Watch(ready)


# --- the other pipelines, each a child process ----------------------------------------------

def child(a: argparse.Namespace, api: BulkApi, case: str, name: str, pipeline: str,
          where: str, **options: str) -> Measurement:
    tmp = tempfile.mkdtemp(prefix="bench-bulk-")  # "{tmp}" in where and options
    where = where.replace("{tmp}", tmp)
    argv = [sys.executable, str(HERE / "bulkpipes.py"), pipeline, "--url", api.url]
    for key, value in options.items():
        argv += [f"--{key}", value.replace("{tmp}", tmp)]
    api.requests()
    backends = PostgresBackends(a.dsn if where.startswith("pg") else None)
    backends.start()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    out, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"{pipeline} failed: {err[-3000:]}")
    got = json.loads(out.splitlines()[-1])
    pg_cpu = backends.stop()
    written = count_rows(a, where)
    shutil.rmtree(tmp, ignore_errors=True)
    assert written == got["items"] == a.items, (name, written, got["items"])
    return Measurement(case, name, got["seconds"], got["items"], first=got["first"],
               cpu={"process": got["cpu"], "postgres": pg_cpu}, rss={"process": got["rss"]},
               requests=api.requests())


# --- Sluice, as a user starts it ------------------------------------------------------------

def node_processes(workers: bench.Workers, client: redis.Redis) -> list[int]:
    """The plain worker's processes, once each is up: one per core unless
    SLUICE_WORKER_PROCESSES says otherwise (tasks/worker/siblings.py). Each is a node with a
    heartbeat of its own."""
    (pid,) = workers.workers()
    want = siblings.count(int(os.environ.get("SLUICE_WORKER_PROCESSES") or 0))
    deadline = time.time() + 60
    while client.zcard(keys.NODES) < want:
        if time.time() > deadline:
            raise RuntimeError(f"{want} worker processes were not up in 60 s")
        time.sleep(0.2)
    time.sleep(2.0)  # the last one's consumer ready, as bench.Workers waits for the first
    return node_pids(pid)


def sluice(a: argparse.Namespace, url: str, case: str, name: str, *, kind: str, target: str,
           where: str, source: str = "", sink: bench.Api | None = None,
           requests: Callable[[], int] | None = None, gil: bool = False) -> Measurement:
    """One ``sluice run bulk --wait`` against one plain worker. ``target``: the sluice.toml's
    [target] body ("" for none: SQLite's default); ``where``: the table that fills up
    (``pg:TABLE``, ``sqlite:FILE:TABLE``, ``{tmp}`` standing for the run's directory; or
    ``http``: ``sink``, the reference fake API's sink, says when the first item came);
    ``source``: more keys of the source; ``gil``: py-spy samples only the GIL's holder."""
    with tempfile.TemporaryDirectory(prefix="sluice-bulk-") as tmp_dir, \
            RedisServer() as server:
        tmp = Path(tmp_dir)
        where = where.replace("{tmp}", tmp_dir)
        config = tmp / "sluice.toml"
        config.write_text((f"[target]\n{target}\n\n" if target else "")
                          + f'[sources.bulk]\nintegration = "rest"\nbase_url = "{url}"\n'
                          + source + kind)
        workers = bench.Workers(config, server.url, 1, tmp / "worker.log", threads=0)
        client = redis.Redis.from_url(server.url)
        try:
            pids = node_processes(workers, client)
            spy = None if a.no_profile else Spy(pids, tmp / "worker.raw", gil=gil or a.gil)
            if sink is not None:
                sink.reset()
            if requests is not None:
                requests()
            counters = RedisCounters(client)
            backends = PostgresBackends(a.dsn if where.startswith("pg") else None)
            backends.start()
            counters.start()
            cpu0 = sum(map(cpu_seconds, pids))
            env = {**os.environ, "SLUICE_REDIS_URL": server.url}
            env.pop("SLUICE_CONFIG", None)  # ./sluice.toml, as a user has it
            with open(tmp / "cli.log", "wb") as log:
                start = time.time()
                proc = subprocess.Popen([str(Path(sys.executable).parent / "sluice"), "run",
                                         "bulk", "--wait"], cwd=tmp, env=env, stdout=log,
                                        stderr=subprocess.STDOUT)
                watch = first_row(a, where) if sink is None else None
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                exited = time.time()
            first = watch.stop() if watch else sink.stats()["first_write"] if sink else None
            cpu = {"worker": sum(map(cpu_seconds, pids)) - cpu0,
                   "`sluice run`": usage.ru_utime + usage.ru_stime}
            counted = counters.stop()
            cpu["redis"] = counted["cpu"]
            cpu["postgres"] = backends.stop()
            profile = spy.stop() if spy else None
            if spy and a.profiles:
                Path(a.profiles).mkdir(parents=True, exist_ok=True)
                slug = "".join(c if c.isalnum() else "-" for c in f"{case} {name}".lower())
                for i, raw in enumerate(spy.outs):
                    shutil.copy(raw, Path(a.profiles) / f"{slug}.{i}.raw")
            (run,) = Progress(client).recent(1)
            rss = {"worker": max(map(peak_rss_mb, pids)), "`sluice run`": usage.ru_maxrss / 1024,
                   "redis": counted["peak_mb"]}
        finally:
            workers.stop()
        if proc.returncode or run.state != "succeeded":
            raise RuntimeError(f"{name}: {run.state} {run.reason} "
                               f"{(tmp / 'cli.log').read_text()[-2000:]}")
        written = run.items_written if sink else count_rows(a, where)
    assert run.ended_at is not None
    asked = requests() if requests is not None else \
        sum(sink.stats()["get_statuses"].values()) if sink is not None else 0
    page_bytes = getattr(getattr(requests, "__self__", None), "page_bytes", None)
    return Measurement(case, name, run.ended_at - start, run.items_written, requests=asked,
               first=(first - start) if first else None, exit=exited - start, cpu=cpu, rss=rss,
               batches=run.batches_done, redis=counted, profile=profile, page_bytes=page_bytes,
               note="" if written == run.items_written else f"{written} rows")


# --- the scenarios --------------------------------------------------------------------------

Step = tuple[str, Callable[[str], Measurement]]  # a pipeline's name, and what measures it


def measure(a: argparse.Namespace, steps: list[Step]) -> list[Measurement]:
    """Run the steps ``--only`` leaves, printing each row as it comes; the tables of each
    are dropped after it."""
    rows: list[Measurement] = []
    for name, run in steps:
        if a.only and not any(o.lower() in name.lower() for o in a.only.split(",")):
            continue
        try:
            rows.append(run(name))
        finally:
            drop_all(a)
        print(table(rows[-1:], header=len(rows) == 1), flush=True)
    return rows


def offset_case(a: argparse.Namespace, api: BulkApi) -> list[Measurement]:
    case = f"offset, {a.page_size} a page, {a.latency * 1000:.0f} ms"
    kind = OFFSET_KIND.format(limit=a.page_size)
    pg_target = f'type = "postgres"\ndsn = "{a.dsn}"\ntable = "{PREFIX}entities"'
    steps: list[Step] = []
    if a.dsn:
        steps += [
            ("ideal, PostgreSQL (asyncio, 8 pages at a time, COPY upsert)", lambda name: child(
                a, api, case, name, "ideal-pg", f"pg:{PREFIX}ideal", dsn=a.dsn,
                table=f"{PREFIX}ideal")),
            ("Sluice → PostgreSQL `entities`", lambda name: sluice(
                a, api.url, case, name, kind=kind, target=pg_target,
                where=f"pg:{PREFIX}entities", requests=api.requests)),
            ("Sluice → PostgreSQL `entities`, again, py-spy --gil", lambda name: sluice(
                a, api.url, case, name, kind=kind, target=pg_target,
                where=f"pg:{PREFIX}entities", requests=api.requests, gil=True)),
            ("Sluice → PostgreSQL typed table (8 properties)", lambda name: sluice(
                a, api.url, case, name, kind=kind + MAPPING.format(table=f"{PREFIX}issues"),
                target=pg_target, where=f"pg:{PREFIX}issues", requests=api.requests)),
            ("seeds' loop, PostgreSQL (fetch, COPY upsert, fetch)", lambda name: child(
                a, api, case, name, "seeds-pg", f"pg:{PREFIX}seeds", dsn=a.dsn,
                table=f"{PREFIX}seeds")),
        ]
        if not a.no_dlt:
            steps.append(("dlt (rest_api, parallelized, merge) → PostgreSQL", lambda name: child(
                a, api, case, name, "dlt", f"pg:{PREFIX}dlt.issues", dsn=a.dsn,
                table=f"{PREFIX}dlt", db="{tmp}/dlt")))
    steps += [
        ("ideal, SQLite (8 pages at a time, executemany upsert, WAL)", lambda name: child(
            a, api, case, name, "ideal-sqlite", "sqlite:{tmp}/ideal.db:entities",
            db="{tmp}/ideal.db")),
        ("Sluice → SQLite (the default target)", lambda name: sluice(
            a, api.url, case, name, kind=kind, target="",
            where="sqlite:{tmp}/sluice.db:entities", requests=api.requests)),
    ]
    return measure(a, steps)


def cursor_case(a: argparse.Namespace, api: BulkApi) -> list[Measurement]:
    case = f"cursor, {a.cursor_page_size} a page, {a.cursor_latency * 1000:.0f} ms"
    kind = CURSOR_KIND.format(limit=a.cursor_page_size)
    steps: list[Step] = [
        ("plain loop, SQLite (fetch, executemany, next)", lambda name: child(
            a, api, case, name, "loop-sqlite", "sqlite:{tmp}/loop.db:entities",
            db="{tmp}/loop.db")),
        ("Sluice → SQLite", lambda name: sluice(
            a, api.url, case, name, kind=kind, target="",
            where="sqlite:{tmp}/sluice.db:entities", requests=api.requests)),
    ]
    if a.dsn:
        steps += [
            ("plain loop, PostgreSQL (fetch, COPY upsert, next)", lambda name: child(
                a, api, case, name, "loop-pg", f"pg:{PREFIX}loop", dsn=a.dsn,
                table=f"{PREFIX}loop")),
            ("Sluice → PostgreSQL `entities`", lambda name: sluice(
                a, api.url, case, name, kind=kind,
                target=f'type = "postgres"\ndsn = "{a.dsn}"\ntable = "{PREFIX}entities"',
                where=f"pg:{PREFIX}entities", requests=api.requests)),
        ]
    return measure(a, steps)


def reference_case(a: argparse.Namespace) -> list[Measurement]:
    """Issue 19's item 5: the reference Link case through the CLI a user types."""
    ref = argparse.Namespace(latency=0.1, write_latency=0.05, page_size=100, concurrency=16)
    api = bench.Api(ref, items=a.ref_items)
    case = f"reference Link, {a.ref_items:,} items, 100 a page, 100 ms, 50 ms a write"

    def seeds(name: str) -> Measurement:
        got = bench.baseline("ocean", api, "link", ref, 0.0, "reference")
        return Measurement(case, name, got.seconds, got.items, first=got.first_item,
                   rss={"process": got.peak_rss_mb or 0}, requests=got.items // 100)

    try:
        return measure(a, [
            ("seeds' loop (fetch, write, fetch)", seeds),
            ("Sluice, `max_concurrency = 16`", lambda name: sluice(
                a, api.url, case, name,
                kind='\n[sources.bulk.kinds.issue]\npath = "/link/bench"\n'
                     'paginator = { type = "link", limit_param = "per_page", limit = 100 }\n',
                target=f'type = "http"\nurl = "{api.url}/sink/{{kind}}"', where="http",
                source="max_concurrency = 16\n", sink=api)),
        ])
    finally:
        api.stop()


# --- reporting ------------------------------------------------------------------------------

def fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def table(rows: list[Measurement], *, header: bool = True, ideal: dict[str, float] | None = None
          ) -> str:
    out = ["| case | pipeline | seconds | items/s | × ideal | first item (s) | command exit (s) "
           "| requests | CPU s / 1,000 items | peak RSS (MB) |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"] if header else []
    for r in rows:
        base = (ideal or {}).get(r.case)
        per_k = sum(r.cpu.values()) / r.items * 1000 if r.items and r.cpu else None
        rss = ", ".join(f"{k} {v:.0f}" for k, v in r.rss.items()) or "–"
        out.append(f"| {r.case} | {r.name}{' (' + r.note + ')' if r.note else ''} | "
                   f"{r.seconds:.2f} | {r.rate:,.0f} | {fmt(r.seconds / base if base else None)}"
                   f" | {fmt(r.first)} | {fmt(r.exit)} | {r.requests or '–'} | {fmt(per_k, 3)}"
                   f" | {rss} |")
    return "\n".join(out)


SIDE_ORDER = ("producer", "consumer", "worker", "other")
SIDE_LABEL = {"producer": "producer", "consumer": "Celery's consumer (main thread)",
              "worker": "worker (batches)", "other": "other threads"}


def stages(rows: list[Measurement]) -> str:
    """CPU seconds per 1,000 items by stage: each of the worker process's threads' CPU (from
    /proc) split by the share of that thread's py-spy samples in each stage; the other
    processes as measured."""
    rows = [r for r in rows if r.profile is not None]
    if not rows:
        return "(not profiled)"
    seconds = [r.profile.seconds() for r in rows if r.profile]
    keys = sorted({k for s in seconds for k in s},
                  key=lambda k: (SIDE_ORDER.index(k[0]), -sum(s.get(k, 0.0) for s in seconds)))
    out = ["| stage | " + " | ".join(f"{r.name} ({r.case.split(',')[0]})" for r in rows) + " |",
           "|---|" + "---:|" * len(rows)]

    def per_k(r: Measurement, cpu: float) -> str:
        return f"{cpu / r.items * 1000:.4f}"

    for side in SIDE_ORDER:
        mine = [k for k in keys if k[0] == side]
        for key in mine:
            cells = [per_k(r, s.get(key, 0.0)) for r, s in zip(rows, seconds, strict=True)]
            out.append(f"| worker process: {SIDE_LABEL[side]}, {key[1]} | "
                       + " | ".join(cells) + " |")
        if mine:
            cells = [per_k(r, sum(v for k, v in s.items() if k[0] == side))
                     for r, s in zip(rows, seconds, strict=True)]
            out.append(f"| *worker process: {SIDE_LABEL[side]}, all* | " + " | ".join(cells)
                       + " |")
    cells = [per_k(r, r.cpu["worker"] - sum(s.values())) for r, s in zip(rows, seconds,
                                                                          strict=True)]
    out.append("| worker process: threads gone before the end | " + " | ".join(cells) + " |")
    for process in ("worker", "`sluice run`", "redis", "postgres"):
        name = "worker process, all" if process == "worker" else f"{process} process"
        out.append(f"| **{name}** | " + " | ".join(per_k(r, r.cpu.get(process, 0.0))
                                                   for r in rows) + " |")
    out.append("| **all processes** | " + " | ".join(per_k(r, sum(r.cpu.values()))
                                                    for r in rows) + " |")
    return "\n".join(out)


def redis_table(rows: list[Measurement]) -> str:
    out = ["| case | pipeline | batches | API bytes / page | commands / batch | bytes in / batch "
           "| bytes out / batch | Redis CPU ms / batch | commands / batch, by name |",
           "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if not r.redis or not r.batches:
            continue
        n = r.batches
        commands = r.redis["commands"]
        named = ", ".join(f"{k.upper()} {v / n:.1f}" for k, v in
                          sorted(commands.items(), key=lambda kv: -kv[1]) if v / n >= 0.05)
        out.append(f"| {r.case} | {r.name} | {n} | {fmt(r.page_bytes, 0)} | "
                   f"{sum(commands.values()) / n:.1f} | "
                   f"{r.redis['in'] / n:,.0f} | {r.redis['out'] / n:,.0f} | "
                   f"{r.redis['cpu'] / n * 1000:.2f} | {named} |")
    return "\n".join(out)


def top_frames(row: Measurement, n: int = 15) -> str:
    assert row.profile is not None
    parts = []
    for side, title in (("producer", "producer (the resync task's thread, the event loop, "
                                     "its executor)"),
                        ("worker", "worker (ingest_batch threads)"),
                        ("consumer", "Celery's consumer (the main thread)")):
        frames = row.profile.top(side, n)
        parts.append(f"#### {title}: {sum(1 for _ in frames)} frames by self time\n\n"
                     "| share of this side's samples | frame |\n|---:|---|\n" + "\n".join(
                         f"| {share:.1%} | `{frame}` |" for frame, share in frames))
    sides: dict[str, float] = {}
    for (side, _), cpu in row.profile.seconds().items():
        sides[side] = sides.get(side, 0.0) + cpu
    total = sum(sides.values()) or 1
    split = ", ".join(f"{SIDE_LABEL[k]} {v / total:.0%}"
                      for k, v in sorted(sides.items(), key=lambda kv: -kv[1]))
    return (f"The worker process's CPU by side: {split} "
            f"({sum(row.profile.stacks.values()):,} samples).\n\n" + "\n\n".join(parts))


def verdicts(rows: list[Measurement]) -> str:
    """Issue 19's targets, on one plain worker."""
    def find(case: str, start: str) -> Measurement | None:
        return next((r for r in rows if r.case.startswith(case) and r.name.startswith(start)),
                    None)

    def met(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    lines = []

    def ratio(label: str, a: Measurement | None, b: Measurement | None, limit: float,
              extra: str = "") -> None:
        if a is None or b is None:
            return
        x = a.seconds / b.seconds
        lines.append(f"- {label}: {a.seconds:.2f} s vs {b.seconds:.2f} s = {x:.2f}×: "
                     f"{met(x <= limit)}{extra}")

    entities = find("offset", "Sluice → PostgreSQL `entities`")
    ideal = find("offset", "ideal, PostgreSQL")
    if entities and ideal:
        x = entities.seconds / ideal.seconds
        ratio("PostgreSQL `entities` within 1.5× the ideal pipeline", entities, ideal, 1.5,
              f" (stretch 1.2×: {met(x <= 1.2).strip('*')})")
    ratio("the typed mapping within 1.15× of the `entities` run",
          find("offset", "Sluice → PostgreSQL typed"), entities, 1.15)
    ratio("SQLite within 1.5× the ideal SQLite pipeline", find("offset", "Sluice → SQLite"),
          find("offset", "ideal, SQLite"), 1.5)
    for other in ("dlt", "seeds' loop"):
        b = find("offset", other)
        if entities and b:
            x = b.seconds / entities.seconds
            lines.append(f"- at least 2× faster than {other}: {entities.seconds:.2f} s vs "
                         f"{b.seconds:.2f} s = {x:.2f}×: {met(x >= 2)}")
    for target in ("SQLite", "PostgreSQL"):
        ratio(f"cursor-paged into {target} within 1.25× a plain loop",
              find("cursor", f"Sluice → {target}"), find("cursor", f"plain loop, {target}"),
              1.25)
    ref, seeds = find("reference", "Sluice"), find("reference", "seeds")
    if ref and seeds:
        x = seeds.seconds / ref.seconds
        first = ref.first if ref.first is not None else float("inf")
        lines.append(f"- reference Link case through `sluice run --wait`, at least 10× the seeds'"
                     f" loop: {ref.seconds:.2f} s to the run's end ({fmt(ref.exit)} s to the "
                     f"command's exit) vs {seeds.seconds:.2f} s = {x:.1f}×: {met(x >= 10)}")
        lines.append(f"- its first item at most 0.3 s after the command: {first:.2f} s: "
                     f"{met(first <= 0.3)}")
    return "\n".join(lines)


def report(a: argparse.Namespace, rows: list[Measurement], header: str) -> str:
    ideal = {r.case: r.seconds for r in rows if r.name.startswith("ideal, PostgreSQL")}
    for r in rows:  # SQLite rows against the ideal SQLite pipeline; loops against the loop
        if r.name.startswith(("ideal, SQLite", "plain loop, SQLite")):
            ideal[f"{r.case}/SQLite"] = r.seconds
        if r.name.startswith("plain loop, PostgreSQL"):
            ideal[r.case] = r.seconds
        if r.name.startswith("seeds' loop") and r.case.startswith("reference"):
            ideal[r.case] = r.seconds

    def base(r: Measurement) -> float | None:
        sqlite = "SQLite" in r.name and not r.name.startswith("ideal, Post")
        return ideal.get(f"{r.case}/SQLite" if sqlite else r.case)

    lines = []
    for r in rows:
        b = base(r)
        lines.append(table([r], header=not lines, ideal={r.case: b} if b else None))
    profiled = "\n\n".join(
        f"### {r.name} ({r.case})\n\n{top_frames(r)}" for r in rows
        if r.profile is not None and r.case.startswith("offset")
        and "`entities`" in r.name)
    return f"""# Bulk benchmark results

{header}
Items like GitHub issues (~0.75 KB of JSON each, nested: user, labels, assignees, milestone,
reactions), from a fake API that serves pre-rendered pages (ops/bench/bulkapi.py). Sluice: one
plain `celery -A tasks worker` (a threads-pool process of 8 threads per core: two here),
started before the clock; the clock starts when `sluice run bulk --wait` is typed in a
directory whose sluice.toml sets the source, its kind (path, items, paginator) and the target,
nothing else. Sluice's
"seconds" run to the run's end (its last batch written, then finalize); "command exit" is when
`sluice run --wait` returned. The others' seconds are their loop's own (after their imports).

## Speed

"× ideal": against the ideal PostgreSQL pipeline (SQLite rows: the ideal SQLite pipeline;
cursor rows: the plain loop into the same target; the reference case: the seeds' loop). CPU
seconds per 1,000 items add every process the pipeline ran (Sluice: the worker, `sluice run`,
Redis, the PostgreSQL backends it used; the others: their process and their backends).

{chr(10).join(lines)}

## Targets (issue 19, one plain worker)

{verdicts(rows)}

## CPU seconds per 1,000 items, by stage

Each thread of the worker process has its CPU read from /proc (exact); py-spy's samples of that
thread (50 Hz, `--nonblocking`, samples of threads the OS counts as running or runnable)
split it between stages. A sample's side is its thread's (the `resync` task's thread, the
event loop thread that fetches and the loop's executor threads are the producer's: in the
default layout the producer runs in the worker process beside the batches; a pool thread
running `ingest_batch`, or decoding its message first, is the worker's; the main thread is
Celery's consumer, which reads each message from Redis and hands it to a pool thread), and its
stage the innermost frame that matches one of the side's rules (ops/bench/bulkmeter.py:
`SIDES`, `STAGES`). Redis and PostgreSQL: their own CPU (INFO cpu; the backends' /proc).
"pool hand-offs": pool threads sampled between tasks (woken, waiting for the GIL).

{stages(rows)}

## Redis per batch

INFO deltas (commandstats, total_net_input/output_bytes, used_cpu) over the run, divided by
the run's batches (one batch a page here). The `sluice run --wait` poll is included.

{redis_table(rows)}

## Profile: top frames by self time

py-spy `record --format raw --function --threads --nonblocking --rate 50` on the worker
process; a frame's self time is the samples whose innermost frame it is. The first run samples
every thread the OS counts as running or runnable, so a frame that waits on a socket or on
PostgreSQL (psycopg's `Connection.wait`, redis-py's `_read_from_socket`) also collects the
time its thread waited for a core on this loaded machine; the second (`--gil`) samples only
the thread holding the GIL: Python's own work, without what runs with the GIL released
(libpq, SQLite's engine, socket copies).

{profiled}
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=200_000)
    p.add_argument("--page-size", type=int, default=500)
    p.add_argument("--latency", type=float, default=0.020, help="seconds per offset page")
    p.add_argument("--cursor-page-size", type=int, default=1000)
    p.add_argument("--cursor-latency", type=float, default=0.005, help="seconds per cursor page")
    p.add_argument("--ref-items", type=int, default=20_000, help="the reference Link case")
    p.add_argument("--dsn", default=os.environ.get("SLUICE_TEST_POSTGRES_DSN",
                                                   "postgresql://postgres@127.0.0.1:5432/test"),
                   help="PostgreSQL ('' to skip it)")
    p.add_argument("--cases", default="offset,cursor,reference")
    p.add_argument("--no-profile", action="store_true", help="no py-spy on the worker")
    p.add_argument("--gil", action="store_true",
                   help="py-spy samples only the thread holding the GIL (--gil)")
    p.add_argument("--no-dlt", action="store_true")
    p.add_argument("--only", help="only the pipelines whose names hold one of these "
                                  "(comma-separated; case-insensitive)")
    p.add_argument("--profiles", metavar="DIR",
                   help="keep the worker's py-spy profiles (raw, collapsed stacks) here")
    p.add_argument("--out", help="the results file (default: BULK.md beside this file, written "
                                 "only at the default --items)")
    a = p.parse_args()
    os.environ["PGAPPNAME"] = APP_NAME  # every process measured; their backends are counted
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    cases = a.cases.split(",")
    command = "python ops/bench/bulk.py " + " ".join(map(shlex.quote, sys.argv[1:]))
    header = (f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on "
              f"{os.cpu_count()} cores ({cpu_model()}, {platform.machine()}, "
              f"Python {platform.python_version()}, PostgreSQL {pg_version(a)}, "
              f"{shutil.which('redis-server') and 'redis-server'} {redis_version()}), with "
              f"`{command.strip()}`.\n")
    start_load = load()
    print(header, flush=True)
    drop_all(a)
    rows: list[Measurement] = []
    try:
        if {"offset", "cursor"} & set(cases):
            api = BulkApi(a)
            try:
                if "offset" in cases:
                    rows += offset_case(a, api)
                if "cursor" in cases:
                    rows += cursor_case(a, api)
            finally:
                api.stop()
        if "reference" in cases:
            rows += reference_case(a)
    finally:
        drop_all(a)
    header += f"Load average at the start: {start_load}; at the end: {load()}.\n"
    text = report(a, rows, header)
    print("\n" + text.split("## Speed", 1)[1], flush=True)
    out = Path(a.out) if a.out else (HERE / "BULK.md" if a.items == 200_000 else None)
    if out is not None:
        out.write_text(text)
        print(f"written to {out}")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def load() -> str:
    """The machine's load averages (1, 5, 15 minutes): it is shared, and the figures move
    with it."""
    return " / ".join(Path("/proc/loadavg").read_text().split()[:3])


def pg_version(a: argparse.Namespace) -> str:
    if not a.dsn:
        return "–"
    with pg(a) as conn:
        return str(conn.execute("SHOW server_version").fetchone()[0]).split()[0]


def redis_version() -> str:
    with RedisServer() as server:
        return str(redis.Redis.from_url(server.url).info("server")["redis_version"])


if __name__ == "__main__":
    main()
