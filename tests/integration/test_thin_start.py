"""``sluice run``'s thin start (tasks/operator/thin.py) against a real worker on real Redis: the
worker starts the runs the command asks for; with no worker, the command starts them itself,
and the request it sent first never starts a second run."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from integrations.fakeapi import FakeAPI
from tasks import envelope
from tasks.runs import keys
from tests.support.workers import ROOT, SLUICE, Client, Workers, cursor_config

pytestmark = pytest.mark.integration

COMMAND = SLUICE  # the script's entry point, not the click CLI alone


def sluice(config: Path, redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SLUICE_REDIS_URL": redis_url, "SLUICE_CONFIG": str(config)}
    env.pop("SLUICE_BROKER_URL", None)
    return subprocess.run([*COMMAND, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def start_requests(log: Path) -> list[str]:
    """The outcome of each start request the worker ran, as its log says."""
    return [line.split("succeeded in", 1)[1].split(":", 1)[1].strip()
            for line in log.read_text(errors="replace").splitlines()
            if "sluice.start_request[" in line and "succeeded in" in line]


def rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        (count,) = conn.execute("SELECT count(*) FROM entities WHERE kind = 'item'").fetchone()
    return int(count)


class Running:
    def __init__(self, tmp: Path, api: FakeAPI, url: str, workers: Workers) -> None:
        self.tmp, self.api, self.url, self.workers = tmp, api, url, workers
        self.config = workers.config
        self.log = workers.log


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("thin")
    with FakeAPI() as api:
        config = cursor_config(tmp, api.url, limit=25)
        workers = Workers(config=config, redis_url=redis_url, log=tmp / "worker.log",
                          pool="threads").start()
        try:
            yield Running(tmp, api, redis_url, workers)
        finally:
            workers.stop()


def test_run_wait_is_started_by_the_worker_and_lands_the_rows(running: Running) -> None:
    running.api.set_items("item", 120)
    done = sluice(running.config, running.url, "run", "api", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    (run,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert (run["state"], run["items_written"]) == ("succeeded", 120)
    assert rows(running.tmp / "db.sqlite") == 120
    assert start_requests(running.log) == [f"'answered: {run['run_id']}'"]


def test_run_wait_prints_its_run_then_its_summary(running: Running) -> None:
    running.api.set_items("item", 120)
    done = sluice(running.config, running.url, "run", "api", "--wait")
    assert done.returncode == 0, done.stderr
    first, *rest = done.stdout.splitlines()
    run_id = first.split()[2]
    assert first == f"api/item: run {run_id} running"
    assert rest == [f"api/item run {run_id}: succeeded; 120 written, 0 rejected, 0 batches "
                    "failed, 0 deleted"]


def test_the_command_imports_no_celery_redis_or_click_when_a_worker_starts_the_run(
        running: Running) -> None:
    """Observable proof of the thin path: the command printed its run and ended having
    imported none of what the click CLI and Celery's way import."""
    running.api.set_items("item", 120)
    code = ("import sys\n"
            "from tasks.operator.entry import main\n"
            "code = main(['run', 'api'])\n"
            "heavy = {'celery', 'kombu', 'redis', 'click', 'pydantic', 'httpx', 'rich'}\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy"
            " and m != 'httpx._main'))\n"  # integrations/lean.py's stand-in, not httpx
            "sys.exit(code)\n")
    env = {**os.environ, "SLUICE_REDIS_URL": running.url, "SLUICE_CONFIG": str(running.config)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    started, imported = done.stdout.splitlines()
    assert started.startswith("api/item: run ") and started.endswith(" running"), started
    assert imported == "[]"
    run_id = started.split()[2]
    run = Client(running.url).wait(run_id)
    assert run.state == "succeeded" and run.items_written == 120


def test_an_unknown_kind_is_the_same_error_and_exit_code(running: Running) -> None:
    before = len(start_requests(running.log))
    done = sluice(running.config, running.url, "run", "api", "--kind", "nope")
    assert done.returncode == 2
    assert f"sluice: {running.config}: source 'api' has no kind 'nope' (kinds: item)" \
        in done.stderr
    assert start_requests(running.log)[before:] == ["'answered: an error'"]


def test_another_sluice_toml_on_the_workers_falls_back_to_the_command(
        running: Running) -> None:
    """The command's sluice.toml is not the workers' (another digest): the worker starts
    nothing, and the command starts the run as it always did (the worker then runs it: its
    record carries the command's digest, which is what the run's checks compare)."""
    other = running.tmp / "other.toml"
    other.write_text(running.config.read_text() + "\n# edited\n")
    running.api.set_items("item", 120)
    before = len(start_requests(running.log))
    done = sluice(other, running.url, "run", "api", "--json")
    assert done.returncode == 0, done.stderr
    (run,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert start_requests(running.log)[before:] == ["'answered: an error'"]
    ended = Client(running.url).wait(run["run_id"])
    assert ended.config_digest == run["config_digest"] != ""


def test_without_a_worker_the_command_starts_the_run_and_it_runs_once(
        tmp_path: Path, own_redis_url: str) -> None:
    with FakeAPI() as api:
        api.set_items("item", 60)
        config = cursor_config(tmp_path, api.url, limit=25)
        done = sluice(config, own_redis_url, "run", "api", "--json")
        assert done.returncode == 0, done.stderr
        (run,) = [json.loads(line) for line in done.stdout.splitlines()]
        assert run["state"] == "running"
        r = redis.Redis.from_url(own_redis_url)
        # Its start request waits in the queue, without a claim; the producer too.
        assert r.llen(envelope.URGENT) == 1 and r.llen(envelope.PRODUCERS) == 1
        assert not r.keys(keys.start_claim("*"))
        log = tmp_path / "worker.log"
        with Workers(config=config, redis_url=own_redis_url, log=log, pool="threads"):
            client = Client(own_redis_url)
            ended = client.wait(run["run_id"])
            assert (ended.state, ended.items_written) == ("succeeded", 60)
            assert [r.run_id for r in client.progress.recent(10)] == [run["run_id"]]
            assert start_requests(log) == ["'not claimed: the command started the runs "
                                           "itself, or gave up'"]
            client.close()
        assert r.llen(envelope.URGENT) == 0
        r.close()
    assert rows(tmp_path / "db.sqlite") == 60
