"""Hundreds of sources: `sluice check`, beat, `sluice status` and a worker's memory with 300.

    python ops/bench/sources.py                 # writes SOURCES.md beside this file
    python ops/bench/sources.py --minutes 1     # a quick look (SOURCES.md only with --out)

1. A sluice.toml with ``--sources`` REST sources (300), each with a schedule: half
   ``every = "10s"`` … ``"60s"``, half cron (``*/1`` … ``*/5 * * * *``), a bearer token from
   the environment, one cursor-paged kind on a fake API on loopback.
2. ``sluice check`` as a user types it (the installed ``sluice`` script), wall time from the
   command to its exit, ``--repeat`` times; beside it the same with a one-source file.
3. A plain ``celery -A tasks worker`` (the app's defaults) on a private redis-server: the RSS
   of its processes (it, its sibling nodes, pool children) once ready with 1 source configured
   and with 300, then after ``sluice run SOURCE --wait`` of 5 of them, and after beat has run
   all 300 for ``--minutes``. CPU seconds are given beside wall seconds: the machine this
   runs on is shared, and its load inflates wall time.
4. ``celery -A tasks beat`` for ``--minutes``. For every source and every time it was due, the
   difference between that time and (a) beat sending its task (beat's log), (b) its run
   starting (the run record's ``started_at``, written by the worker that took the task). Due
   times: an ``every`` source's grid from when beat made its entry (RedBeat's first
   ``last_run_at``, + k × every), a cron source's minute boundaries. A due time with no run
   within half a period is "missed"; the lag per minute shows whether it grows.
5. Redis then also holds ``--records`` more run records (copies of the real ones, older), and
   ``sluice status`` is timed on a terminal (a pty: the rich table), piped, ``--json``, and
   ``--limit 300``.

Every process runs the code of the checkout this file is in (PYTHONPATH), so the same script
measures another checkout when copied into it.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from redbeat.decoder import RedBeatJSONDecoder  # noqa: E402

from integrations.fakeapi import FakeAPI  # noqa: E402
from tasks.operator.redisserver import RedisServer  # noqa: E402
from tasks.operator.supervisor import Child, celery, child_pids  # noqa: E402
from tasks.runs import keys  # noqa: E402
from tasks.runs.progress import Progress  # noqa: E402

HERE = Path(__file__).resolve().parent
SLUICE = str(Path(sys.executable).with_name("sluice"))  # the script `pip install` made
TOKEN_ENV = "BENCH_SOURCES_TOKEN"
BEAT_PREFIX = "sluice:beat:"  # redbeat_key_prefix in tasks/app.py
CRON_STEPS = (1, 2, 3, 5)  # minutes; each divides 60, so */N is a plain every-N-minutes


def every_of(i: int) -> int | None:
    """Source i's interval in seconds (10 … 60), or None when it runs on a cron schedule."""
    return 10 + (i * 7) % 51 if i % 2 == 0 else None


def cron_step(i: int) -> int:
    return CRON_STEPS[(i // 2) % len(CRON_STEPS)]


def source_name(i: int) -> str:
    return f"src{i:03d}"


def write_config(path: Path, api_url: str, n: int) -> Path:
    """A sluice.toml with ``n`` scheduled REST sources of the fake API."""
    parts = [f'[target]\npath = "{path.parent / "sluice.db"}"\n']
    for i in range(n):
        name, every = source_name(i), every_of(i)
        when = f'every = "{every}s"' if every else f'schedule = "*/{cron_step(i)} * * * *"'
        parts.append(f"""
[sources.{name}]
integration = "rest"
base_url = "{api_url}"
auth = {{ type = "bearer", token = "${{{TOKEN_ENV}}}" }}
{when}

[sources.{name}.kinds.item]
path = "/cursor/item"
items = "data"
paginator = {{ type = "cursor", cursor_path = "next_cursor", cursor_param = "cursor", limit = 50 }}
""")
    path.write_text("".join(parts))
    return path


def environment(config: Path, redis_url: str) -> dict[str, str]:
    return {"SLUICE_CONFIG": str(config), "SLUICE_REDIS_URL": redis_url,
            TOKEN_ENV: "bench-token-0123456789", "PYTHONPATH": str(ROOT)}


def wall(argv: list[str], env: dict[str, str], *, tty: bool = False) -> tuple[float, float]:
    """Seconds from starting ``argv`` to its exit (it must exit 0), and the CPU seconds it
    used (user + system: what a busy machine does not inflate); ``tty``: its stdout is a
    terminal (a pty), as when a person types the command."""
    full_env = {**os.environ, **env}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    if not tty:
        start = time.perf_counter()
        done = subprocess.run(argv, env=full_env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
        seconds = time.perf_counter() - start
    else:
        master, slave = os.openpty()
        drain = threading.Thread(target=_drain, args=(master,), daemon=True)
        drain.start()
        start = time.perf_counter()
        done = subprocess.run(argv, env=full_env, stdout=slave, stderr=subprocess.PIPE)
        seconds = time.perf_counter() - start
        os.close(slave)
        drain.join(5)
        os.close(master)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} exited {done.returncode}: "
                           f"{done.stderr.decode(errors='replace')[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 65536):
            pass
    except OSError:
        pass


def timed(argv: list[str], env: dict[str, str], repeat: int, *, tty: bool = False
          ) -> list[tuple[float, float]]:
    wall(argv, env, tty=tty)  # the first run fills the page cache; not counted
    return [wall(argv, env, tty=tty) for _ in range(repeat)]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def node_rss(pid: int) -> tuple[int, float, float]:
    """A worker node's processes (the one started and its descendants: sibling nodes, pool
    children): how many, their RSS summed and the largest one's (MB)."""
    pids, todo = [], [pid]
    while todo:
        parent = todo.pop()
        pids.append(parent)
        todo += child_pids(parent)
    sizes = [rss_mb(p) for p in pids]
    return len(sizes), sum(sizes), max(sizes)


def start_worker(env: dict[str, str], log: Path) -> tuple[Child, float]:
    """A plain ``celery -A tasks worker`` (the app's defaults); seconds to
    'ready.'."""
    child = Child("worker", celery("worker", "--loglevel", "INFO", "-n", "bench@%h"),
                  log=log, env=env, cwd=ROOT)
    start = time.monotonic()
    child.start()
    child.wait_until(lambda: "ready." in log.read_text(errors="replace"), timeout=300)
    ready = time.monotonic() - start
    time.sleep(3)  # its first heartbeats and the broker's consumer settle
    return child, ready


# -- beat: due times against sends and run starts --------------------------------------------

_SENT = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): INFO/MainProcess\] "
                   r"Scheduler: Sending due task resync-(src\d+) ")


def sends(log: Path) -> dict[str, list[float]]:
    """Source -> the times beat sent its task, from beat's log (local time, as it writes)."""
    found: dict[str, list[float]] = defaultdict(list)
    for line in log.read_text(errors="replace").splitlines():
        m = _SENT.match(line)
        if m:
            found[m[2]].append(datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return found


def anchors(r: redis.Redis, n: int) -> dict[str, float]:
    """Source -> the time its beat entry was created (RedBeat's first ``last_run_at``): an
    ``every`` source is first due one interval after it, then on that grid."""
    found = {}
    for i in range(n):
        meta = r.hget(f"{BEAT_PREFIX}resync-{source_name(i)}", "meta")
        if meta:
            made = RedBeatJSONDecoder().decode(meta.decode())["last_run_at"]
            found[source_name(i)] = made.timestamp()
    return found


def due_times(i: int, anchor: float, stop: float) -> tuple[list[float], float]:
    """Source i's due times after ``anchor`` (its entry made) and before ``stop``, and its
    period in seconds."""
    every = every_of(i)
    if every:
        return [anchor + k * every for k in range(1, int((stop - anchor) // every) + 1)
                if anchor + k * every < stop], float(every)
    step = 60 * cron_step(i)
    start = (int(anchor) // step + 1) * step  # the first boundary after beat started
    return list(range(start, int(stop), step)), float(step)


def match(dues: list[float], times: list[float], period: float) -> list[float | None]:
    """Each due time's lag: the first time not yet taken from ``due - 0.5`` on, within half a
    period (None: missed)."""
    pool, lags = sorted(times), []
    for due in dues:
        hit = next((t for t in pool if due - 0.5 <= t < due + period / 2), None)
        if hit is None:
            lags.append(None)
            continue
        pool.remove(hit)
        lags.append(hit - due)
    return lags


def beat_phase(a: argparse.Namespace, env: dict[str, str], tmp: Path, progress: Progress
               ) -> dict[str, Any]:
    log = tmp / "beat.log"
    beat = Child("beat", celery("beat", "--loglevel", "INFO", "--schedule",
                                str(tmp / "celerybeat-schedule")),
                 log=log, env=env, cwd=ROOT).start()
    try:
        beat.wait_until(lambda: len(anchors(progress.r, a.sources)) == a.sources, timeout=120)
        began = anchors(progress.r, a.sources)
        time.sleep(a.minutes * 60)
    finally:
        beat.stop(timeout=30)
    stop = time.time()
    deadline = time.monotonic() + 180
    while any(r.state == "running" for r in progress.recent(100_000)):
        if time.monotonic() > deadline:
            break
        time.sleep(1)
    sent = sends(log)
    first = min(began.values())
    started: dict[str, list[float]] = defaultdict(list)
    states: dict[str, int] = defaultdict(int)
    for run in progress.recent(100_000):
        started[run.source].append(run.started_at)
        states[run.state] += 1
    rows: list[tuple[float, float | None, float | None]] = []  # due, send lag, start lag
    for i in range(a.sources):
        name = source_name(i)
        dues, period = due_times(i, began[name], stop - 2)
        rows += zip(dues, match(dues, sent[name], period),
                    match(dues, started[name], period), strict=True)
    return {"rows": rows, "first": first, "stop": stop, "states": dict(states),
            "sends": sum(map(len, sent.values()))}


# -- status: many run records -----------------------------------------------------------------

def add_records(progress: Progress, n: int) -> int:
    """``n`` more run records, copies of the real ones under new ids, older than them."""
    r = progress.r
    real = [progress.r.hgetall(keys.run(run.run_id)) for run in progress.recent(1000)]
    real = [record for record in real if record]
    oldest = min(float(rec[b"started_at"]) for rec in real)
    pipe = r.pipeline(transaction=False)
    for k in range(n):
        record = dict(real[k % len(real)])
        when = oldest - 60 - k * 7.0
        run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime(when)) + f"-old{k:05d}"
        record[b"run_id"] = run_id.encode()
        record[b"started_at"] = repr(when).encode()
        pipe.hset(keys.run(run_id), mapping=record)
        pipe.expire(keys.run(run_id), progress.ttl)
        pipe.zadd(keys.RUNS, {run_id: when})
        if k % 1000 == 999:
            pipe.execute()
    pipe.execute()
    return int(r.zcard(keys.RUNS))


# -- the report -------------------------------------------------------------------------------

def spread(values: list[tuple[float, float]]) -> str:
    """Wall seconds (median | max), then CPU seconds (median)."""
    walls, cpus = [w for w, _ in values], [c for _, c in values]
    return f"{statistics.median(walls):.2f} | {max(walls):.2f} | {statistics.median(cpus):.2f}"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def lag_table(beat: dict[str, Any]) -> list[str]:
    lines = ["| minute | due | sent | started | missed | send lag p50 / max (s) "
             "| start lag p50 / p99 / max (s) |", "|---|---|---|---|---|---|---|"]
    by_minute: dict[int, list[tuple[float, float | None, float | None]]] = defaultdict(list)
    for row in beat["rows"]:
        by_minute[int((row[0] - beat["first"]) // 60)].append(row)
    for minute in [*sorted(by_minute), None]:
        rows = beat["rows"] if minute is None else by_minute[minute]
        sent = [s for _, s, _ in rows if s is not None]
        began = [s for _, _, s in rows if s is not None]
        missed = sum(1 for _, _, s in rows if s is None)
        label = "all" if minute is None else f"{minute + 1}"
        lines.append(
            f"| {label} | {len(rows)} | {len(sent)} | {len(began)} | {missed} | "
            + (f"{statistics.median(sent):.3f} / {max(sent):.3f} | " if sent else "– | ")
            + (f"{statistics.median(began):.3f} / {pct(began, 0.99):.3f} / {max(began):.3f} |"
               if began else "– |"))
    return lines


def report(a: argparse.Namespace, m: dict[str, Any]) -> str:
    cmd = "python ops/bench/sources.py" + "".join(
        f" --{k} {v}" for k, v in (("sources", a.sources), ("minutes", a.minutes),
                                   ("records", a.records), ("repeat", a.repeat))
        if v != DEFAULTS[k])
    n = a.sources
    out = [f"# {n} sources", "",
           f"`{cmd}` — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
           f"{os.cpu_count()} cores shared with other work (load average "
           f"{os.getloadavg()[0]:.1f} at the end); seconds from the command to its exit (median "
           f"and max of {a.repeat}, after one unmeasured run), and the CPU seconds it used "
           "(user + system).", "",
           "## `sluice check`, `sluice status`", "",
           "| command | sources | run records in Redis | wall median | wall max | CPU median |",
           "|---|---|---|---|---|---|"]
    for label, sources, records, values in m["commands"]:
        out.append(f"| `{label}` | {sources} | {records} | {spread(values)} |")
    out += ["", "## A worker's memory (a plain `celery -A tasks worker`, its app defaults)", "",
            "| worker | sources configured | sources run | processes | RSS, all (MB) "
            "| RSS, largest process (MB) | start to ready (s) |",
            "|---|---|---|---|---|---|---|"]
    for label, configured, ran, processes, total, largest, ready in m["rss"]:
        out.append(f"| {label} | {configured} | {ran} | {processes} | {total:.1f} | "
                   f"{largest:.1f} | {'' if ready is None else f'{ready:.1f}'} |")
    beat = m["beat"]
    out += ["", f"## Beat, {a.minutes:g} minutes, {n} sources", "",
            f"Beat sent {beat['sends']} tasks; the runs: "
            + ", ".join(f"{v} {k}" for k, v in sorted(beat["states"].items()))
            + ". A new entry is first due one interval after beat made it (a cron entry: "
            "at its next fire time), then on its grid; a minute is that of the due time, "
            "counted from beat's start.", "", *lag_table(beat)]
    return "\n".join(out) + "\n"


DEFAULTS = {"sources": 300, "minutes": 4.0, "records": 20_000, "repeat": 5}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sources", type=int, default=DEFAULTS["sources"])
    p.add_argument("--minutes", type=float, default=DEFAULTS["minutes"],
                   help="how long beat runs")
    p.add_argument("--records", type=int, default=DEFAULTS["records"],
                   help="run records added before `sluice status` is timed")
    p.add_argument("--repeat", type=int, default=DEFAULTS["repeat"])
    p.add_argument("--out", type=Path, help="write the report here (default: SOURCES.md beside "
                   "this file, at the default sizes only)")
    a = p.parse_args()
    m: dict[str, Any] = {"commands": [], "rss": []}
    with (tempfile.TemporaryDirectory(prefix="bench-sources-") as tmpdir, FakeAPI() as api,
          RedisServer() as server):
        tmp = Path(tmpdir)
        api.set_items("item", 5)
        (tmp / "one").mkdir()
        one = write_config(tmp / "one" / "sluice.toml", api.url, 1)
        many = write_config(tmp / "sluice.toml", api.url, a.sources)
        env_one, env = environment(one, server.url), environment(many, server.url)
        for config, count in ((one, 1), (many, a.sources)):
            m["commands"].append(("sluice check", count, 0, timed(
                [SLUICE, "--config", str(config), "check"], env, a.repeat)))
        worker, ready = start_worker(env_one, tmp / "worker1.log")
        m["rss"].append(("ready", 1, 0, *node_rss(worker.pid), ready))
        worker.stop()
        worker, ready = start_worker(env, tmp / "worker.log")
        try:
            m["rss"].append(("ready", a.sources, 0, *node_rss(worker.pid), ready))
            for i in range(5):
                subprocess.run([SLUICE, "run", source_name(i * 37 % a.sources), "--wait"],
                               check=True, env={**os.environ, **env}, stdout=subprocess.DEVNULL)
            m["rss"].append(("after `sluice run --wait` of 5", a.sources, 5,
                             *node_rss(worker.pid), None))
            progress = Progress(redis.Redis.from_url(server.url))
            m["beat"] = beat_phase(a, env, tmp, progress)
            ran = len({run.source for run in progress.recent(100_000)})
            m["rss"].append((f"after beat ({a.minutes:g} min)", a.sources, ran,
                             *node_rss(worker.pid), None))
        finally:
            worker.stop()
        records = add_records(progress, a.records)
        for label, argv, tty in (
                ("sluice status", [], True), ("sluice status | cat", [], False),
                ("sluice status --json", ["--json"], False),
                ("sluice status --limit 300", ["--limit", "300"], True)):
            m["commands"].append((label, a.sources, records, timed(
                [SLUICE, "status", *argv], env, a.repeat, tty=tty)))
    text = report(a, m)
    print(text)
    default = all(getattr(a, k) == v for k, v in DEFAULTS.items())
    out = a.out or (HERE / "SOURCES.md" if default else None)
    if out:
        out.write_text(text)
        print(f"written to {out}")


if __name__ == "__main__":
    main()
