"""Who holds Redis's clients: the soak's ``--conns`` probe (``soak.py``).

Every ``every`` seconds, Redis's ``CLIENT LIST`` is matched to the processes on this machine:
a client's address is a local TCP port here, and psutil tells which process owns the socket
bound to it. Each client is then counted under its process's role (the first worker node, its
siblings, beat, serve, a ``sluice run``, the soak itself) and under its ``name`` (Sluice names
its connections: ``tasks/runs/client.py``) and the last command it ran (``cmd``); ``idle`` says
how long it has been unused. A pool that keeps connections it no longer needs shows as a count
that rises in steps with its idle connections' ``idle`` growing without end.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import redis

IDLE = 60  # seconds unused after which a client counts as idle in the summary


def roles(worker: int, named: dict[str, int]) -> dict[int, str]:
    """pid -> role: ``named`` (role -> pid), the first worker node's siblings as
    ``worker-N`` (their own node name's number), every other process of this machine by the
    first words of its command line."""
    found = {pid: role for role, pid in named.items()}
    try:
        kids = psutil.Process(worker).children()
    except psutil.NoSuchProcess:
        kids = []
    for n, kid in enumerate(sorted(kids, key=lambda p: p.pid), start=1):
        found.setdefault(kid.pid, f"worker-{n}")
    return found


def role_of(pid: int | None, known: dict[int, str]) -> str:
    if pid is None:
        return "?"
    if pid in known:
        return known[pid]
    try:
        argv = psutil.Process(pid).cmdline()
    except psutil.Error:
        return "?"
    words = [w for w in argv if not w.startswith("-")]
    if "run" in words:
        return "sluice-run"
    return " ".join(Path(w).name for w in words[:3]) or "?"


def sample(r: redis.Redis, known: dict[int, str], port: int) -> list[dict[str, Any]]:
    """Every client: its role, name, last command and idle seconds. Only sockets connected to
    Redis's ``port`` count: another server's client may use the same local port."""
    ports = {c.laddr.port: c.pid for c in psutil.net_connections("tcp")
             if c.laddr and c.raddr and c.raddr.port == port
             and c.status == psutil.CONN_ESTABLISHED and c.pid is not None}
    out = []
    for c in r.client_list():
        host, _, port = str(c.get("addr", "")).rpartition(":")
        pid = ports.get(int(port)) if port.isdigit() and host in ("127.0.0.1", "[::1]",
                                                                  "::1") else None
        out.append({"role": role_of(pid, known), "pid": pid, "name": c.get("name") or "-",
                    "cmd": c.get("cmd", "?"), "idle": int(c.get("idle", 0)),
                    "age": int(c.get("age", 0))})
    return out


class Probe(threading.Thread):
    """Samples every ``every`` seconds into ``path`` (one JSON line each) and ``rows``."""

    def __init__(self, url: str, worker: int, named: dict[str, int], path: Path, *,
                 every: float = 15.0) -> None:
        super().__init__(daemon=True, name="soak-conns")
        self.r = redis.Redis.from_url(url, client_name="soak-probe")
        self.worker, self.named, self.path, self.every = worker, named, path, every
        self.port = int(self.r.connection_pool.connection_kwargs.get("port", 6379))
        self.rows: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        with self.path.open("w") as out:
            while True:
                self.look(out)
                if self.stop.wait(self.every):
                    self.look(out)
                    return

    def look(self, out: Any) -> None:
        try:
            clients = sample(self.r, roles(self.worker, self.named), self.port)
        except (redis.RedisError, psutil.Error) as exc:
            clients = [{"role": "error", "name": str(exc), "cmd": "", "idle": 0, "pid": None,
                        "age": 0}]
        row = {"minute": (time.monotonic() - self.t0) / 60, "clients": clients,
               "sockets": sockets(self.worker, self.port)}
        self.rows.append(row)
        out.write(json.dumps(row) + "\n")
        out.flush()


def sockets(worker: int, redis_port: int) -> dict[str, dict[str, int]]:
    """The worker nodes' sockets (the first node, its siblings): TCP to Redis, other TCP (the
    API, a target), and the rest (unix sockets, socket pairs)."""
    out = {}
    try:
        procs = [psutil.Process(worker), *psutil.Process(worker).children()]
    except psutil.Error:
        return {}
    for n, proc in enumerate(procs):
        try:
            tcp = proc.net_connections("tcp")
            fds = proc.num_fds()
            allsocks = len(proc.net_connections("all"))
        except psutil.Error:
            continue
        to_redis = sum(1 for c in tcp if c.raddr and c.raddr.port == redis_port)
        out["worker" if n == 0 else f"worker-{n}"] = {
            "fds": fds, "redis": to_redis, "other_tcp": len(tcp) - to_redis,
            "other": allsocks - len(tcp)}
    return out


def per_role(clients: list[dict[str, Any]]) -> Counter[str]:
    return Counter(c["role"] for c in clients)


_SERIAL = re.compile(r"^sluice-(.+)-\d+-\d+$")


def pool_kind(name: str) -> str:
    """``sluice-broker-fetch-1234-7`` -> ``broker-fetch``: the kind of pool that named it
    (``SLUICE_REDIS_CLIENT_NAMES``: role, pid, the pool's number in its process)."""
    found = _SERIAL.match(name)
    return found.group(1) if found else name


def report(rows: list[dict[str, Any]]) -> str:
    """Clients per process over time (the idle ones beside them), then the last sample's
    clients per process and kind of pool: connections, pools, idle ones."""
    if not rows:
        return ""
    order = sorted({c["role"] for row in rows for c in row["clients"]},
                   key=lambda r: (not r.startswith("worker"), r))
    text = ["## Redis clients per process (the `--conns` probe)", "",
            f"Each cell: clients (of which unused for over {IDLE} s).", "",
            "| min | " + " | ".join(order) + " |", "|---:" * (len(order) + 1) + "|"]
    for row in rows:
        counts = per_role(row["clients"])
        idle = per_role([c for c in row["clients"] if c["idle"] >= IDLE])
        text.append(f"| {row['minute']:.1f} | "
                    + " | ".join(f"{counts[r]} ({idle[r]})" for r in order) + " |")
    kinds = sorted({(c["role"], pool_kind(c["name"])) for row in rows for c in row["clients"]
                    if c["role"].startswith("worker")})
    if any(k != "-" for _, k in kinds):
        text += ["", "The worker nodes' clients by kind of pool (names: "
                 "`SLUICE_REDIS_CLIENT_NAMES=1`):", "",
                 "| min | " + " | ".join(f"{r} {k}" for r, k in kinds) + " |",
                 "|---:" * (len(kinds) + 1) + "|"]
        for row in rows:
            got = Counter((c["role"], pool_kind(c["name"])) for c in row["clients"])
            text.append(f"| {row['minute']:.1f} | " + " | ".join(str(got[k]) for k in kinds)
                        + " |")
    nodes = sorted({n for row in rows for n in row.get("sockets", {})})
    if nodes:
        text += ["", "The worker nodes' sockets: TCP to Redis / other TCP (the API) / other "
                 "(unix, pairs); and open fds.", "",
                 "| min | " + " | ".join(nodes) + " |", "|---:" * (len(nodes) + 1) + "|"]
        for row in rows:
            got = row.get("sockets", {})
            text.append(f"| {row['minute']:.1f} | " + " | ".join(
                f"{s['redis']} / {s['other_tcp']} / {s['other']}; {s['fds']} fds"
                if (s := got.get(n)) else "" for n in nodes) + " |")
    last = rows[-1]["clients"]
    conns = Counter((c["role"], pool_kind(c["name"])) for c in last)
    idle_k = Counter((c["role"], pool_kind(c["name"])) for c in last if c["idle"] >= IDLE)
    pools = Counter((c["role"], pool_kind(c["name"])) for c in {c["name"]: c for c in last
                                                                 if c["name"] != "-"}.values())
    cmds: dict[tuple[str, str], Counter[str]] = {}
    for c in last:
        cmds.setdefault((c["role"], pool_kind(c["name"])), Counter())[c["cmd"]] += 1
    text += ["", f"At {rows[-1]['minute']:.1f} min, by kind of pool (names: "
             "`SLUICE_REDIS_CLIENT_NAMES=1`):", "",
             "| process | pool | clients | pools | unused over a minute | last commands |",
             "|---|---|---:|---:|---:|---|"]
    for key, n in sorted(conns.items()):
        top = ", ".join(f"{cmd} {k}" for cmd, k in cmds[key].most_common(4))
        text.append(f"| {key[0]} | {key[1]} | {n} | {pools[key] or '-'} | {idle_k[key]} | "
                    f"{top} |")
    return "\n".join(text) + "\n"
