"""What the bulk benchmark reads from outside the processes it measures: CPU seconds and peak
RSS from /proc, Redis's own counters (INFO cpu, commandstats, stats), the CPU of the
PostgreSQL backends a pipeline connected with (found by ``application_name``), and py-spy
profiles bucketed into the pipeline's stages.

Nothing here changes the code measured: py-spy reads the process's memory from outside
(``--nonblocking``: it does not even pause it), and the rest is /proc and INFO.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tasks.operator.supervisor import child_pids  # ops/bench/bulk.py puts the checkout on the path

TICK = os.sysconf("SC_CLK_TCK")
APP_NAME = "bench-bulk"  # PGAPPNAME of every process measured; the benchmark's own is another


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the process's peak resident set so far."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class RedisCounters:
    """INFO deltas between ``start()`` and ``stop()``: Redis's CPU, commands by name, bytes."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.before: dict[str, Any] = {}
        self.delta: dict[str, Any] = {}

    def read(self) -> dict[str, Any]:
        info = self.client.info("all")
        return {"cpu": float(info["used_cpu_sys"]) + float(info["used_cpu_user"]),
                "in": int(info["total_net_input_bytes"]),
                "out": int(info["total_net_output_bytes"]),
                "peak_mb": int(info["used_memory_peak"]) / 2**20,
                "commands": {k.removeprefix("cmdstat_"): int(v["calls"])
                             for k, v in info.items() if k.startswith("cmdstat_")}}

    def start(self) -> None:
        self.before = self.read()

    def stop(self) -> dict[str, Any]:
        after, before = self.read(), self.before
        commands = {k: v - before["commands"].get(k, 0) for k, v in after["commands"].items()}
        commands.pop("info", None)  # this class's own
        self.delta = {"cpu": after["cpu"] - before["cpu"], "in": after["in"] - before["in"],
                      "out": after["out"] - before["out"], "peak_mb": after["peak_mb"],
                      "commands": {k: v for k, v in commands.items() if v}}
        return self.delta


class PostgresBackends:
    """The CPU of the backends serving connections named ``APP_NAME``, sampled while they
    live (a backend's CPU is read last just before its client disconnects, so a pipeline that
    exits loses at most one sampling interval of it)."""

    def __init__(self, dsn: str | None, *, every: float = 0.05) -> None:
        self.dsn, self.every = dsn, every
        self.seen: dict[int, float] = {}
        self.base: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def pids(self, conn: Any) -> list[int]:
        return [r[0] for r in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (APP_NAME,))]

    def start(self) -> None:
        if not self.dsn:
            return
        import psycopg

        conn = psycopg.connect(self.dsn, autocommit=True, application_name=f"{APP_NAME}-meter")
        self.base = {pid: cpu_seconds(pid) for pid in self.pids(conn)}

        def sample() -> None:
            with conn:
                while not self._stop.is_set():
                    for pid in self.pids(conn):
                        self.seen[pid] = max(self.seen.get(pid, 0.0), cpu_seconds(pid))
                    self._stop.wait(self.every)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()

    def stop(self) -> float:
        """CPU seconds the backends used since ``start()``."""
        if self._thread is None:
            return 0.0
        self._stop.set()
        self._thread.join()
        return sum(cpu - self.base.get(pid, 0.0) for pid, cpu in self.seen.items())


class Watch:
    """Polls ``ready()`` every 10 ms in a thread; ``at`` is when it first said True."""

    def __init__(self, ready: Callable[[], bool]) -> None:
        self.at: float | None = None
        self._stop = threading.Event()

        def poll() -> None:
            while not self._stop.is_set():
                try:
                    if ready():
                        self.at = time.time()
                        return
                except Exception:  # not there yet (no table, no file)
                    pass
                self._stop.wait(0.01)

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()

    def stop(self) -> float | None:
        self._stop.set()
        self._thread.join()
        return self.at


# --- py-spy ---------------------------------------------------------------------------------

def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each of the process's threads so far, by native thread id."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / TICK
    return out


class Spy:
    """``py-spy record --format raw --threads`` on each of a node's processes until ``stop()``,
    and the CPU each of their threads used meanwhile (from /proc: exact, where samples are a
    share). Native thread ids are the machine's, so the processes' profiles add up."""

    def __init__(self, pids: list[int], out: Path, *, rate: int = 50, gil: bool = False
                 ) -> None:
        self.pids, self.outs = pids, [out.with_suffix(f".{pid}{out.suffix}") for pid in pids]
        self.procs = [subprocess.Popen(
            ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--function",
             "--threads", "--nonblocking", "--rate", str(rate), "--output", str(path),
             *(["--gil"] if gil else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for pid, path in zip(pids, self.outs, strict=True)]
        time.sleep(0.5)  # attached and sampling before the measured work starts
        self.cpu0 = {tid: c for pid in pids for tid, c in thread_cpu(pid).items()}

    def stop(self) -> Profile:
        cpu = {tid: c - self.cpu0.get(tid, 0.0)
               for pid in self.pids for tid, c in thread_cpu(pid).items()}
        stacks: Counter[tuple[str, ...]] = Counter()
        for proc, path in zip(self.procs, self.outs, strict=True):
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
            if not path.exists():
                raise RuntimeError(f"py-spy wrote no profile: {err[-2000:]}")
            stacks.update(read_raw(path.read_text()))
        return Profile(stacks, cpu)


def node_pids(pid: int) -> list[int]:
    """A worker node's processes: the one started, and the siblings it started."""
    return [pid, *child_pids(pid)]


def read_raw(text: str) -> Counter[tuple[str, ...]]:
    """Collapsed stacks (root first: ``thread (TID): NAME``, then the frames) and their sample
    counts."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[tuple(stack.split(";"))] += int(count)
    return stacks


# Stages, by the frames of a sample. A sample's side (producer, worker, Celery's consumer)
# is decided by its thread's name and outermost frames, in the order below; its stage by the
# innermost frame that matches one of the side's rules, in the order given.
@dataclass(frozen=True)
class Rule:
    stage: str
    patterns: tuple[str, ...]

    def matches(self, frame: str) -> bool:
        return any(p in frame for p in self.patterns)


SIDES: list[tuple[str, tuple[str, ...]]] = [
    # The producer task's own thread (publishing, recording), its requests on the process's
    # event loop (a thread of its own), and its Redis calls run in the loop's executor.
    ("producer", ("resync (tasks/resync.py", "Slice.", ": sluice-event-loop", ": asyncio_")),
    # A batch: the pool thread decodes the message (kombu), then runs ingest_batch.
    ("worker", ("ingest_batch (tasks/ingest.py", "fast_trace_task (celery")),
    # Celery's consumer, the main thread: reads messages from Redis (BRPOP, then the body,
    # base64), decodes them, hands each to a pool thread; sends the task events.
    ("consumer", (": MainThread",)),
]
STAGES: dict[str, list[Rule]] = {
    "producer": [
        Rule("backpressure", ("Progress.in_flight", "Slice.admit")),
        Rule("record", ("Progress.record_page", "hashlib", "Slice.check")),
        Rule("publish", ("messages.py", "send_task", "kombu/", "celery/",
                         "batches (tasks/messages")),
        Rule("parse", ("json/decoder", "loads (json", "Response.json", "dig (", "pager.py")),
        Rule("fetch", ("httpx/", "httpcore/", "h11/", "anyio/", "asyncio/", "ssl", "selectors")),
    ],
    "worker": [
        Rule("progress", ("Progress.batch_done", "redis/", "messages.py")),
        Rule("write", ("psycopg", "sqlite3", "tasks/targets/", "Jsonb", "write_entities",
                       "write_mapped")),
        Rule("map", ("to_entities", "mapping.py", "jqsubset", "jq", "Mapping.")),
        Rule("decode message", ("kombu/serialization", "kombu/utils/json")),
        Rule("decode items", ("json/decoder", "loads (json")),
        Rule("config check", ("Runtime.refresh",)),
    ],
    "consumer": [
        Rule("events", ("celery/events", "EventDispatcher", "send_event")),
        Rule("receive", ("redis/", "kombu/transport", "_brpop", "json/", "loads", "base64",
                         "kombu/")),
        Rule("dispatch", ("celery/", "concurrent/futures")),
    ],
    "other": [
        # A pool thread between tasks: woken, handed the GIL, back to its queue.
        Rule("pool hand-offs", ("_worker (concurrent/futures/thread.py",)),
        Rule("events, heartbeats, liveness", ("celery/", "kombu/", "liveness", "redis/")),
    ],
}


def side_of(stack: tuple[str, ...]) -> str:
    for side, marks in SIDES:
        if any(m in frame for frame in stack for m in marks):
            return side
    return "other"


def stage_of(stack: tuple[str, ...], side: str) -> str:
    for frame in reversed(stack[1:]):
        for rule in STAGES.get(side, []):
            if rule.matches(frame):
                return rule.stage
    return "other"


def tid_of(stack: tuple[str, ...]) -> int | None:
    match = re.match(r"thread \((\d+)\)", stack[0]) if stack else None
    return int(match.group(1)) if match else None


@dataclass
class Profile:
    stacks: Counter[tuple[str, ...]] = field(default_factory=Counter)
    cpu: dict[int, float] = field(default_factory=dict)  # native thread id -> CPU seconds

    def seconds(self) -> dict[tuple[str, str], float]:
        """(side, stage) -> CPU seconds: each thread's CPU split by the share of its samples
        in each stage; a thread that used CPU but was never sampled is ("other",
        "unsampled")."""
        by_thread: dict[int | None, Counter[tuple[str, str]]] = {}
        for stack, n in self.stacks.items():
            side = side_of(stack)
            by_thread.setdefault(tid_of(stack), Counter())[(side, stage_of(stack, side))] += n
        out: Counter[tuple[str, str]] = Counter()
        for tid, cpu in self.cpu.items():
            counts = by_thread.get(tid)
            if not counts:
                out[("other", "unsampled")] += cpu
                continue
            total = sum(counts.values())
            for key, n in counts.items():
                out[key] += cpu * n / total
        return dict(out)

    def top(self, side: str | None, n: int = 15) -> list[tuple[str, float]]:
        """The ``n`` frames with the most self samples (the innermost frame of each sample),
        on one side (None: all), as shares of that side's samples."""
        own: Counter[str] = Counter()
        for stack, count in self.stacks.items():
            if len(stack) > 1 and (side is None or side_of(stack) == side):
                own[re.sub(r":\d+\)$", ")", stack[-1])] += count
        total = sum(own.values()) or 1
        return [(frame, c / total) for frame, c in own.most_common(n)]
