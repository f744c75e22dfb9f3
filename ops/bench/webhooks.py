"""What one ``sluice serve`` process takes, and how soon an event is a row.

    python ops/bench/webhooks.py              # tables to WEBHOOKS.md

Everything local: an embedded Redis, one ``sluice serve`` process, one plain
``celery -A tasks worker`` (the defaults), a SQLite target; GitHub ``issues`` events, signed
(``X-Hub-Signature-256``), each a distinct issue, into the default mapping (table gh_issue).
The sender is this process (``tests.support.serve.post_many``: kept-alive connections, one
request at a time on each). It shares the machine's 2 cores with the server, Redis and the
worker: the figures are a floor.

1. **Accepted by serve alone**: 5,000 events on 32 connections, 5,000 more on 256, no worker
   running (they wait in the queue): events per second, p50/p99 accept latency (request sent
   -> 202). Then a worker starts and drains them: events written per second.
2. **A burst with the worker running**: 1,000 events at once: accept latency, and the time
   from each event's 202 to its row in the target (the table polled every 10 ms); every event
   lands, none twice (the rows, and the workers' count of events written).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from bench import Workers  # noqa: E402

from tasks.messages import URGENT  # noqa: E402
from tasks.operator.redisserver import RedisServer  # noqa: E402
from tasks.runs import keys, metrics  # noqa: E402
from tests.support.serve import Serve, post_many, signed  # noqa: E402

SECRET = "bench-webhook-secret"
CONCURRENCY = 32  # connections of the burst
SENDERS = (32, 256)  # connections of the serve-alone runs
ACCEPTED, BURST = 5_000, 1_000
CONFIG = """
[target]
path = "{db}"

[sources.gh]
integration = "github"
org = "acme"
token = "unused"
webhook_secret = "${{BENCH_HOOK_SECRET}}"
kinds = ["issue"]
"""


def delivery(n: int) -> tuple[bytes, dict[str, str]]:
    issue = {"id": 10_000_000 + n, "number": n, "title": f"Issue {n}", "state": "open",
             "user": {"login": "ann"}, "labels": [{"name": "bug"}],
             "repository_url": "https://api.github.com/repos/acme/repo1",
             "created_at": "2026-11-20T10:00:00Z", "updated_at": "2026-11-20T10:00:00Z"}
    body = json.dumps({"action": "opened", "issue": issue}).encode()
    return body, {"X-GitHub-Event": "issues", "X-GitHub-Delivery": f"bench-{n}",
                  "X-Hub-Signature-256": signed(body, SECRET),
                  "Content-Type": "application/json"}


def send(url: str, numbers: range, concurrency: int = CONCURRENCY
         ) -> tuple[float, dict[int, float], list[float]]:
    """Send the events, ``concurrency`` at a time. Returns (seconds for all, the monotonic
    time of each event's 202, every request's latency)."""
    answers = asyncio.run(post_many(url, [("/webhooks/gh", *delivery(n)) for n in numbers],
                                    concurrency=concurrency))
    refused = [(n, a.status, a.body)
               for n, a in zip(numbers, answers, strict=True) if a.status != 202]
    if refused:
        raise RuntimeError(f"{len(refused)} events not accepted, the first: {refused[0]}")
    start = min(a.sent for a in answers)
    last = max(a.answered for a in answers)
    return (last - start, {n: a.answered for n, a in zip(numbers, answers, strict=True)},
            [a.answered - a.sent for a in answers])


def rows(db: Path, numbers: range) -> set[int]:
    if not db.exists():
        return set()
    with sqlite3.connect(db, timeout=30) as conn:
        try:
            found = conn.execute("SELECT number FROM gh_issue WHERE number BETWEEN ? AND ?",
                                 (numbers.start, numbers.stop - 1)).fetchall()
        except sqlite3.OperationalError:  # no table yet
            return set()
    return {n for (n,) in found}


def watch(db: Path, numbers: range, *, timeout: float = 300) -> dict[int, float]:
    """The monotonic time each event's row was first seen (polled every 10 ms)."""
    seen: dict[int, float] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < len(numbers):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(numbers) - len(seen)} events never landed")
        now = time.monotonic()
        for n in rows(db, numbers) - seen.keys():
            seen[n] = now
        time.sleep(0.01)
    return seen


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def ms(value: float) -> str:
    return f"{value * 1000:.1f}"


def written(r: redis.Redis) -> int:
    return int(r.hget(keys.METRICS, metrics.field(metrics.webhook("written"), "gh", "issue")) or 0)


def main() -> None:
    os.environ["BENCH_HOOK_SECRET"] = SECRET
    with tempfile.TemporaryDirectory(prefix="sluice-hooks-") as tmp, RedisServer() as server:
        db = Path(tmp) / "hooks.db"
        config = Path(tmp) / "sluice.toml"
        config.write_text(CONFIG.format(db=db))
        r = redis.Redis.from_url(server.url)
        env = {"BENCH_HOOK_SECRET": SECRET}
        with Serve(config, server.url, log=Path(tmp) / "serve.log", env=env) as serve:
            # 1. serve alone, at two concurrencies; then a worker drains what it took.
            alone = {}
            for i, concurrency in enumerate(SENDERS):
                numbers = range(i * ACCEPTED, (i + 1) * ACCEPTED)
                seconds, _, latency = send(serve.url, numbers, concurrency)
                alone[concurrency] = (seconds, latency)
            taken = range(0, len(SENDERS) * ACCEPTED)
            batches = r.llen(URGENT)
            drain_start = time.monotonic()
            workers = Workers(config, server.url, 1, Path(tmp) / "worker.log", threads=0)
            try:
                watch(db, taken)
                drained = time.monotonic() - drain_start
                # 2. a burst with the worker running.
                burst = range(taken.stop, taken.stop + BURST)
                before = written(r)
                with ThreadPoolExecutor(1) as watcher:  # rows seen while the burst goes out
                    seeing = watcher.submit(watch, db, burst)
                    took, answered, burst_latency = send(serve.url, burst)
                    seen = seeing.result()
                time.sleep(1)  # anything written twice would be counted by now
                landed, counted = len(rows(db, burst)), written(r) - before
            finally:
                workers.stop()
        to_row = [seen[n] - answered[n] for n in burst]
    verdict = "all landed, none twice" if landed == counted == BURST else \
        f"NOT MET: {landed} rows, {counted} writes for {BURST} events"
    lines = "".join(
        f"| serve alone (no worker running), {c} connections | {ACCEPTED:,} | {sec:.2f} | "
        f"{ACCEPTED / sec:,.0f} | {ms(pct(lat, 50))} | {ms(pct(lat, 99))} |\n"
        for c, (sec, lat) in alone.items())
    text = f"""# Webhooks: what one `sluice serve` takes

Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores \
({platform.machine()}, Python {platform.python_version()}), with `python ops/bench/webhooks.py`.

Signed GitHub `issues` events (one distinct issue each, ~450 bytes), each connection sending
one request at a time, to one `sluice serve` process; one plain `celery -A tasks worker`
writes them into SQLite (the default GitHub mapping, table `gh_issue`). Sender, server, Redis
and worker share the machine's 2 cores. An answer waits for its batch to be in the broker, so
the accept latency includes `SLUICE_WEBHOOK_LINGER` (50 ms).

| scenario | events | seconds | events/s | accept p50 (ms) | accept p99 (ms) |
|---|---:|---:|---:|---:|---:|
{lines}| a burst, the worker running, {CONCURRENCY} connections | {BURST:,} | {took:.2f} | \
{BURST / took:,.0f} | {ms(pct(burst_latency, 50))} | {ms(pct(burst_latency, 99))} |

The {len(taken):,} events of the first lines went out as {batches} messages (coalesced: events
of one kind within 50 ms, at most `max_batch_items`); the worker, started after, wrote them all
in {drained:.2f} s ({len(taken) / drained:,.0f} events/s, its start included).

From each event's 202 to its row in the target, in the burst (table polled every 10 ms):

| p50 (ms) | p99 (ms) | max (ms) |
|---:|---:|---:|
| {ms(pct(to_row, 50))} | {ms(pct(to_row, 99))} | {ms(max(to_row))} |

The burst of {BURST:,}: {landed:,} rows, {counted:,} events written (the workers' count, once
per batch): **{verdict}**.
"""
    (HERE / "WEBHOOKS.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
