"""How soon ``sluice run`` has its first message in Redis: seconds (and the command's CPU
seconds) from exec to the message, its start request (``tasks/operator/thin.py``) or, the
ordinary way, its producer task.

    python ops/bench/runstart.py                 # 10 times, this checkout
    PYTHONPATH=/path/to/other/checkout python ops/bench/runstart.py   # another version

A private Redis with no worker: a client waits (BLPOP) on the wake lists the message's token
lands in (``tasks.envelope``), and the clock stops when it wakes; the command is then killed
(with no worker, the thin way would wait ``FIRST_REPLY`` and start the run itself). CPU seconds
come from ``/proc/PID/stat`` at that moment (10 ms ticks).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from tasks import envelope
from tasks.operator.redisserver import RedisServer
from tasks.runs import keys

CONFIG = """[sources.x]
integration = "rest"
base_url = "http://127.0.0.1:9"

[sources.x.kinds.k]
path = "/k"
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=10)
    p.add_argument("--sluice", default=str(Path(sys.executable).parent / "sluice"))
    a = p.parse_args()
    wakes = [keys.fetch_wake(envelope.URGENT), keys.fetch_wake(envelope.PRODUCERS)]
    seconds, cpu = [], []
    with tempfile.TemporaryDirectory() as tmp, RedisServer() as server:
        (Path(tmp) / "sluice.toml").write_text(CONFIG)
        r = redis.Redis.from_url(server.url)
        env = {**os.environ, "SLUICE_REDIS_URL": server.url}
        env.pop("SLUICE_CONFIG", None)
        env.pop("SLUICE_BROKER_URL", None)
        for _ in range(a.n):
            r.flushdb()
            start = time.time()
            proc = subprocess.Popen([a.sluice, "run", "x"], cwd=tmp, env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            got = r.blpop(wakes, 30)
            seconds.append(time.time() - start)
            cpu.append(cpu_seconds(proc.pid))
            proc.kill()
            proc.wait()
            assert got, "`sluice run` sent nothing in 30 s"
            time.sleep(0.2)
        r.close()
    load = " / ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"exec to message (s): {' '.join(f'{s:.3f}' for s in seconds)}; "
          f"median {statistics.median(seconds):.3f}")
    print(f"CPU s of `sluice run` by then: {' '.join(f'{c:.2f}' for c in cpu)}; "
          f"median {statistics.median(cpu):.2f}")
    print(f"load average (1/5/15 min): {load}")


if __name__ == "__main__":
    main()
