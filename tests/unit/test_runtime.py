"""The per-process runtime: which targets threads share."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from integrations.errors import TargetRejected
from tasks.config import parse_config
from tasks.settings import Settings
from tasks.worker.runtime import Runtime


def runtime_for(target: dict, tmp_path: Path) -> Runtime:
    source = {"integration": "rest", "base_url": "http://127.0.0.1:9",
              "kinds": {"k": {"path": "/k"}}}
    config = parse_config({"target": target, "sources": {"s": source}}, tmp_path / "sluice.toml")
    return Runtime(Settings(redis_url="redis://127.0.0.1:1/0"), config)  # Redis is not used


def targets_seen_by_threads(rt: Runtime, n: int = 3) -> list[object]:
    seen: list[object] = []
    threads = [threading.Thread(target=lambda: seen.append(rt.target())) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return seen


@pytest.mark.parametrize("target,shared", [
    ({"type": "http", "url": "http://127.0.0.1:9/sink/{kind}"}, True),  # httpx.Client
    ({"type": "sqlite", "path": "DB"}, False),  # a sqlite3 connection belongs to its thread
])
def test_a_thread_safe_target_is_shared_by_the_threads_of_a_process(
        tmp_path: Path, target: dict, shared: bool):
    target = {k: str(tmp_path / "t.db") if v == "DB" else v for k, v in target.items()}
    rt = runtime_for(target, tmp_path)
    try:
        seen = targets_seen_by_threads(rt)
        assert len({id(t) for t in seen}) == (1 if shared else 3)
        mine = rt.target()  # this thread's
        assert (mine is seen[0]) if shared else all(mine is not t for t in seen)
    finally:
        rt.close()


def test_a_target_that_cannot_open_does_not_stop_the_process_start(tmp_path: Path):
    (tmp_path / "a-file").write_text("")
    path = tmp_path / "a-file" / "sluice.db"  # its directory cannot exist
    rt = runtime_for({"type": "sqlite", "path": str(path)}, tmp_path)
    try:
        rt.warm()  # logs and goes on: the first batch is dead-lettered with the reason
        with pytest.raises(TargetRejected, match="cannot create its directory"):
            rt.target()
    finally:
        rt.close()
