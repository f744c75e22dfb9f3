"""Sluice's benchmark: one command, everything local.

    python ops/bench/bench.py                 # the reference scenario, every pagination style
    python ops/bench/bench.py --memory        # producer RSS and Redis memory, 20k vs 1M items

It starts its own fake API (items, page size, latency, rate limit), an HTTP sink with a write
latency as the target, a Redis server and Celery workers, and measures for each pagination
style: the physical limit, a naive blocking loop, the Ocean-style generator loop (fetch, write,
fetch), and Sluice with 1, 2 and 4 worker processes, of the prefork pool (one task at a time
per process) and of the threads pool (8 at a time), each run three times (the median counts).
Tables and the issue's targets (met or not) go to stdout and RESULTS.md, a chart to
results.png, both beside this file. BENCH_LOGLEVEL=INFO keeps the workers' task log.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from integrations.jsonpath import dig  # noqa: E402
from integrations.rest.integration import paginator_for  # noqa: E402
from integrations.rest.settings import KindSettings  # noqa: E402
from tasks import messages  # noqa: E402
from tasks.operator.redisserver import RedisServer, free_port  # noqa: E402
from tasks.operator.supervisor import Child, celery  # noqa: E402
from tasks.runs.progress import Progress  # noqa: E402

HERE = Path(__file__).resolve().parent

STYLES: dict[str, dict[str, Any]] = {
    "cursor": {"path": "/cursor/bench", "items": "data",
               "paginator": {"type": "cursor", "cursor_path": "next_cursor"}},
    "link": {"path": "/link/bench", "paginator": {"type": "link", "limit_param": "per_page"}},
    "offset": {"path": "/offset/bench", "items": "values",
               "paginator": {"type": "offset", "offset_param": "startAt",
                             "limit_param": "maxResults", "total_path": "total"}},
}


@dataclass
class Result:
    scenario: str
    style: str
    method: str
    seconds: float
    items: int
    first_item: float | None
    peak_rss_mb: float | None
    got_429: int
    limit: float
    extra: dict[str, Any] = field(default_factory=dict)
    runs: list[float] = field(default_factory=list)  # seconds of every repetition (Sluice)
    requests: int = 0  # GETs the API answered (429s included)

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds else 0.0


def kind_spec(style: str, page_size: int) -> dict[str, Any]:
    spec = json.loads(json.dumps(STYLES[style]))
    spec["paginator"]["limit"] = page_size
    return spec


def limit_seconds(style: str, pages: int, a: argparse.Namespace, rate: float | None,
                  latency: float) -> float:
    """What physics allows: the API's latency (as measured), page count, concurrency and rate
    limit, plus the one write that must follow the last page."""
    if style == "cursor":
        fetch = pages * latency  # each request needs the previous answer
    else:
        fetch = latency + math.ceil((pages - 1) / a.concurrency) * latency
    if rate:
        fetch = max(fetch, pages / rate)
    return fetch + a.write_latency


class Api:
    """The fake API and sink in their own process, so the loops measured do not share its GIL."""

    def __init__(self, a: argparse.Namespace, *, items: int, rate: float | None = None):
        self.port = free_port()
        argv = [sys.executable, "-m", "integrations.fakeapi", "--port", str(self.port),
                "--items", f"bench={items}", "--latency", str(a.latency),
                "--write-latency", str(a.write_latency)]
        if rate:
            argv += ["--rate-limit", str(rate)]
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout
        self.proc.stdout.readline()
        self.url = f"http://127.0.0.1:{self.port}"

    def measured_latency(self, style: str, page_size: int, n: int = 15) -> float:
        """The API's real time per page, as a client sees it (its nominal latency plus its own
        serving time): the median of ``n`` sequential requests for one page."""
        spec = KindSettings.model_validate(kind_spec(style, page_size))
        path, params = paginator_for(spec).request(paginator_for(spec).first())
        times = []
        with httpx.Client(base_url=self.url, timeout=30) as client:
            for _ in range(n):
                t = time.perf_counter()
                client.get(path, params=params).raise_for_status()
                times.append(time.perf_counter() - t)
        self.reset()
        return sorted(times)[n // 2]

    def reset(self) -> None:
        httpx.delete(f"{self.url}/_stats/bench", timeout=10)

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/_stats/bench", timeout=30).json()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# --- the baselines, each in a child process so its peak RSS is its own ------------------

def naive(url: str, style: str, page_size: int) -> dict[str, Any]:
    """A blocking loop: fetch a page, write it, fetch the next."""
    spec = KindSettings.model_validate(kind_spec(style, page_size))
    paginator, state = paginator_for(spec), None
    written = 0
    with httpx.Client(base_url=url, timeout=60) as client:
        state = paginator.first()
        while state is not None:
            path, params = paginator.request(state)
            response = client.get(path, params=params)
            body = response.json()
            items = dig(body, spec.items)
            entities = [{"identifier": i["id"], "kind": "bench", "source": "bench", "data": i}
                        for i in items]
            if entities:
                client.post("/sink/bench", json={"entities": entities}).raise_for_status()
            written += len(entities)
            state = paginator.advance(state, response, body, items)
    return {"items": written}


def ocean(url: str, style: str, page_size: int) -> dict[str, Any]:
    """Ocean's recipe: one reused AsyncClient, an async generator yielding each page, and the
    consumer writing each page before it asks for the next."""
    spec = KindSettings.model_validate(kind_spec(style, page_size))
    paginator = paginator_for(spec)

    async def pages(client: httpx.AsyncClient):
        state = paginator.first()
        while state is not None:
            path, params = paginator.request(state)
            response = await client.get(path, params=params)
            body = response.json()
            items = dig(body, spec.items)
            yield items
            state = paginator.advance(state, response, body, items)

    async def run() -> int:
        written = 0
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            async for items in pages(client):
                entities = [{"identifier": i["id"], "kind": "bench", "source": "bench",
                             "data": i} for i in items]
                if entities:
                    (await client.post("/sink/bench", json={"entities": entities})
                     ).raise_for_status()
                written += len(entities)
        return written

    return {"items": asyncio.run(run())}


def baseline(method: str, api: Api, style: str, a: argparse.Namespace, limit: float,
             scenario: str) -> Result:
    api.reset()
    out = subprocess.run([sys.executable, __file__, "--baseline", method, "--url", api.url,
                          "--style", style, "--page-size", str(a.page_size)],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.splitlines()[-1])
    start, seconds = got["start"], got["seconds"]  # the loop's own clock, not Python's start-up
    stats = api.stats()
    return Result(scenario, style, method, seconds, stats["entities"],
                  (stats["first_write"] - start) if stats["first_write"] else None,
                  got["peak_rss_mb"], stats["get_statuses"].get("429", 0), limit)


# --- Sluice: real Redis, real workers ----------------------------------------------------

class Workers:
    """``n`` worker processes: one prefork node with ``n`` children; with ``threads``, ``n``
    nodes of the threads pool (``-P threads -c THREADS``), each a single process; with
    ``threads=0``, ``n`` nodes of the plain ``celery -A tasks worker`` (no pool flags)."""

    def __init__(self, config: Path, redis_url: str, n: int, log: Path, *,
                 threads: int | None = None):
        env = {**os.environ, "SLUICE_CONFIG": str(config), "SLUICE_REDIS_URL": redis_url}
        if threads is None:  # Celery reads `-P prefork` as "not given": say it in the env
            env["SLUICE_WORKER_POOL"] = "prefork"
        level = os.environ.get("BENCH_LOGLEVEL", "WARNING")
        self.threads = threads
        log.unlink(missing_ok=True)
        nodes = [["-c", str(n)]] if threads is None else [
            [*(["-P", "threads", "-c", str(threads)] if threads else []), "-n", f"w{i}@%h"]
            for i in range(n)]
        self.procs = [Child(f"worker{i}", celery("worker", *node, "--loglevel", level,
                                                 "--without-gossip", "--without-mingle"),
                            log=log, cwd=ROOT, env=env).start()
                      for i, node in enumerate(nodes)]
        client = redis.Redis.from_url(redis_url)
        self.procs[0].wait_until(
            lambda: len(self.workers()) >= n and bool(client.keys("_kombu.binding.*")),
            timeout=60, poll=0.2)
        time.sleep(1.0)

    def workers(self) -> list[int]:
        """The processes that run tasks: prefork children, or the threads-pool nodes."""
        if self.threads is not None:
            return [p.pid for p in self.procs if p.running()]
        return self.procs[0].children()

    def peak_rss_mb(self) -> float:
        """The largest peak RSS (VmHWM) of the worker processes."""
        peaks = []
        for pid in self.workers():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
        return max(peaks)

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop(timeout=30)


def sluice_config(tmp: Path, url: str, style: str, a: argparse.Namespace, *,
                  rate: float | None, target: str) -> Path:
    spec = kind_spec(style, a.page_size)
    p = spec["paginator"]
    pag = ", ".join(f"{k} = {json.dumps(v)}" for k, v in p.items())
    items = f'items = "{spec["items"]}"\n' if "items" in spec else ""
    limit = f"rate_limit = {rate}\nrate_limit_burst = 1\n" if rate else ""
    path = tmp / f"sluice-{style}.toml"
    path.write_text(f"""
[target]
{target}

[sources.bench]
integration = "rest"
base_url = "{url}"
max_concurrency = {a.concurrency}
max_in_flight = {a.max_in_flight}
{limit}
[sources.bench.kinds.bench]
path = "{spec['path']}"
{items}paginator = {{ {pag} }}
""")
    return path


def sluice(api: Api, style: str, n: int, a: argparse.Namespace, limit: float, scenario: str,
           *, rate: float | None = None, target: str | None = None,
           threads: int | None = None) -> Result:
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp_dir, RedisServer() as server:
        tmp = Path(tmp_dir)
        # "{tmp}" in a target stands for this run's own directory (a fresh SQLite file).
        target = (target or f'type = "http"\nurl = "{api.url}/sink/{{kind}}"').replace(
            "{tmp}", tmp_dir)
        config = sluice_config(tmp, api.url, style, a, rate=rate, target=target)
        workers = Workers(config, server.url, n, tmp / "worker.log", threads=threads)
        try:
            api.reset()
            client = redis.Redis.from_url(server.url)
            progress = Progress(client)
            from celery import Celery

            app = Celery(broker=server.url)
            app.conf.update(task_serializer="json", task_default_queue="sluice")
            start = time.time()
            run = progress.create_run("bench", "bench")
            messages.resync(app, "bench", "bench", run.run_id)
            redis_peak = 0
            while not progress.get(run.run_id).state.ended:
                redis_peak = max(redis_peak, int(client.info("memory")["used_memory"]))
                time.sleep(0.05)
            run = progress.get(run.run_id)
            seconds = run.ended_at - start
            rss = workers.peak_rss_mb()
            app.close()
        finally:
            workers.stop()
    stats = api.stats()
    assert run.state == "succeeded", run
    first = stats["first_write"]
    return Result(scenario, style, sluice_method(n, threads),
                  seconds, run.items_written, (first - start) if first else None, rss,
                  stats["get_statuses"].get("429", 0), limit,
                  {"redis_peak_mb": redis_peak / 2**20},
                  requests=sum(stats["get_statuses"].values()))


def sluice_method(n: int, threads: int | None) -> str:
    if threads == 0:
        return f"sluice, {n} × `celery -A tasks worker` (defaults)"
    pool = f"threads pool × {threads}" if threads else "prefork"
    return f"sluice, {n} worker process{'es' if n > 1 else ''} ({pool})"


def repeated(times: int, *args: Any, **kwargs: Any) -> Result:
    """Run ``sluice`` ``times`` times; the run with the median seconds, with every run's time
    (this machine is shared: one run can be off by half a second)."""
    results = sorted((sluice(*args, **kwargs) for _ in range(times)), key=lambda r: r.seconds)
    median = results[(len(results) - 1) // 2]
    median.runs = [r.seconds for r in results]
    return median


# --- reporting -------------------------------------------------------------------------------

def table(results: list[Result]) -> str:
    rows = ["| style | method | seconds | runs (s) | items/s | × limit | first item (s) | "
            "peak RSS (MB) | 429s | requests |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        first = f"{r.first_item:.2f}" if r.first_item is not None else "–"
        rss = f"{r.peak_rss_mb:.0f}" if r.peak_rss_mb is not None else "–"
        ratio = f"{r.seconds / r.limit:.2f}" if r.limit else "–"
        runs = " / ".join(f"{x:.2f}" for x in r.runs) if len(r.runs) > 1 else "–"
        asked = str(r.requests) if r.requests else "–"
        rows.append(f"| {r.style} | {r.method} | {r.seconds:.2f} | {runs} | "
                    f"{r.items_per_s:,.0f} | {ratio} | {first} | {rss} | {r.got_429} | {asked} |")
    return "\n".join(rows)


def verdicts(results: list[Result], rated: list[Result], a: argparse.Namespace) -> str:
    """The issue's targets, judged on the medians of one plain `celery -A tasks worker` (the
    defaults); the rate-limited scenario on the most workers measured."""
    lines = []
    pages = math.ceil(a.items / a.page_size)
    default = sluice_method(1, 0)

    def met(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    for style in a.styles:
        d = next((r for r in results if r.style == style and r.method == default), None)
        if d is None:
            continue
        first = d.first_item if d.first_item is not None else float("inf")
        if style == "cursor":
            ratio = d.seconds / d.limit
            lines.append(f"- cursor, within 1.10× the limit: {d.method}, {d.seconds:.2f} s = "
                         f"{ratio:.2f}× the limit ({d.limit:.2f} s): {met(ratio <= 1.10)}")
        else:
            ocean = next(r for r in results if r.style == style and r.method == "ocean")
            speedup = ocean.seconds / d.seconds
            lines.append(f"- {style}, at least 10× faster than the Ocean-style loop: {d.method}, "
                         f"{d.seconds:.2f} s vs {ocean.seconds:.2f} s = {speedup:.1f}×: "
                         f"{met(speedup >= 10)} (goal ≤ 1.6 s: "
                         f"{met(d.seconds <= 1.6).strip('*')})")
        lines.append(f"- {style}, first item in the target within 0.3 s: {first:.2f} s: "
                     f"{met(first <= 0.3)}")
        lines.append(f"- {style}, one request per page: {d.requests} requests for {pages} pages:"
                     f" {met(d.requests == pages)}")
    for style in a.styles:
        if style == "cursor" or not rated:
            continue  # a cursor is bound by latency, not by this rate
        r = min((x for x in rated if x.style == style and x.method.startswith("sluice")),
                key=lambda x: x.seconds)
        ratio, share = r.seconds / r.limit, r.got_429 / max(1, r.requests)
        lines.append(f"- {style} at {a.rate:g} requests/s, within 1.10× of pages ÷ rate and "
                     f"under 1% answered 429: {r.seconds:.2f} s = {ratio:.2f}×, {r.got_429} of "
                     f"{r.requests} requests ({share:.1%}): {met(ratio <= 1.10 and share < 0.01)}")
    return "\n".join(lines)


def chart(results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = sorted({r.style for r in results}, key=list(STYLES).index)
    methods = list(dict.fromkeys(r.method for r in results))
    fig, ax = plt.subplots(figsize=(12, 5))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        xs, ys = [], []
        for j, style in enumerate(styles):
            hit = [r for r in results if r.style == style and r.method == method]
            if hit:
                xs.append(j + i * width)
                ys.append(hit[0].seconds)
        ax.bar(xs, ys, width, label=method)
    ax.set_xticks([j + width * (len(methods) - 1) / 2 for j in range(len(styles))], styles)
    ax.set_ylabel("seconds (lower is better)")
    ax.set_title("Resync of the reference scenario, by pagination style")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def reference(a: argparse.Namespace) -> tuple[str, list[Result]]:
    pages = math.ceil(a.items / a.page_size)
    results: list[Result] = []
    api = Api(a, items=a.items)
    measured: dict[str, float] = {}
    try:
        for style in a.styles:
            measured[style] = api.measured_latency(style, a.page_size)
            limit = limit_seconds(style, pages, a, None, measured[style])
            results.append(Result("reference", style, "physical limit", limit, a.items, None,
                                  None, 0, limit))
            for method in ("naive", "ocean"):
                results.append(baseline(method, api, style, a, limit, "reference"))
            for threads in [0, *a.layouts]:
                for n in a.workers:
                    results.append(repeated(a.repeat, api, style, n, a, limit, "reference",
                                            threads=threads))
            print(table([r for r in results if r.style == style]), flush=True)
    finally:
        api.stop()
    rated: list[Result] = []
    if a.rate:
        api = Api(a, items=a.items, rate=a.rate)
        try:
            for style in a.styles:
                limit = limit_seconds(style, pages, a, a.rate, measured[style])
                rated.append(Result("rate", style, "physical limit", limit, a.items, None, None,
                                    0, limit))
                rated.append(repeated(a.repeat, api, style, max(a.workers), a, limit, "rate",
                                      rate=a.rate, threads=0))
            print(table(rated), flush=True)
        finally:
            api.stop()
    seen = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in measured.items())
    text = (f"### Reference: {a.items:,} items, {a.page_size} per page ({pages} pages), "
            f"{a.latency * 1000:.0f} ms per page, {a.write_latency * 1000:.0f} ms per write, "
            f"concurrency {a.concurrency}\n\nThe limit uses the API's latency as a client "
            f"measures it (nominal plus the fake server's own time per request: {seen}).\n\n"
            f"{table(results)}\n")
    if rated:
        text += (f"\n### With the API limited to {a.rate:g} requests/s (token bucket; Sluice's "
                 f"shared limit set to the same)\n\n{table(rated)}\n")
    text += f"\n### Targets\n\n{verdicts(results, rated, a)}\n"
    print(verdicts(results, rated, a), flush=True)
    return text, results


def memory(a: argparse.Namespace) -> str:
    """Producer RSS and Redis memory for a small and a large resync (no latency)."""
    a.latency, a.write_latency = 0.0, 0.0
    rows = ["| items | pages | seconds | peak worker RSS (MB) | peak Redis used_memory (MB) |",
            "|---:|---:|---:|---:|---:|"]
    for items in a.memory_items:
        api = Api(a, items=items)
        try:
            r = sluice(api, "link", max(a.workers), a, 0.0, "memory",
                       target='type = "sqlite"\npath = "{tmp}/bench.db"')
        finally:
            api.stop()
        rows.append(f"| {items:,} | {math.ceil(items / a.page_size):,} | {r.seconds:.1f} | "
                    f"{r.peak_rss_mb:.0f} | {r.extra['redis_peak_mb']:.1f} |")
        print(rows[-1], flush=True)
    return (f"### Memory: link pagination, {a.page_size} per page, no latency, "
            f"{max(a.workers)} worker processes, max_in_flight {a.max_in_flight}, SQLite target\n\n"
            + "\n".join(rows) + "\n")


def cpu(a: argparse.Namespace) -> str:
    """Where the worker's CPU is the limit: no API or write latency, an embedded SQLite
    target (JSON decoding and SQLite inserts in the worker). The defaults (one threads-pool
    process) against prefork processes and against two default nodes."""
    a.latency, a.write_latency = 0.0, 0.0
    api = Api(a, items=a.cpu_items)
    rows = ["| layout | seconds | runs (s) | items/s |", "|---|---:|---:|---:|"]
    try:
        for n, threads in ((1, 0), (2, None), (2, 0)):
            r = repeated(a.repeat, api, "link", n, a, 0.0, "cpu", threads=threads,
                         target='type = "sqlite"\npath = "{tmp}/bench.db"')
            runs = " / ".join(f"{x:.2f}" for x in r.runs)
            rows.append(f"| {r.method} | {r.seconds:.2f} | {runs} | {r.items_per_s:,.0f} |")
            print(rows[-1], flush=True)
    finally:
        api.stop()
    return (f"### CPU-bound: {a.cpu_items:,} items, link pagination, {a.page_size} per page, no "
            "latency, SQLite target in the worker\n\n" + "\n".join(rows) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--latency", type=float, default=0.1, help="seconds per API page")
    p.add_argument("--write-latency", type=float, default=0.05, help="seconds per target write")
    p.add_argument("--concurrency", type=int, default=16, help="max_concurrency of the source")
    p.add_argument("--max-in-flight", type=int, default=256)
    p.add_argument("--rate", type=float, default=20.0, help="API rate limit scenario (0: skip)")
    p.add_argument("--workers", default="1,2,4")
    p.add_argument("--threads", type=int, default=8,
                   help="also run each worker count as threads-pool processes with this many "
                        "threads each (0: not)")
    p.add_argument("--defaults-only", action="store_true",
                   help="only the plain `celery -A tasks worker` nodes (no prefork, no -P)")
    p.add_argument("--repeat", type=int, default=3,
                   help="runs of each Sluice configuration; the table shows the median")
    p.add_argument("--styles", default="cursor,link,offset")
    p.add_argument("--memory", action="store_true", help="the memory scenario instead")
    p.add_argument("--cpu", action="store_true",
                   help="the CPU-bound scenario instead (SQLite target, no latency)")
    p.add_argument("--cpu-items", type=int, default=100_000)
    p.add_argument("--memory-items", default="20000,1000000")
    p.add_argument("--baseline", choices=["naive", "ocean"], help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--style", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.baseline:  # a child process: one baseline loop
        start = time.time()
        got = (naive if a.baseline == "naive" else ocean)(a.url, a.style, a.page_size)
        got["start"], got["seconds"] = start, time.time() - start
        got["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(got))
        return
    a.workers = [int(n) for n in a.workers.split(",")]
    a.styles = a.styles.split(",")
    # Worker layouts beside the defaults: prefork (None), the threads pool with a.threads.
    a.layouts = [] if a.defaults_only else [None, *([a.threads] if a.threads else [])]
    a.memory_items = [int(n) for n in a.memory_items.split(",")]
    command = "python ops/bench/bench.py " + " ".join(map(shlex.quote, sys.argv[1:]))
    header = (f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on "
              f"{os.cpu_count()} cores ({platform.machine()}, Python "
              f"{platform.python_version()}), with `{command.strip()}`.\n")
    results_md = HERE / "RESULTS.md"
    if a.memory or a.cpu:
        name = "Memory" if a.memory else "CPU-bound work"
        body = memory(a) if a.memory else cpu(a)
        old = results_md.read_text() if results_md.exists() else "# Benchmark results\n"
        parts = {p.split("\n", 1)[0]: p for p in ("\n" + old).split("\n## ")[1:]}
        parts[name] = f"{name}\n\n{header}\n{body}"
        results_md.write_text(old.split("\n## ")[0].rstrip() + "\n\n" + "\n".join(
            f"## {part.rstrip()}\n" for part in parts.values()))
        return
    body, results = reference(a)
    chart([r for r in results if r.scenario == "reference"], HERE / "results.png")
    old = results_md.read_text() if results_md.exists() else ""
    others = "".join(f"\n## {p.rstrip()}\n" for p in ("\n" + old).split("\n## ")[1:]
                     if not p.startswith("Speed"))
    results_md.write_text("# Benchmark results\n\n## Speed\n\n" + header
                          + "\n![seconds by style and method](results.png)\n\n" + body
                          + others)


if __name__ == "__main__":
    main()
