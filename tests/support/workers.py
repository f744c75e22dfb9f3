"""Real Celery worker processes for integration tests (``celery -A tasks worker``, prefork)."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import redis
from celery import Celery

from tasks import messages
from tasks.operator.supervisor import Child, celery
from tasks.runs.progress import Progress, Run, RunState
from tests.support.configs import cursor_kind, rest_source, sqlite_target, toml

ROOT = Path(__file__).resolve().parents[2]  # the repository
# The CLI as a child process (what a user types as `sluice`: the script's entry point, so
# `sluice run` asks the running workers to start its runs, tasks/operator/thin.py).
SLUICE = [sys.executable, "-m", "tasks.operator.entry"]

# Celery's log of a task: "Task NAME[ID] received", then "... succeeded in", "... retry:", ...
TASK_LINE = re.compile(r"Task [\w.]+\[([0-9a-f-]+)\] (\w+)")

FAST_SETTINGS = {
    "SLUICE_INGEST_RETRIES": "3",
    "SLUICE_INGEST_BACKOFF": "0.2",
    "SLUICE_INGEST_MAX_BACKOFF": "1",
    "SLUICE_PRODUCER_SLICE_SECONDS": "5",
    # One process per node, as the tests count them (tasks/worker/siblings.py has its own).
    "SLUICE_WORKER_PROCESSES": "1",
}


def rabbitmq_url() -> str:
    """RabbitMQ for the tests that run the queue on it: $SLUICE_TEST_RABBITMQ_URL (.ci/run sets
    it and fails when the server is missing). Its queues are emptied first: RabbitMQ keeps
    messages across test sessions."""
    import pytest
    from kombu import Connection

    url = os.environ.get("SLUICE_TEST_RABBITMQ_URL")
    if not url:
        pytest.skip("SLUICE_TEST_RABBITMQ_URL is not set (.ci/run sets it; CI fails without it)")
    from amqp.exceptions import NotFound

    # Celery declares the queues (durable, not auto-delete) when a worker starts. A queue not
    # there yet closes the channel: one channel each.
    with Connection(url) as conn:
        for queue in messages.QUEUES:
            with contextlib.suppress(NotFound):
                conn.channel().queue_purge(queue)
    return url


def cursor_config(tmp: Path, api_url: str, *, source: str = "api", kind: str = "item",
                  limit: int = 50, source_keys: str = "") -> Path:
    """A sluice.toml with a SQLite target in ``tmp`` and one cursor-paged kind of the fake API
    (``/cursor/KIND``); ``source_keys`` adds lines to the source's table."""
    path = tmp / "sluice.toml"
    path.write_text(toml(sqlite_target(tmp / "db.sqlite"),
                         rest_source(api_url, source_keys, source=source),
                         cursor_kind(kind, limit=limit, source=source)))
    return path


class Workers:
    """One ``celery worker`` node: ``concurrency`` prefork children, or threads."""

    def __init__(self, *, config: Path, redis_url: str, log: Path, concurrency: int = 2,
                 name: str = "w1", env: dict[str, str] | None = None,
                 pool: str = "prefork") -> None:
        self.pool = pool
        self.config = config
        self.redis_url = redis_url
        self.log = log
        # SLUICE_WORKER_POOL too: Celery reads `-P prefork` as "no pool given" and takes the
        # app's default (threads) instead.
        self.child = Child(
            name, celery("worker", "--pool", pool, "-c", str(concurrency), "-n", f"{name}@%h",
                         "--loglevel", "INFO", "--without-gossip", "--without-mingle",
                         "--without-heartbeat"),
            log=log, cwd=ROOT, env={**FAST_SETTINGS, **(env or {}), "SLUICE_CONFIG": str(config),
                                    "SLUICE_REDIS_URL": redis_url, "SLUICE_WORKER_POOL": pool})

    @property
    def env(self) -> dict[str, str]:
        return self.child.env

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self.child.process

    def start(self, *, timeout: float = 30) -> Workers:
        self.child.start()
        try:
            self.child.wait_until(lambda: "ready." in self.log.read_text(errors="replace"),
                                  timeout=timeout)
        except RuntimeError as exc:
            raise RuntimeError(f"worker did not start: {exc}") from None
        return self

    def children(self) -> list[int]:
        return self.child.children()

    def idle(self) -> bool:
        """Every task this node received has ended (succeeded, failed, or handed to a retry),
        as its log says: what a test waits for before it looks at what the tasks left."""
        received: Counter[str] = Counter()
        ended: Counter[str] = Counter()
        for task, what in TASK_LINE.findall(self.log.read_text(errors="replace")):
            (received if what == "received" else ended)[task] += 1
        return all(ended[task] >= n for task, n in received.items())

    def stop(self) -> None:
        self.child.stop()

    def __enter__(self) -> Workers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def redis_values(r: redis.Redis) -> Iterator[tuple[bytes, bytes]]:
    """Every key of ``r``'s database with each value it holds (strings, hashes, lists, sets,
    sorted sets): where a test looks for a secret that must not be there."""
    for key in r.scan_iter():
        kind = r.type(key)
        if kind == b"string":
            values = [r.get(key) or b""]
        elif kind == b"hash":
            values = [b for kv in r.hgetall(key).items() for b in kv]
        elif kind == b"list":
            values = r.lrange(key, 0, -1)
        elif kind == b"set":
            values = list(r.smembers(key))
        elif kind == b"zset":
            values = r.zrange(key, 0, -1)
        else:
            values = []
        for value in values:
            yield key, value


class Client:
    """The test's side: send tasks and read runs, on the workers' Redis database."""

    def __init__(self, redis_url: str, *, broker_url: str | None = None) -> None:
        self.redis = redis.Redis.from_url(redis_url)
        self.progress = Progress(self.redis)
        self.app = Celery("sluice-tests", broker=broker_url or redis_url)
        self.app.conf.update(task_serializer="json", accept_content=["json"],
                             task_default_queue="sluice")

    def start(self, source: str, kind: str, *, full: bool = False) -> Run:
        """Create a run the way `sluice run` does and enqueue its producer."""
        run = self.progress.create_run(source, kind, full=full)
        if run.state == RunState.RUNNING:
            messages.resync(self.app, source, kind, run.run_id)
        return run

    def wait(self, run_id: str, *, timeout: float = 60,
             stall_after: float | None = None) -> Run:
        """Until the run ends; with ``stall_after``, doing the watch's work as beat would."""
        deadline = time.monotonic() + timeout
        while True:
            if stall_after is not None:
                self.progress.watch(stall_after=stall_after)
            run = self.progress.get(run_id)
            if run and run.state.ended:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} did not end: {run}")
            time.sleep(0.1)

    def resync(self, source: str, kind: str, *, timeout: float = 60, full: bool = False) -> Run:
        return self.wait(self.start(source, kind, full=full).run_id, timeout=timeout)

    def close(self) -> None:
        self.redis.close()
        self.app.close()
