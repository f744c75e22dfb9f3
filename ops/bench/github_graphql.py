"""GitHub issues and their comments through REST and through GraphQL (``graphql = true``):
requests and seconds of one run each, on the GitHub fake's organisation.

    python ops/bench/github_graphql.py               # table to GITHUB_GRAPHQL.md

The organisation: ``--repos`` repositories of ``--issues`` issues (and 40 pull requests, which
the issues endpoint lists and REST drops), two comments each, and one issue with
``--big`` comments (more than GraphQL's 100 a page). Every answer takes ``--latency``
seconds (each latency given is measured in turn). Both runs read kinds ``issue`` and
``issue_comment`` into typed tables, and the rows are compared (every column but ``_raw``
and the run's bookkeeping).

Everything is local: the fake in this process, a Redis server, one plain
``celery -A tasks worker`` (the defaults), a SQLite target.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from bench import Workers  # noqa: E402
from celery import Celery  # noqa: E402
from redis import Redis  # noqa: E402

from integrations.github.fake import FakeGithub  # noqa: E402
from tasks import messages  # noqa: E402
from tasks.operator.redisserver import RedisServer  # noqa: E402
from tasks.runs.progress import Progress, Run  # noqa: E402
from tasks.targets.typed import FIXED  # noqa: E402

SOURCE = """
[sources.{name}]
integration = "github"
org = "{org}"
token = "{token}"
base_url = "{url}"
kinds = ["issue", "issue_comment"]
graphql = {graphql}
"""
PATHS = {"rest": "REST (v3)", "gql": "GraphQL (v4), `graphql = true`"}


def measure(gh: FakeGithub, progress: Progress, app: Celery, source: str
            ) -> tuple[Run, float, dict[str, int]]:
    """One run of ``source``'s issues (their comments as children): its record, its seconds,
    and the requests it made by method."""
    with gh.server.lock:
        gh.state.log.clear()
    start = time.time()
    run = progress.create_run(source, "issue")
    messages.resync(app, source, "issue", run.run_id)
    while not (got := progress.get(run.run_id)) or not got.state.ended:
        time.sleep(0.05)
    if got.state != "succeeded":
        raise SystemExit(f"{source}: the run did not succeed: {got}")
    with gh.server.lock:
        methods = [r[1] for r in gh.state.log]
    return got, (got.ended_at or time.time()) - start, {m: methods.count(m) for m in
                                                         ("GET", "POST")}


def table(db: Path, name: str) -> dict[str, Any]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return {r["identifier"]: {k: v for k, v in dict(r).items() if k not in FIXED}
                for r in conn.execute(f"SELECT * FROM {name}")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repos", type=int, default=3)
    p.add_argument("--issues", type=int, default=150, help="issues per repository")
    p.add_argument("--big", type=int, default=230, help="comments of repo0's issue 7")
    p.add_argument("--latency", type=float, nargs="+", default=[0.1, 0.0],
                   help="seconds per answer (each measured)")
    a = p.parse_args()
    command = "python ops/bench/github_graphql.py " + " ".join(map(shlex.quote, sys.argv[1:]))
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp, RedisServer() as server, \
            FakeGithub(repos=a.repos, default_size=(a.issues, 40)) as gh:
        gh.comment_counts[(0, 7)] = a.big
        db, config = Path(tmp) / "bench.db", Path(tmp) / "sluice.toml"
        config.write_text(f'[target]\npath = "{db}"\n' + "".join(
            SOURCE.format(name=name, org=gh.org, token=gh.token, url=gh.url,
                          graphql=str(name == "gql").lower()) for name in PATHS))
        workers = Workers(config, server.url, 1, Path(tmp) / "worker.log", threads=0)
        app = Celery(broker=server.url)
        app.conf.update(task_serializer="json", task_default_queue="sluice")
        progress = Progress(Redis.from_url(server.url))
        try:
            runs = {}
            for latency in a.latency:
                gh.server.latency = latency
                runs |= {(latency, name): measure(gh, progress, app, name) for name in PATHS}
        finally:
            workers.stop()
            app.close()
        same = all(table(db, f"rest_{k}") == table(db, f"gql_{k}")
                   for k in ("issue", "issue_comment"))
    rows = ["| latency | path | issues | comments | requests (GET + POST) | seconds |",
            "|---:|---|---:|---:|---:|---:|"]
    for (latency, name), (run, seconds, asked) in runs.items():
        rows.append(f"| {latency * 1000:.0f} ms | {PATHS[name]} | "
                    f"{run.own('items_written'):,} | "
                    f"{run.children['issue_comment']['items_written']:,} | "
                    f"{sum(asked.values()):,} ({asked['GET']:,} + {asked['POST']:,}) | "
                    f"{seconds:.2f} |")
    (_, rest_s, rest_n), (_, gql_s, gql_n) = (runs[a.latency[0], n] for n in PATHS)
    text = (
        "# GitHub through REST and through GraphQL\n\n"
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} "
        f"cores ({platform.machine()}, Python {platform.python_version()}), with "
        f"`{command.strip()}`; one plain `celery -A tasks worker`, SQLite target.\n\n"
        f"The GitHub fake's organisation: {a.repos} repositories of {a.issues} issues (and 40 "
        f"pull requests each), 2 comments an issue, one issue with {a.big}. Kinds `issue` "
        "and `issue_comment`, typed tables.\n\n" + "\n".join(rows) + "\n\n"
        f"GraphQL: {sum(rest_n.values()) / sum(gql_n.values()):.0f}× fewer requests, "
        f"{rest_s / gql_s:.1f}× faster at {a.latency[0] * 1000:.0f} ms an answer. The "
        "typed rows of both are "
        f"{'the same' if same else 'NOT the same'} (every column but `_raw` and the run's "
        "bookkeeping). REST asks for the repositories, the pages of issues (pull requests "
        "included, then dropped) and the comments of every issue, one request each; GraphQL "
        "asks for the repositories (REST), the pages of issues with the first 100 comments "
        "of each, and the nested pages of the one issue with more.\n")
    (HERE / "GITHUB_GRAPHQL.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
