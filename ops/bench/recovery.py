"""A worker node SIGKILLed at random instants, 100 times over runs, on a machine kept busy.

    python ops/bench/recovery.py                       # 100 kills on Redis; RECOVERY.md
    python ops/bench/recovery.py --kills 20 --rabbitmq amqp://guest:guest@127.0.0.1:5672//

Two worker nodes with the plain defaults run resyncs of 3,000 items (60 batches) into SQLite
while two busy loops keep both cores busy; a node chosen at random is killed whole (SIGKILL to
its process group) at a random instant, up to three times a run, and started again. Each
kill's recovery time runs from the kill to the end of its run; every run must succeed with
every item written once (tests/support/kills.py, as in tests/integration/test_lost_node.py).
With Redis, the other node gives a dead node's messages back after SLUICE_NODE_TIMEOUT (2 s
here); RabbitMQ redelivers when the connection drops.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from integrations.fakeapi import FakeAPI  # noqa: E402
from tests.support.kills import busy_cores, campaign  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--per-run", type=int, default=3)
    parser.add_argument("--node-timeout", type=float, default=2.0)
    parser.add_argument("--rabbitmq", metavar="URL", help="the queue on RabbitMQ, not Redis")
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--out", type=Path, default=HERE / "RECOVERY.md")
    args = parser.parse_args()
    command = shlex.join(["python", "ops/bench/recovery.py", *sys.argv[1:]])
    broker = "RabbitMQ" if args.rabbitmq else "Redis"
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, FakeAPI() as api, busy_cores(2):
        result = campaign(Path(tmp), api, kills=args.kills, per_run=args.per_run,
                          node_timeout=args.node_timeout, broker_url=args.rabbitmq,
                          seed=args.seed, say=print)
    took = time.monotonic() - started
    for failure in result.failures:
        print(failure[:3000], file=sys.stderr)
    times = sorted(result.recoveries)
    table = [
        f"## {broker}: {len(times)} kills over {len(result.runs)} runs",
        "",
        f"`{command}` — {platform.node()}, {platform.processor() or platform.machine()}, "
        f"two busy loops beside it, {took / 60:.1f} min.",
        "",
        "| kills | runs | runs succeeded, every item once | recovery min | median | max |",
        "|---|---|---|---|---|---|",
        f"| {len(times)} | {len(result.runs)} | "
        f"{len(result.runs) - len(result.failures)} of {len(result.runs)} | "
        + (f"{times[0]:.1f} s | {statistics.median(times):.1f} s | {times[-1]:.1f} s |"
           if times else "– | – | – |"),
        "",
        "<details><summary>each run</summary>",
        "",
        *[f"- {line}" for line in result.runs],
        *[f"- FAILED: {f.splitlines()[0][:300]}" for f in result.failures],
        "",
        "</details>",
        "",
    ]
    text = "\n".join(table)
    print(text)
    previous = args.out.read_text() if args.out.exists() else ""
    header = ("# Recovery from a lost worker node\n\nWritten by `ops/bench/recovery.py`; the newest"
              " section first. See the script's docstring for the scenario.\n\n")
    body = previous.removeprefix(header) if previous.startswith(header) else ""
    args.out.write_text(header + text + "\n" + body)
    return 1 if result.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
