"""What the soak benchmark (``soak.py``) measures once a minute, and how it judges the series.

Redis: ``used_memory``, ``DBSIZE``, ``CLIENT LIST``; every key (SCAN) grouped into a family (its
name with run ids, sources, delivery ids and numbers as ``*``), with its TTL, its size (members
of a set, fields of a hash, ...) and, for keys without a TTL, ``MEMORY USAGE``. The
processes (worker node, beat, serve): RSS, open fds and sockets, from /proc.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tasks.runs import keys

DAY = 86400
_SIZE = {"set": "scard", "hash": "hlen", "list": "llen", "zset": "zcard", "string": "strlen",
         "stream": "xlen"}


@dataclass(frozen=True)
class Documented:
    """A key family whose expiry README/code documents: every key must carry a TTL of at
    most ``ttl`` seconds (None: some TTL; the code says 'expires when idle')."""

    prefix: str
    ttl: int | None
    where: str


def documented(run_ttl: int, delivery_ttl: int, lock_seconds: int) -> list[Documented]:
    """The expiry schedule, as settings.py / keys.py / README.md state it, for this soak's
    settings (``SLUICE_RUN_TTL_SECONDS``, ``SLUICE_WEBHOOK_DELIVERY_TTL``, run lock)."""
    return [
        Documented(f"{keys.PREFIX}:run:", run_ttl, "run records: SLUICE_RUN_TTL_SECONDS"),
        Documented(f"{keys.PREFIX}:dead:", run_ttl, "dead letters: SLUICE_RUN_TTL_SECONDS"),
        Documented(f"{keys.PREFIX}:webhook:delivery:", delivery_ttl,
                   "delivery claims: SLUICE_WEBHOOK_DELIVERY_TTL"),
        Documented(f"{keys.PREFIX}:webhook:gone:", delivery_ttl,
                   "tombstones: SLUICE_WEBHOOK_DELIVERY_TTL"),
        Documented(f"{keys.PREFIX}:webhook:batch:", delivery_ttl,
                   "webhook batch ids: SLUICE_WEBHOOK_DELIVERY_TTL"),
        Documented(f"{keys.PREFIX}:lock:", lock_seconds, "run locks: SLUICE_RUN_LOCK_SECONDS"),
        Documented(f"{keys.PREFIX}:ratelimit:", None, "rate limits: 'expires when idle'"),
        Documented(f"{keys.PREFIX}:node:", None, "reaper locks (node:*:reaper)"),
    ]


_DIGITS = re.compile(r"\d")


def family(key: str, names: frozenset[str]) -> str:
    """``sluice:run:20261207T161000-ab12cd34:done`` -> ``sluice:run:*:done``: a segment with a
    digit, an '@' or one of ``names`` (sources) becomes ``*``."""
    if key.startswith(("celery-task-meta-", "_kombu.binding.")):
        return key.rsplit(".", 1)[0] + ".*" if key.startswith("_kombu") else "celery-task-meta-*"
    parts = ["*" if _DIGITS.search(p) or "@" in p or p in names else p for p in key.split(":")]
    return ":".join(parts)


@dataclass
class Family:
    keys: int = 0
    no_ttl: int = 0  # keys without a TTL
    size: int = 0  # members / fields / length (strings: bytes), summed over the keys
    bytes: int = 0  # MEMORY USAGE of the keys without a TTL
    max_ttl: int = 0  # the longest TTL seen (seconds)
    bad: list[str] = field(default_factory=list)  # documented keys without TTL, or too long


def scan(r: redis.Redis, names: frozenset[str], rules: list[Documented]) -> dict[str, Family]:
    """Every key's family, TTL and, without a TTL, its size. Keys of runs still active
    are exempt from the TTL rule (their TTLs start when the run ends)."""
    active = {i.decode() for i in r.zrange(keys.ACTIVE, 0, -1)}  # type: ignore[union-attr]
    found: dict[str, Family] = defaultdict(Family)
    batch: list[bytes] = []
    for key in r.scan_iter(count=2000):
        batch.append(key)
        if len(batch) == 2000:
            _measure(r, batch, found, names, rules, active)
            batch = []
    _measure(r, batch, found, names, rules, active)
    return dict(found)


def _measure(r: redis.Redis, batch: list[bytes], found: dict[str, Family],
             names: frozenset[str], rules: list[Documented], active: set[str]) -> None:
    pipe = r.pipeline(transaction=False)
    for key in batch:
        pipe.ttl(key)
    ttls = pipe.execute()
    lasting = [(k.decode(), family(k.decode(), names)) for k, t in zip(batch, ttls, strict=True)
               if t == -1]
    for k, t in zip(batch, ttls, strict=True):
        name = k.decode()
        fam = found[family(name, names)]
        fam.keys += 1
        if t >= 0:
            fam.max_ttl = max(fam.max_ttl, t)
        rule = next((d for d in rules if name.startswith(d.prefix)), None)
        if rule is None or any(run_id in name for run_id in active):
            continue
        if name.startswith(f"{keys.PREFIX}:node:") and not name.endswith(":reaper"):
            continue  # node:*:tags lives as long as its node (liveness.py)
        if t == -1 or (rule.ttl is not None and t > rule.ttl):
            fam.bad.append(f"{name} (TTL {t})")
    pipe = r.pipeline(transaction=False)
    for key in batch:
        pipe.type(key)
    types = pipe.execute()
    for key, kind in zip(batch, types, strict=True):
        getattr(pipe, _SIZE.get(kind.decode(), "exists"))(key)
    sizes = pipe.execute()
    for key, size in zip(batch, sizes, strict=True):
        found[family(key.decode(), names)].size += int(size or 0)
    for name, _ in lasting:
        pipe.memory_usage(name)
    for (_, fam_name), used in zip(lasting, pipe.execute(), strict=True):
        found[fam_name].no_ttl += 1
        found[fam_name].bytes += int(used or 0)


def proc(pid: int) -> dict[str, float]:
    """RSS (MB), open fds and sockets of a process, from /proc; {} when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return {}
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    sockets = 0
    for fd in fds:
        with contextlib.suppress(OSError):
            sockets += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    return {"rss": rss / 1024, "fds": len(fds), "sockets": sockets}


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (per unit of x); 0 with fewer than two points."""
    if len(xs) < 2:
        return 0.0
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def growing(series: list[int]) -> bool:
    """Never falls and ends over 5% higher than it began: what a collection nothing trims
    does (a level series with noise falls now and then)."""
    return len(series) >= 3 and series[-1] > series[0] * 1.05 and all(
        b >= a for a, b in itertools.pairwise(series))


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def info(r: redis.Redis) -> dict[str, Any]:
    got: dict[str, Any] = r.info("memory")  # type: ignore[assignment]
    return {"used_memory": int(got["used_memory"]), "dbsize": int(r.dbsize()),  # type: ignore[arg-type]
            "clients": len(r.client_list())}
