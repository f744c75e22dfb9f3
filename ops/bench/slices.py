"""A cursor-paged API read as time windows (issue 22, item 4).

    python ops/bench/slices.py              # tables to SLICES.md

The reference cursor case: 20,000 items, 100 per page (200 pages), 100 ms a page, 50 ms a
write into the HTTP sink; the fake API filters by ``updated_at[gte]`` / ``updated_at[lt]``
(item i was updated i seconds after 2024-01-01). Read with one plain ``celery -A tasks worker``
(the defaults) and ``max_concurrency`` 16:

- serially, as a cursor API is without slices (every page waits for the one before);
- in windows of 21 minutes over the items' span (16 windows: all in flight at once);
- in windows of 30 days from 2024-01-01 to now, with ``max_window_items`` 1,500 and the API's
  total: the one window holding every item is split until each holds at most 1,500, and the
  empty windows cost one request each;
- in windows of 21 minutes under a shared ``rate_limit`` of 20 requests/s (the API allows as
  many): the target is 1.10 × pages ÷ rate.

Everything is local: the fake API in this process, a Redis server, the worker, the sink.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from bench import Workers  # noqa: E402
from celery import Celery  # noqa: E402
from redis import Redis  # noqa: E402

from integrations.fakeapi import FakeAPI, at  # noqa: E402
from tasks import messages  # noqa: E402
from tasks.operator.redisserver import RedisServer  # noqa: E402
from tasks.runs import keys  # noqa: E402
from tasks.runs.progress import Progress  # noqa: E402

SOURCE = """
[target]
type = "http"
url = "{url}/sink/{{kind}}"

[sources.bench]
integration = "rest"
base_url = "{url}"
max_concurrency = {concurrency}
max_in_flight = 256
{limit}
"""
KIND = """
[sources.bench.kinds.{name}]
path = "/cursor/bench"
items = "data"
paginator = {{ type = "cursor", cursor_path = "next_cursor", limit = {page}{total} }}
{slices}
"""
BOUNDS = 'param_from = "updated_at[gte]", param_to = "updated_at[lt]"'


@dataclass
class Case:
    name: str
    what: str
    slices: str  # the kind's slices line ('' for none)
    total: bool = False  # the paginator reads the API's total_count
    rate: float | None = None


def cases(a: argparse.Namespace) -> list[Case]:
    span = at(a.items)  # the newest item's time, and a second
    return [
        Case("serial", "serial (no slices)", ""),
        Case("windows", f"slices: step 21m over [{at(0)}, {span}) ({-(-a.items // 1260)} "
             "windows)", f'slices = {{ {BOUNDS}, start = "{at(0)}", end = "{span}", '
             'step = "21m" }'),
        Case("adaptive", "slices: step 30d from 2024-01-01 to now, max_window_items 1500",
             f'slices = {{ {BOUNDS}, start = "{at(0)}", step = "30d", '
             'max_window_items = 1500 }', total=True),
        Case("rated", f"slices: step 21m, rate_limit {a.rate:g}/s", f'slices = {{ {BOUNDS}, '
             f'start = "{at(0)}", end = "{span}", step = "21m" }}', rate=a.rate),
    ]


@dataclass
class Measurement:
    case: Case
    seconds: float
    requests: int
    pages: int
    windows: int  # read (partitions of the run)
    split: int  # split (into 2 to 16 pieces at once) before they were read on
    written: int
    runs: tuple[float, ...] = ()  # seconds of every repetition (this row is the median)

    def limit(self, a: argparse.Namespace) -> float:
        """The serial limit, or pages ÷ rate under a rate limit."""
        if self.case.rate:
            return self.pages / self.case.rate
        return self.pages * a.latency if self.case.name == "serial" else 0.0


def measure(case: Case, a: argparse.Namespace) -> Measurement:
    limit = f"rate_limit = {case.rate}\nrate_limit_burst = 1" if case.rate else ""
    total = ', total_path = "total_count"' if case.total else ""
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp, RedisServer() as server, \
            FakeAPI(latency=a.latency, write_latency=a.write_latency, rate_limit=case.rate
                    ) as api:
        config = Path(tmp) / "sluice.toml"
        config.write_text(SOURCE.format(url=api.url, concurrency=a.concurrency, limit=limit)
                          + KIND.format(name=case.name, page=a.page_size, total=total,
                                        slices=case.slices))
        api.set_timed_items("bench", a.items)
        workers = Workers(config, server.url, 1, Path(tmp) / "worker.log", threads=0)
        app = Celery(broker=server.url)
        app.conf.update(task_serializer="json", task_default_queue="sluice")
        progress = Progress(Redis.from_url(server.url))
        try:
            with api.server.lock:
                api.state.log.clear()
            start = time.time()
            run = progress.create_run("bench", case.name)
            messages.resync(app, "bench", case.name, run.run_id)
            while not (got := progress.get(run.run_id)) or not got.state.ended:
                time.sleep(0.02)
            split = int(progress.r.hget(keys.run(run.run_id), "windows_split") or 0)
        finally:
            workers.stop()
            app.close()
        assert got.state == "succeeded", got
        with api.server.lock:
            requests = sum(1 for r in api.state.log if r[1] == "GET" and r[3] == 200)
            written = len(api.state.sink.get(case.name, {}))
    assert written == a.items, (written, a.items)
    return Measurement(case, (got.ended_at or time.time()) - start, requests, got.pages,
               got.partitions or 1, split, written)


def table(rows: list[Measurement], a: argparse.Namespace) -> str:
    lines = ["| method | seconds | runs (s) | items landed | pages | windows read | "
             "windows split | requests | extra requests | target | met |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for row in rows:
        if row.case.name == "serial":
            target, met = f"– (serial limit {row.limit(a):.1f} s)", "–"
        elif row.case.rate:
            bound = 1.10 * row.limit(a)
            target = f"≤ 1.10 × pages ÷ rate = {bound:.2f} s"
            met = "met" if row.seconds <= bound else "NOT met"
        else:
            target = f"≤ {a.target:g} s, ≤ 1 extra request a window (read or split)"
            ok = row.seconds <= a.target and row.requests - row.pages <= row.windows + row.split
            met = "met" if ok else "NOT met"
        runs = " / ".join(f"{t:.2f}" for t in row.runs) or "–"
        lines.append(f"| {row.case.what} | {row.seconds:.2f} | {runs} | {row.written:,} | "
                     f"{row.pages} | "
                     f"{row.windows} | {row.split} | {row.requests} | "
                     f"{row.requests - row.pages} | {target} | {met} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--latency", type=float, default=0.1, help="seconds per API page")
    p.add_argument("--write-latency", type=float, default=0.05, help="seconds per sink write")
    p.add_argument("--concurrency", type=int, default=16, help="the source's max_concurrency")
    p.add_argument("--rate", type=float, default=20.0, help="requests/s of the rated case")
    p.add_argument("--target", type=float, default=3.0, help="seconds the sliced runs aim at")
    p.add_argument("--cases", default="serial,windows,adaptive,rated")
    p.add_argument("--repeat", type=int, default=3,
                   help="runs of each sliced case (the median counts; serial runs once)")
    a = p.parse_args()
    chosen = a.cases.split(",")
    command = "python ops/bench/slices.py " + " ".join(map(shlex.quote, sys.argv[1:]))
    rows = []
    loads = [os.getloadavg()[0]]
    for case in cases(a):
        if case.name in chosen:
            times = 1 if case.name == "serial" else a.repeat
            got = sorted((measure(case, a) for _ in range(times)), key=lambda r: r.seconds)
            median = got[(len(got) - 1) // 2]
            median.runs = tuple(r.seconds for r in got)
            rows.append(median)
            print(table(rows[-1:], a).splitlines()[-1], flush=True)
    loads.append(os.getloadavg()[0])
    header = (f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on "
              f"{os.cpu_count()} cores ({platform.machine()}, Python "
              f"{platform.python_version()}), with `{command.strip()}`: {a.items:,} items, "
              f"{a.page_size} per page, {a.latency * 1000:.0f} ms a page, "
              f"{a.write_latency * 1000:.0f} ms a write (HTTP sink), one plain "
              f"`celery -A tasks worker`, max_concurrency {a.concurrency}. The machine's "
              f"load average (1 min) was {loads[0]:.1f} at the start and {loads[1]:.1f} at the "
              "end: other work shared its cores.\n")
    text = ("# A cursor API read as time windows (slices)\n\n" + header + "\n" + table(rows, a)
            + "\n\nRequests are the GETs the API answered 200; a window costs one more than "
            "its pages only when it was split (its first page is read again as its first "
            "piece's) or is empty (one request, no page with items).\n")
    (HERE / "SLICES.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
