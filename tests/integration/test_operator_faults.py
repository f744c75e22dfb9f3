"""Faults an operator meets, with real processes: Redis restarted mid-run (with and without
persistence), a whole worker node SIGKILLed while another runs, a node stopped with SIGTERM,
a run that makes no progress."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from integrations.fakeapi import FakeAPI
from tasks.operator.redisserver import RedisServer
from tests.support.workers import ROOT, SLUICE, Client, Workers, cursor_config, rabbitmq_url

pytestmark = pytest.mark.integration

# A visibility timeout of seconds, swept every 2 s: a message whose whole node died comes back
# quickly. Safe because every task here is far shorter (producer slices of 3 s).
FAST_REDELIVERY = {"SLUICE_VISIBILITY_TIMEOUT": "10", "SLUICE_UNACKED_RESTORE_INTERVAL": "2",
                   "SLUICE_PRODUCER_SLICE_SECONDS": "3"}


def config(tmp: Path, api: FakeAPI, *, max_in_flight: int = 8) -> Path:
    return cursor_config(tmp, api.url, source_keys=f"max_in_flight = {max_in_flight}\n"
                         "delete_threshold = 0.9")


def ids_in(tmp: Path) -> list[str]:
    with sqlite3.connect(tmp / "db.sqlite") as db:
        return [i for (i,) in db.execute("SELECT identifier FROM entities")]


def restart(server: RedisServer, *, keep_data: bool) -> None:
    """Stop the server (SIGTERM: with AOF on, it writes what it has) and start it again on the
    same port and directory after 2 s."""
    assert server.child
    server.child.stop(timeout=10)
    time.sleep(2)
    if not keep_data:
        for f in Path(server.dir).rglob("*"):
            if f.is_file():
                f.unlink()
    server.start()


def persistent_redis() -> RedisServer:
    server = RedisServer()
    server.extra_args = ["--appendonly", "yes", "--appendfsync", "always"]
    return server.start()


def test_redis_restarted_mid_run_with_persistence_fails_the_run_and_never_deletes(
        tmp_path: Path, api: FakeAPI):
    items = api.set_items("item", 1600)
    server = persistent_redis()
    try:
        with Workers(config=config(tmp_path, api), redis_url=server.url,
                     log=tmp_path / "worker.log", env=FAST_REDELIVERY) as workers:
            client = Client(server.url)
            assert client.resync("api", "item").state == "succeeded"
            del items[1500:]  # a clean run would delete these 100
            api.state.delays["/cursor/item"] = 0.1
            run = client.start("api", "item")
            deadline = time.monotonic() + 30
            while client.progress.get(run.run_id).batches_done < 5:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            restart(server, keep_data=True)
            run = client.wait(run.run_id, timeout=120, stall_after=20)
            assert workers.process and workers.process.poll() is None  # the node survived
            api.state.delays.clear()
            after = client.resync("api", "item")  # and takes the next run
            client.close()
    finally:
        server.stop()
    # A restarted Redis may have lost the run's last writes, and nothing in the record says
    # whether it did: the run fails with the reason, deleting nothing; the next run completes
    # the data and deletes the 100 stale ones (test_redis_forgets: a restart that did lose).
    assert run.state == "failed" and run.deleted == 0, run
    assert "Redis restarted or failed over during the run" in run.reason
    assert after.state == "succeeded" and after.deleted == 100
    assert sorted(ids_in(tmp_path)) == sorted(i["id"] for i in items)


def test_redis_restarted_empty_mid_run_never_hangs_and_never_deletes(tmp_path: Path, api: FakeAPI):
    api.set_items("item", 300)
    server = RedisServer().start()
    try:
        with Workers(config=config(tmp_path, api), redis_url=server.url,
                     log=tmp_path / "worker.log", env=FAST_REDELIVERY):
            client = Client(server.url)
            assert client.resync("api", "item").state == "succeeded"
            assert len(ids_in(tmp_path)) == 300
            del api.state.items["item"][100:]  # the next run would delete 200 ...
            api.state.delays["/cursor/item"] = 1.0
            run = client.start("api", "item")
            while client.progress.get(run.run_id).batches_done < 1:
                time.sleep(0.02)
            restart(server, keep_data=False)  # ... but Redis forgets the run mid-way
            env = {**os.environ, "SLUICE_REDIS_URL": server.url,
                   "SLUICE_CONFIG": str(tmp_path / "sluice.toml")}
            status = subprocess.run([*SLUICE, "status", run.run_id,
                                     "--json"], env=env, capture_output=True, text=True)
            time.sleep(3)  # whatever the workers still had in hand is done by now
            api.state.delays.clear()
            # The workers go on: a new run after the restart works.
            after = client.resync("api", "item")
            client.close()
    finally:
        server.stop()
    # The lost run is reported as such (or not at all), never as running forever.
    assert status.returncode == 1 or json.loads(status.stdout)["state"] == "lost", status
    # Nothing was deleted by the lost run: all 300 were there until the clean run after it.
    assert after.state == "succeeded" and after.deleted == 200, after
    assert len(ids_in(tmp_path)) == 100


@contextmanager
def two_nodes(tmp: Path, cfg: Path) -> Iterator[tuple[Workers, Client]]:
    """Worker nodes 'a' and 'b' on one fresh Redis; yields node a (the victim) and a client."""
    with RedisServer() as server:
        nodes = [Workers(config=cfg, redis_url=server.url, log=tmp / f"{n}.log", name=n,
                         env=FAST_REDELIVERY).start() for n in ("a", "b")]
        client = Client(server.url)
        try:
            yield nodes[0], client
        finally:
            for node in nodes:
                node.stop()
            client.close()


def test_a_whole_worker_node_killed_the_other_completes_the_run(tmp_path: Path, api: FakeAPI):
    items = api.set_items("item", 2000)
    api.state.delays["/cursor/item"] = 0.05
    with two_nodes(tmp_path, config(tmp_path, api)) as (node_a, client):
        run = client.start("api", "item")
        deadline = time.monotonic() + 30
        while client.progress.get(run.run_id).batches_done < 4:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert node_a.process
        os.killpg(node_a.process.pid, signal.SIGKILL)  # main process and children at once
        killed_at = time.monotonic()
        node_a.process.wait(10)
        run = client.wait(run.run_id, timeout=120)
        recovered_in = time.monotonic() - killed_at
    assert run.state == "succeeded", run
    assert sorted(ids_in(tmp_path)) == sorted(i["id"] for i in items)
    assert run.items_written == 2000 and run.batches_done == 40
    # Bounded by the visibility timeout (10 s) plus the restore sweep and the rest of the work.
    assert recovered_in < 60, recovered_in
    print(f"whole node SIGKILLed: run completed {recovered_in:.1f} s later")


def test_a_node_stopped_with_sigterm_finishes_its_batch(tmp_path: Path, api: FakeAPI):
    items = api.set_items("item", 1000)
    api.state.delays["/cursor/item"] = 0.05
    with two_nodes(tmp_path, config(tmp_path, api, max_in_flight=4)) as (node_a, client):
        run = client.start("api", "item")
        while client.progress.get(run.run_id).batches_done < 3:
            time.sleep(0.02)
        assert node_a.process
        node_a.process.send_signal(signal.SIGTERM)  # warm shutdown of the main process
        assert node_a.process.wait(30) == 0
        run = client.wait(run.run_id, timeout=120)
    assert "worker: Warm shutdown" in (tmp_path / "a.log").read_text()
    assert run.state == "succeeded", run
    assert sorted(ids_in(tmp_path)) == sorted(i["id"] for i in items)
    assert run.items_written == 1000


def test_a_run_without_progress_is_marked_stalled(tmp_path: Path, api: FakeAPI):
    api.set_items("item", 200)
    api.state.delays["/cursor/item"] = 8  # the API hangs for far longer than stall_seconds
    with RedisServer() as server, Workers(config=config(tmp_path, api), redis_url=server.url,
                                          log=tmp_path / "w.log", env=FAST_REDELIVERY):
        env = {**os.environ, "SLUICE_REDIS_URL": server.url, "SLUICE_STALL_SECONDS": "2",
               "SLUICE_CONFIG": str(tmp_path / "sluice.toml")}
        done = subprocess.run([*SLUICE, "run", "api", "--wait",
                               "--json"], env=env, capture_output=True, text=True, timeout=60,
                              cwd=ROOT)
    assert done.returncode == 1, done.stderr
    run = json.loads(done.stdout)
    assert run["state"] == "stalled" and "no progress for" in run["reason"]
    assert run["deleted"] == 0


def test_run_wait_rides_out_a_redis_restart(tmp_path: Path, api: FakeAPI):
    """`sluice run --wait` keeps watching through a Redis restart: it ends with the run's
    outcome, never a traceback."""
    api.set_items("item", 1500)
    api.state.delays["/cursor/item"] = 0.1
    server = persistent_redis()
    try:
        with Workers(config=config(tmp_path, api), redis_url=server.url,
                     log=tmp_path / "worker.log", env=FAST_REDELIVERY):
            env = {**os.environ, "SLUICE_REDIS_URL": server.url, "SLUICE_STALL_SECONDS": "20",
                   "SLUICE_CONFIG": str(tmp_path / "sluice.toml")}
            cli = subprocess.Popen([*SLUICE, "run", "api", "--wait",
                                    "--json"], env=env, cwd=ROOT, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            client = Client(server.url)
            deadline = time.monotonic() + 30
            while not any(r.batches_done >= 3 for r in client.progress.recent()):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            client.close()
            restart(server, keep_data=True)
            out, err = cli.communicate(timeout=120)
    finally:
        server.stop()
    assert "Traceback" not in err, err
    run = json.loads(out)
    # As in the restart test above: failed, with the reason.
    assert (cli.returncode, run["state"]) == (1, "failed"), (out, err)
    assert "Redis restarted or failed over" in run["reason"]


@pytest.mark.parametrize("broker", ["redis", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def test_a_lost_node_costs_seconds_with_the_default_visibility_timeout(
        tmp_path: Path, api: FakeAPI, broker: str):
    """Node a holds the producer slice and batches when it is SIGKILLed whole; the broker's
    visibility timeout stays at its default (600 s). With Redis, node b sees a's heartbeat stop
    and gives a's messages back; RabbitMQ hands a dead connection's messages back itself. The
    run completes with every item within a minute of the kill."""
    broker_url = rabbitmq_url() if broker == "rabbitmq" else None
    items = api.set_items("item", 3000)
    api.state.delays["/cursor/item"] = 0.05
    cfg = config(tmp_path, api)
    env = {"SLUICE_PRODUCER_SLICE_SECONDS": "30",  # the slice outlives the kill
           **({"SLUICE_BROKER_URL": broker_url} if broker_url else {})}
    with RedisServer() as server:
        node_a = Workers(config=cfg, redis_url=server.url, log=tmp_path / "a.log", name="a",
                         env=env).start()
        client = Client(server.url, broker_url=broker_url)
        try:
            run = client.start("api", "item")
            node_b = Workers(config=cfg, redis_url=server.url, log=tmp_path / "b.log",
                             name="b", env=env).start()
            try:
                deadline = time.monotonic() + 30
                while client.progress.get(run.run_id).batches_done < 4:
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
                held = sum(client.redis.scard(k) for k in client.redis.keys("sluice:node:*:tags"))
                assert node_a.process
                os.killpg(node_a.process.pid, signal.SIGKILL)
                killed_at = time.monotonic()
                node_a.process.wait(10)
                run = client.wait(run.run_id, timeout=90)
                recovered_in = time.monotonic() - killed_at
            finally:
                node_b.stop()
        finally:
            node_a.stop()
            client.close()
    assert run.state == "succeeded", run
    assert sorted(ids_in(tmp_path)) == sorted(i["id"] for i in items)
    assert run.items_written == 3000
    if broker == "redis":
        assert held >= 1  # the nodes did hold messages when a died
        assert "stopped answering" in (tmp_path / "b.log").read_text()
    assert recovered_in < 60, recovered_in
    print(f"whole node SIGKILLed ({broker}), default visibility timeout: run completed "
          f"{recovered_in:.1f} s later")


def test_a_live_but_slow_node_keeps_its_messages(tmp_path: Path, api: FakeAPI):
    """Batches that take three times the node timeout to write, on a live node beside another
    node: none is handed out twice."""
    api.set_items("slow", 200)
    api.server.write_latency = 6.0
    cfg = tmp_path / "sluice.toml"
    cfg.write_text(f"""
[target]
type = "http"
url = "{api.url}/sink/{{kind}}"
[sources.api]
integration = "rest"
base_url = "{api.url}"
[sources.api.kinds.slow]
path = "/cursor/slow"
items = "data"
paginator = {{ type = "cursor", cursor_path = "next_cursor", limit = 50 }}
""")
    env = {"SLUICE_NODE_TIMEOUT": "2"}
    with RedisServer() as server, \
            Workers(config=cfg, redis_url=server.url, log=tmp_path / "a.log", name="a",
                    env=env), \
            Workers(config=cfg, redis_url=server.url, log=tmp_path / "b.log", name="b",
                    env=env):
        client = Client(server.url)
        run = client.resync("api", "slow", timeout=90)
        client.close()
    assert run.state == "succeeded", run
    assert set(api.state.sink_received.values()) == {1}, api.state.sink_received
    assert len(api.state.sink_received) == 200
    logs = (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
    assert "stopped answering" not in logs
