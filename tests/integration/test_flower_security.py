"""Flower sees the tasks (in a real browser and through its API) with short argument summaries;
secrets never reach task messages, logs, Redis or Flower; pickle is refused."""

from __future__ import annotations

import base64
import json
import os
import pickle
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kombu import Connection

from tasks.operator.redisserver import free_port
from tasks.operator.supervisor import Child, celery
from tests.integration.conftest import TOKEN, Pipeline
from tests.support.programs import program
from tests.support.workers import ROOT

pytestmark = pytest.mark.integration

AUTH = ("ops", "flower-pass-81d2")


@pytest.fixture(scope="module")
def flower(sqlite_pipeline: Pipeline, tmp_path_factory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("flower") / "flower.log"
    env = {**sqlite_pipeline.workers.env, "FLOWER_BASIC_AUTH": ":".join(AUTH)}
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/healthcheck", timeout=1).is_success
        except httpx.TransportError:
            return False

    with Child("flower", celery("flower", "--address=127.0.0.1", f"--port={port}"), log=log,
               cwd=ROOT, env=env) as proc:
        proc.wait_until(up, timeout=30, poll=0.2)
        # Flower knows only the tasks whose events came after its consumer attached: a run it
        # lists shows that it has.
        sqlite_pipeline.api.set_items("pgt", 10)
        warmups: list[str] = []

        def listening() -> bool:
            warmups.append(sqlite_pipeline.client.resync("api", "pgt").run_id)
            tasks = httpx.get(f"{url}/api/tasks", auth=AUTH, timeout=10).text
            return any(run_id in tasks for run_id in warmups)

        proc.wait_until(listening, timeout=120, poll=0.2)
        yield url


def batch_tasks(url: str, run_id: str) -> list[dict]:
    tasks = httpx.get(f"{url}/api/tasks", params={"taskname": "sluice.ingest_batch"},
                      auth=AUTH, timeout=10).json()
    return [t for t in tasks.values() if run_id in (t.get("args") or "")]


def test_flower_api_shows_batches_with_a_short_summary_and_needs_auth(
        sqlite_pipeline: Pipeline, flower: str):
    p = sqlite_pipeline
    p.api.set_items("cur", 120)
    run = p.client.resync("api", "cur")
    deadline = time.monotonic() + 60
    while len(found := batch_tasks(flower, run.run_id)) < 3 or any(
            t["state"] != "SUCCESS" for t in found):
        assert time.monotonic() < deadline, found
        time.sleep(0.3)
    args = sorted(t["args"] for t in found)
    assert args == [f"run={run.run_id} api/cur page={n} items={c}"
                    for n, c in ((1, 40), (2, 40), (3, 40))]
    assert httpx.get(f"{flower}/api/tasks", timeout=5).status_code == 401
    assert httpx.get(f"{flower}/", timeout=5).status_code == 401


def test_flower_page_in_headless_chromium_shows_a_finished_batch(
        sqlite_pipeline: Pipeline, flower: str, tmp_path: Path):
    chromium = program("chromium", "chromium-browser",
                       purpose="this test reads Flower's page in headless Chromium (Debian "
                               "package 'chromium')")
    p = sqlite_pipeline
    p.api.set_items("lnk", 30)
    run = p.client.resync("api", "lnk")
    deadline = time.monotonic() + 60
    while not (found := [t for t in batch_tasks(flower, run.run_id) if t["state"] == "SUCCESS"]):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    task_id = found[0]["uuid"]
    page = f"http://{AUTH[0]}:{AUTH[1]}@{flower.removeprefix('http://')}/task/{task_id}"
    dom = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
         "--virtual-time-budget=3000", page],
        capture_output=True, text=True, timeout=60).stdout
    assert "sluice.ingest_batch" in dom and task_id in dom
    assert "SUCCESS" in dom
    assert f"run={run.run_id} api/lnk page=1 items=30" in dom
    assert '"id": "lnk-0"' not in dom and "lnk number 0" not in dom  # never the items


def _decoded_messages(commands: list[str]) -> str:
    """Every command seen, plus the decoded body of every base64 message pushed onto a queue
    (the workers send theirs as they are: a token in one would show in the command itself)."""
    out = list(commands)
    for cmd in commands:
        if cmd.startswith("LPUSH ") and re.search(r'"body_encoding": ?"base64"', cmd):
            message = json.loads(cmd.split(" ", 2)[2])
            out.append(base64.b64decode(message["body"]).decode())
    return "\n".join(out)


def test_a_token_never_reaches_messages_redis_logs_or_flower(
        sqlite_pipeline: Pipeline, flower: str):
    p = sqlite_pipeline
    p.api.set_items("off", 90)
    commands: list[str] = []
    stop = threading.Event()
    monitor_client = p.client.redis.__class__.from_url(p.workers.redis_url)

    def monitor() -> None:
        with monitor_client.monitor() as m:
            for cmd in m.listen():
                commands.append(cmd["command"])
                if stop.is_set():
                    return

    thread = threading.Thread(target=monitor, daemon=True)
    thread.start()
    while not commands:  # until the monitor sees what this client sends
        p.client.redis.ping()
        time.sleep(0.05)
    run = p.client.resync("api", "off")
    assert run.state == "succeeded"
    stop.set()
    p.client.redis.ping()  # one more command, so the monitor loop sees the stop flag
    thread.join(5)
    traffic = _decoded_messages(commands)
    # we did see the messages, their items too (as JSON text, escaped: a token in them would
    # show as it is, having no quote or backslash to escape)
    assert "sluice.ingest_batch" in traffic and "off-0" in traffic
    assert TOKEN not in traffic
    dump = [p.client.redis.dump(k) or b"" for k in p.client.redis.keys("*")]
    assert all(TOKEN.encode() not in d for d in dump)
    assert TOKEN not in p.workers.log.read_text()
    tasks = httpx.get(f"{flower}/api/tasks", auth=AUTH, timeout=10).text
    assert run.run_id in tasks and TOKEN not in tasks
    # ... while the API did receive it, from the worker's own config and environment.
    assert p.api.state.auth_seen == {f"Bearer {TOKEN}"}


class Exploit:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_a_pickled_message_is_refused(sqlite_pipeline: Pipeline, tmp_path: Path):
    p = sqlite_pipeline
    marker = tmp_path / "pwned"
    task_id = "pickled-0001"
    with Connection(p.workers.redis_url) as conn:
        conn.Producer().publish(
            pickle.dumps(([Exploit(str(marker))], {}, {}), protocol=2),
            serializer=None, content_type="application/x-python-serialize",
            content_encoding="binary", routing_key="sluice", exchange="",
            headers={"task": "sluice.ingest_batch", "id": task_id, "lang": "py",
                     "argsrepr": "pickled", "kwargsrepr": "{}"})
    deadline = time.monotonic() + 60
    while "ContentDisallowed" not in p.workers.log.read_text():
        assert time.monotonic() < deadline, "the worker never saw the pickled message"
        time.sleep(0.2)
    assert "Refusing to deserialize untrusted content of type pickle" in p.workers.log.read_text()
    # The workers go on with JSON work (and by then the pickle would have run, had it).
    p.api.set_items("pg", 10)
    assert p.client.resync("api", "pg").state == "succeeded"
    assert not marker.exists()
