"""Flat under sustained load: a soak of many small runs, webhooks and backfills.

    python ops/bench/soak.py                  # 30 minutes; SOAK.md and soak.png beside this file
    python ops/bench/soak.py --minutes 3      # a quick try (writes nothing unless --out)

Everything local and as a user runs it: its own Redis, the fake API (this process) with
``--sources`` small REST sources (100-1,000 items each, cursor paging; every third incremental,
its items changing every minute; three with a child kind whose API answers 404 for a third of
the parents (rejected) and 500 for a few, past every retry (so child batches are
dead-lettered); three answering a few 500s every three minutes), a ``backfill`` source of
``--backfill`` items started with ``sluice run backfill`` every ``--backfill-every`` minutes,
one plain ``celery -A tasks worker`` (the defaults), one ``celery -A tasks beat`` starting
every small source every 40-89 s (``every``), and one ``sluice serve`` receiving signed GitHub
``issues`` events at ``--webhook-rate`` a second.

Every minute: Redis used_memory, DBSIZE, clients; every key's family, TTL and (without a TTL)
size; RSS, open fds and sockets of the worker, beat and serve; runs started / ended / failed;
a webhook's 202 -> row latency. At the end (after a drain): every run ended; the slopes over the
second half; every key of a documented family carries a TTL no longer than documented; no
family without a TTL grows. The documented TTLs are shortened to ``--ttl`` (600 s) for every
process, as an operator may, so that expiry is seen within the soak and the key count can
level off; the check is the same as with the defaults.
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import random
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

import soakconns  # noqa: E402
import soakmeter as meter  # noqa: E402
import soakreport  # noqa: E402
from bench import Workers  # noqa: E402
from webhooks import SECRET, delivery  # noqa: E402

from integrations.fakeapi import FakeAPI  # noqa: E402
from tasks.operator.redisserver import RedisServer  # noqa: E402
from tasks.operator.supervisor import Child, celery  # noqa: E402
from tasks.runs import keys  # noqa: E402
from tasks.settings import Settings  # noqa: E402
from tests.support.serve import Serve  # noqa: E402
from tests.support.workers import ROOT, SLUICE  # noqa: E402

GH = """
[sources.gh]
integration = "github"
org = "acme"
token = "unused"
webhook_secret = "${BENCH_HOOK_SECRET}"
kinds = ["issue"]
"""


def source(i: int) -> tuple[str, int, str]:
    """The name, item count and sluice.toml section of small source ``i``."""
    name, items = f"s{i:02d}", 100 + (i * 397) % 901
    inc = 'incremental = { cursor_path = "updated_at", param = "since", lookback = "1m" }\n' \
        if i % 3 == 0 else ""
    text = (f'[sources.{name}]\nintegration = "rest"\nbase_url = "{{url}}"\n'
            f'every = "{40 + (i * 7) % 50}s"\n'
            f'[sources.{name}.kinds.item]\npath = "/cursor/{name}"\nitems = "data"\n'
            f'paginator = {{ type = "cursor", cursor_path = "next_cursor", limit = 100 }}\n'
            + inc)
    if i in DEAD:
        text += (f'[sources.{name}.kinds.detail]\nparent = "item"\n'
                 f'path = "/sub/d{name}/{{parent.id}}"\nitems = "data"\n'
                 'paginator = { type = "cursor", cursor_path = "next_cursor", limit = 50 }\n')
    return name, items, text


DEAD, FLAKY = (4, 14, 24), (7, 17, 27)  # sources with dead-lettered child batches / 500s


def config(tmp: Path, api: FakeAPI, a: argparse.Namespace) -> tuple[Path, list[str]]:
    """sluice.toml; the fake API's items (incremental kinds timed, children of 2/3 parents)."""
    parts = [f'[target]\npath = "{tmp / "soak.db"}"\n', GH,
             '[sources.backfill]\nintegration = "rest"\nbase_url = "{url}"\n'
             '[sources.backfill.kinds.item]\npath = "/cursor/backfill"\nitems = "data"\n'
             'paginator = { type = "cursor", cursor_path = "next_cursor", limit = 500 }\n']
    names = []
    for i in range(a.sources):
        name, count, text = source(i)
        names.append(name)
        parts.append(text)
        items = api.set_timed_items(name, count) if i % 3 == 0 else api.set_items(name, count)
        if i in DEAD:
            api.set_children(f"d{name}", [it for n, it in enumerate(items) if n % 3], 2)
            # the children of parent 7 (and 70-79, 700-...) answer 500 past every retry
            api.fail(f"/sub/d{name}/{name}-7", 500, times=10**9)
    api.set_items("backfill", a.backfill)
    path = tmp / "sluice.toml"
    path.write_text("\n".join(parts).replace("{url}", api.url))
    return path, names


class Hooks(threading.Thread):
    """Signed events to ``sluice serve`` at a steady rate; the 202 time of each, and the time
    its row was first seen in the target (the table polled every 0.1 s)."""

    def __init__(self, url: str, db: Path, rate: float) -> None:
        super().__init__(daemon=True)
        self.url, self.db, self.rate = url, db, rate
        self.answered: dict[int, float] = {}
        self.landed: dict[int, float] = {}
        self.refused: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            n, start = 0, time.monotonic()
            while not self.stop.is_set():
                body, headers = delivery(n)
                got = client.post("/webhooks/gh", content=body, headers=headers)
                if got.status_code == 202:
                    self.answered[n] = time.monotonic()
                else:
                    self.refused.append(f"{n}: {got.status_code} {got.text[:100]}")
                n += 1
                while not self.stop.wait(min(0.1, max(0.0, start + n / self.rate
                                                      - time.monotonic()))):
                    self.look()
                    if time.monotonic() >= start + n / self.rate:
                        break

    def look(self) -> None:
        waiting = [n for n in self.answered if n not in self.landed]
        if not waiting or not self.db.exists():
            return
        try:
            with sqlite3.connect(self.db, timeout=5) as conn:
                found = conn.execute("SELECT number FROM gh_issue WHERE number >= ?",
                                     (min(waiting),)).fetchall()
        except sqlite3.OperationalError:  # no table yet, or busy
            return
        now = time.monotonic()
        for (n,) in found:
            self.landed.setdefault(n, now)

    def settle(self, timeout: float) -> None:
        """After the sender stopped: look every 0.1 s until the last events' rows are seen (or
        ``timeout``), so their latency is not the drain's length."""
        end = time.monotonic() + timeout
        while time.monotonic() < end and any(n not in self.landed for n in self.answered):
            self.look()
            time.sleep(0.1)

    def latencies(self, since: float) -> tuple[list[float], int]:
        """202 -> row (s) of the events answered after ``since``; and how many are not rows."""
        got = [self.landed[n] - t for n, t in list(self.answered.items())
               if t >= since and n in self.landed]
        pending = sum(1 for n in list(self.answered) if n not in self.landed)
        return got, pending


class Runs:
    """Every run beat and ``sluice run`` started (sluice:runs), and its state."""

    def __init__(self, r: redis.Redis) -> None:
        self.r = r
        self.states: dict[str, str] = {}

    def poll(self) -> dict[str, int]:
        for raw in self.r.zrange(keys.RUNS, 0, -1):  # type: ignore[union-attr]
            self.states.setdefault(raw.decode(), "running")
        open_ = [i for i, s in self.states.items() if s in ("running", "finalizing")]
        pipe = self.r.pipeline(transaction=False)
        for run_id in open_:
            pipe.hget(keys.run(run_id), "state")
        for run_id, state in zip(open_, pipe.execute(), strict=True):
            self.states[run_id] = state.decode() if state else "lost"
        counts = {"started": len(self.states)}
        for state in self.states.values():
            counts[state] = counts.get(state, 0) + 1
        return counts


def chores(api: FakeAPI, names: list[str], minute: int) -> None:
    """What the API does each minute: incremental kinds change, flaky ones answer 500s."""
    for i, name in enumerate(names):
        if i % 3 == 0:
            api.change(name, random.sample(range(len(api.state.items[name])), 5),
                       when=100_000 + minute * 60)
    if minute % 3 == 1:
        for i in FLAKY:
            if i < len(names):
                api.fail(f"/cursor/{names[i]}", 500, times=2)


def sample(r: redis.Redis, pids: dict[str, int], names: frozenset[str],
           rules: list[meter.Documented], runs: Runs, hooks: Hooks, t0: float,
           last: float) -> dict[str, Any]:
    row: dict[str, Any] = {"minute": (time.monotonic() - t0) / 60, **meter.info(r)}
    row["families"] = meter.scan(r, names, rules)
    row["procs"] = {name: meter.proc(pid) for name, pid in pids.items()}
    row["runs"] = runs.poll()
    row["hook_latency"], row["hooks_pending"] = hooks.latencies(last)
    row["hooks_sent"] = len(hooks.answered)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--sources", type=int, default=40)
    p.add_argument("--webhook-rate", type=float, default=3.0, help="events a second")
    p.add_argument("--backfill", type=int, default=75_000, help="items")
    p.add_argument("--backfill-every", type=float, default=10, help="minutes")
    p.add_argument("--ttl", type=int, default=600,
                   help="SLUICE_RUN_TTL_SECONDS and SLUICE_WEBHOOK_DELIVERY_TTL for the soak")
    p.add_argument("--drain", type=float, default=300, help="seconds to wait for runs to end")
    p.add_argument("--conns", action="store_true",
                   help="also match Redis's clients to processes every 15 s (soakconns.py): "
                        "a table of clients per process, name and command; conns.jsonl in --out")
    p.add_argument("--out", type=Path, default=None,
                   help="where SOAK.md and soak.png go (default: beside this file, 30+ min)")
    a = p.parse_args()
    out = a.out or (HERE if a.minutes >= 30 else None)
    command = "python ops/bench/soak.py " + " ".join(sys.argv[1:])
    os.environ.update({"BENCH_HOOK_SECRET": SECRET, "SLUICE_RUN_TTL_SECONDS": str(a.ttl),
                       "SLUICE_WEBHOOK_DELIVERY_TTL": str(a.ttl)})
    settings = Settings()
    rules = meter.documented(settings.run_ttl_seconds, settings.webhook_delivery_ttl,
                             settings.run_lock_seconds)
    with tempfile.TemporaryDirectory(prefix="sluice-soak-") as tmpdir, RedisServer() as server, \
            FakeAPI(latency=0.005) as api:
        tmp = Path(tmpdir)
        path, names = config(tmp, api, a)
        env = {"SLUICE_CONFIG": str(path), "SLUICE_REDIS_URL": server.url}
        r = redis.Redis.from_url(server.url)
        workers = Workers(path, server.url, 1, tmp / "worker.log", threads=0)
        beat = Child("beat", celery("beat", "--loglevel", "WARNING"), log=tmp / "beat.log",
                     cwd=ROOT, env=env).start()
        with Serve(path, server.url, log=tmp / "serve.log") as serve:
            hooks = Hooks(serve.url, tmp / "soak.db", a.webhook_rate)
            hooks.start()
            pids = {"worker": workers.procs[0].pid, "beat": beat.pid,
                    "serve": serve.child.pid}
            every = frozenset([*names, "gh", "backfill"])
            runs = Runs(r)
            probe = soakconns.Probe(server.url, pids["worker"],
                                    {**pids, "soak": os.getpid()},
                                    (out or tmp) / "conns.jsonl") if a.conns else None
            if probe is not None:
                probe.start()
            rows = soak(a, api, r, pids, every, rules, hooks, runs, env, command)
            hooks.stop.set()
            hooks.join(30)
            hooks.settle(60)
            beat.stop()  # no new runs: the ones started may end
            drained = drain(r, a.drain)
            hooks.look()  # the last events sent: their rows, seen after the sender stopped
            final = sample(r, pids, every, rules, runs, hooks, time.monotonic(),
                           time.monotonic())
            if probe is not None:
                probe.stop.set()
                probe.join(30)
        workers.stop()
        (tmp.parent / "sluice-soak-rows.pickle").write_bytes(pickle.dumps((rows, final)))
        text = soakreport.report(a, rows, final, drained, hooks, runs, command, settings,
                                 machine=f"{os.cpu_count()} cores ({platform.machine()}, "
                                         f"Python {platform.python_version()})")
        if probe is not None:
            text += "\n" + soakconns.report(probe.rows)
        print(text)
        if out is not None:
            (out / "SOAK.md").write_text(text)
            soakreport.plot(rows, out / "soak.png")


def soak(a: argparse.Namespace, api: FakeAPI, r: redis.Redis, pids: dict[str, int],
         names: frozenset[str], rules: list[meter.Documented], hooks: Hooks, runs: Runs,
         env: dict[str, str], command: str) -> list[dict[str, Any]]:
    """The soak itself: a row a minute, printed as it comes."""
    rows = []
    small = sorted(n for n in names if n.startswith("s"))
    t0 = last = time.monotonic()
    next_backfill = 1.0  # minutes
    print(f"$ {command}\n{soakreport.HEADER}", flush=True)
    for minute in range(1, int(a.minutes) + 1):
        if minute - 1 >= next_backfill:
            Child("sluice-run", [*SLUICE, "run", "backfill"], log=None, cwd=ROOT, env=env).start()
            next_backfill += a.backfill_every
        chores(api, small, minute)
        time.sleep(max(0.0, t0 + minute * 60 - time.monotonic()))
        row = sample(r, pids, names, rules, runs, hooks, t0, last)
        last = time.monotonic()
        rows.append(row)
        print(soakreport.line(row), flush=True)
    return rows


def drain(r: redis.Redis, seconds: float) -> float:
    """Wait for every active run to end; the seconds it took (or ``seconds``: some did not)."""
    start = time.monotonic()
    while r.zcard(keys.ACTIVE) and time.monotonic() - start < seconds:
        time.sleep(2)
    return time.monotonic() - start


if __name__ == "__main__":
    main()
