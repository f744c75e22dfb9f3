"""A plain ``celery -A tasks worker`` (the threads pool) runs one node per process
(tasks/worker/siblings.py): the siblings take work, one that dies is started again, and they
end with the first node, whether it is stopped or killed."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.operator.redisserver import RedisServer
from tasks.operator.supervisor import Child, celery
from tests.support.workers import FAST_SETTINGS, ROOT, Client, cursor_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as own:
        yield own


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def plain_node(tmp: Path, cfg: Path, redis_url: str, processes: int) -> Child:
    """``celery -A tasks worker`` with no pool flags; each node logs to ``tmp/NODE.log``."""
    env = {**FAST_SETTINGS, "SLUICE_CONFIG": str(cfg), "SLUICE_REDIS_URL": redis_url,
           "SLUICE_WORKER_PROCESSES": str(processes)}
    env.pop("SLUICE_WORKER_POOL", None)
    node = Child("node", celery("worker", "--loglevel", "INFO", "--logfile", str(tmp / "%n.log"),
                                "--without-gossip", "--without-mingle"),
                 log=tmp / "out.log", env=env, cwd=ROOT).start()
    names = ["celery", *(f"celery-{i}" for i in range(1, processes))]
    node.wait_until(lambda: all("ready." in read(tmp / f"{n}.log") for n in names), timeout=60)
    return node


def read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def test_siblings_take_batches_come_back_when_killed_and_stop_with_the_first_node(
        tmp_path: Path, api, server: RedisServer) -> None:
    api.set_items("item", 3000)
    cfg = cursor_config(tmp_path, api.url, limit=25)
    node = plain_node(tmp_path, cfg, server.url, processes=2)
    client = Client(server.url)
    try:
        run = client.resync("api", "item", timeout=120)
        assert run.state == "succeeded", run
        rows = sqlite3.connect(tmp_path / "db.sqlite").execute(
            "SELECT COUNT(*) FROM entities").fetchone()[0]
        assert rows == run.items_written == 3000
        # Both processes are nodes that took batches of the run (120 of them).
        for name in ("celery", "celery-1"):
            assert "Task sluice.ingest_batch[" in read(tmp_path / f"{name}.log"), name

        (sibling,) = node.children()
        os.kill(sibling, signal.SIGKILL)
        node.wait_until(lambda: node.children() not in ([], [sibling]), timeout=60)
        (again,) = node.children()
        node.wait_until(lambda: read(tmp_path / "celery-1.log").count("ready.") == 2,
                        timeout=60)
        assert "exited with -9; another starts" in read(tmp_path / "celery.log")
        run = client.resync("api", "item", timeout=120)  # the new sibling works like the first
        assert run.state == "succeeded", run

        # SIGTERM to the first node alone (not its group): the sibling stops too, first.
        os.kill(node.pid, signal.SIGTERM)
        assert node.process is not None
        node.process.wait(60)
        assert not alive(again)
        assert "did not stop" not in read(tmp_path / "celery.log")  # it was not SIGKILLed
    finally:
        client.close()
        node.stop()


def test_a_killed_first_node_takes_its_siblings_with_it(tmp_path: Path, api,
                                                        server: RedisServer) -> None:
    cfg = cursor_config(tmp_path, api.url)
    node = plain_node(tmp_path, cfg, server.url, processes=3)
    try:
        siblings = node.children()
        assert len(siblings) == 2
        os.kill(node.pid, signal.SIGKILL)  # the first node alone, not its group
        end = time.monotonic() + 60
        while any(alive(p) for p in siblings) and time.monotonic() < end:
            time.sleep(0.2)
        assert not any(alive(p) for p in siblings), read(tmp_path / "celery-1.log")[-2000:]
    finally:
        node.stop()
