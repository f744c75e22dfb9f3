"""Worker nodes SIGKILLed at random instants during runs, on a machine whose cores are kept busy:
the fault test (tests/integration/test_lost_node.py) and the benchmark (ops/bench/recovery.py).

Two nodes (the plain defaults: the threads pool, 8 at once) consume one queue. Each run is a
resync of ``items`` items (50 a page, so ``items / 50`` batches) into a SQLite target emptied
before it. While a run is going, a node chosen at random is killed whole (SIGKILL to its
process group) after a random delay and started again at once under a fresh log, without
waiting for it to be ready, up to ``per_run`` times; a run that ended before the next kill is
simply followed by the next run. Each kill's recovery time is the time from that kill to the
end of its run.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from integrations.fakeapi import FakeAPI
from tasks.operator.redisserver import RedisServer
from tests.support.workers import Client, Workers, cursor_config

PAGE = 50
# A recovery longer than this is a lost message (the bound: 60 s from the kill).
BOUND = 60.0


@contextmanager
def busy_cores(n: int = 2) -> Iterator[None]:
    """``n`` processes spinning a core each, for as long as the block runs."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"],
                                 stdin=subprocess.DEVNULL) for _ in range(n)]
    try:
        yield
    finally:
        for p in spinners:
            p.kill()
            p.wait(10)


@dataclass
class Result:
    """What a campaign saw: each kill's recovery time, each run's outcome."""

    recoveries: list[float] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)  # one line per run, for the report
    failures: list[str] = field(default_factory=list)


class Fleet:
    """Two worker nodes, 'a' and 'b', on one Redis; a killed node is started again at once."""

    def __init__(self, tmp: Path, cfg: Path, redis_url: str, env: dict[str, str]) -> None:
        self.tmp, self.cfg, self.redis_url, self.env = tmp, cfg, redis_url, env
        self.starts = 0
        self.nodes = {name: self._start(name) for name in ("a", "b")}

    def _start(self, name: str, *, wait: bool = True) -> Workers:
        self.starts += 1
        node = Workers(config=self.cfg, redis_url=self.redis_url, pool="threads",
                       concurrency=8, log=self.tmp / f"{name}-{self.starts}.log", name=name,
                       env=self.env)
        if wait:
            return node.start(timeout=60)
        node.child.start()  # the next kill may find it still starting: a fair instant too
        return node

    def kill(self, name: str) -> float:
        """SIGKILL the node's whole process group; returns when (monotonic)."""
        node = self.nodes[name]
        node.child.signal(signal.SIGKILL)
        at = time.monotonic()
        assert node.process
        node.process.wait(10)
        self.nodes[name] = self._start(name, wait=False)
        return at

    def logs(self) -> str:
        return "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
                       for p in sorted(self.tmp.glob("[ab]-*.log")))

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()


def campaign(tmp: Path, api: FakeAPI, *, kills: int, per_run: int, items: int = 3000,
             node_timeout: float = 2.0, broker_url: str | None = None, seed: int | None = None,
             say: Callable[[str], None] = lambda _: None) -> Result:
    """Kill ``kills`` times over as many runs as needed (at most ``per_run`` kills a run).
    A run that does not end within ``BOUND`` seconds of its last kill is a failure (and ends
    the campaign)."""
    rng = random.Random(seed)
    api.set_items("item", items)
    api.state.delays["/cursor/item"] = 0.03
    cfg = cursor_config(tmp, api.url, limit=PAGE, source_keys="delete_threshold = 0.9")
    # Each run a backfill after its first third: kills find messages of every queue in hand
    # (producers, batches, bulk batches, run ends).
    env = {"SLUICE_NODE_TIMEOUT": str(node_timeout), "SLUICE_PRODUCER_SLICE_SECONDS": "2",
           "SLUICE_BULK_AFTER_ITEMS": str(items // 3),
           **({"SLUICE_BROKER_URL": broker_url} if broker_url else {})}
    result = Result()
    with RedisServer() as server:
        client = Client(server.url, broker_url=broker_url)
        fleet = Fleet(tmp, cfg, server.url, env)
        try:
            while len(result.recoveries) < kills and not result.failures:
                _one_run(fleet, client, tmp, rng, result, items=items,
                         kills=min(per_run, kills - len(result.recoveries)), say=say)
        finally:
            fleet.stop()
            client.close()
    return result


def _one_run(fleet: Fleet, client: Client, tmp: Path, rng: random.Random, result: Result, *,
             items: int, kills: int, say: Callable[[str], None]) -> None:
    with sqlite3.connect(tmp / "db.sqlite") as db:
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'entities'").fetchone():
            db.execute("DELETE FROM entities")  # every item must be written again
    run = client.start("api", "item", full=True)
    killed: list[tuple[str, float]] = []
    for _ in range(kills):
        time.sleep(rng.uniform(0.0, 1.5))  # the random instant
        if client.progress.get(run.run_id).state.ended:  # type: ignore[union-attr]
            break
        victim = rng.choice(["a", "b"])
        killed.append((victim, fleet.kill(victim)))
    last = killed[-1][1] if killed else time.monotonic()
    try:
        ended = client.wait(run.run_id, timeout=max(1.0, BOUND - (time.monotonic() - last)))
    except TimeoutError as exc:
        result.failures.append(f"run {run.run_id}: not ended {BOUND:.0f} s after its last kill "
                               f"({exc}){fleet.logs()}")
        return
    end = time.monotonic()
    with sqlite3.connect(tmp / "db.sqlite") as db:
        rows = db.execute("SELECT COUNT(DISTINCT identifier) FROM entities").fetchone()[0]
    batches = -(-items // PAGE)
    line = (f"run {len(result.runs) + 1}: {ended.state.value}, {ended.items_written} written, "
            f"{rows} rows, kills " + ", ".join(f"{v} +{end - at:.1f} s" for v, at in killed))
    result.runs.append(line)
    say(line)
    result.recoveries += [end - at for _, at in killed]
    if (ended.state.value, ended.items_written, ended.batches_done, rows) != (
            "succeeded", items, batches, items):
        result.failures.append(f"{line}: expected succeeded, {items} written once, {batches} "
                               f"batches, {items} rows: {ended}{fleet.logs()}")
