"""A Redis that forgets: restarted from an older snapshot (SAVE, then SHUTDOWN NOSAVE and a
start that loads it), as after a failover to a replica that lagged. Its last writes are gone:
counts, batches published, checkpoints, locks, whole run records. A run that lived through it
ends failed with the reason (or, when its record is gone, lost), deletes nothing and leaves the
watermark; the next run works as ever."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
import redis

from integrations.fakeapi import FakeAPI, at
from tasks.operator.redisserver import RedisServer
from tasks.runs import keys
from tasks.runs.deadletter import DeadLetter
from tasks.runs.progress import PageRecord, Progress, RunState, Stopped
from tests.support.workers import Client, Workers, cursor_config

pytestmark = pytest.mark.integration

FORGOT = "Redis restarted or failed over during the run (its run_id changed"


def restart_from_snapshot(server: RedisServer) -> None:
    """Stop the server without saving (what it was told since its last SAVE is lost) and start
    it again on the same port, from that snapshot."""
    assert server.child and server.child.process
    redis.Redis(port=server.port).shutdown(nosave=True)
    server.child.process.wait(10)
    server.start()


def test_the_scripts_fail_a_run_redis_forgot_and_free_its_kind():
    with RedisServer() as server:
        r = redis.Redis(port=server.port)
        progress = Progress(r, lock_seconds=600, ttl=3600)
        run = progress.create_run("src", "kind")
        idle = progress.create_run("src", "idle")  # no task of it comes back after the restart
        fin = progress.create_run("src", "fin")  # finalize is at work when Redis restarts
        progress.record_page(fin.run_id, "src", "fin",
                             PageRecord(batches=(1,), items=10, checkpoint=None))
        progress.batch_done(fin.run_id, "src", "fin", 1, written=10, rejected=[])
        assert progress.producer_done(fin.run_id)  # finalizing
        assert run.redis_id == r.info("server")["run_id"]
        for seq in (1, 2):
            progress.record_page(run.run_id, "src", "kind", PageRecord(
                batches=(seq,), items=10, checkpoint={"cursor": str(seq)}))
        progress.batch_done(run.run_id, "src", "kind", 1, written=10, rejected=[])
        r.save()
        progress.record_page(run.run_id, "src", "kind", PageRecord(  # forgotten
            batches=(3,), items=10, checkpoint={"cursor": "3"}))
        gone = progress.create_run("src", "gone")  # a run started after the snapshot
        restart_from_snapshot(server)

        # The producer's next page: nothing recorded, the run failed, its kind free.
        assert isinstance(progress.record_page(run.run_id, "src", "kind", PageRecord(
            batches=(4,), items=10, checkpoint={"cursor": "4"})), Stopped)
        failed = progress.get(run.run_id)
        assert failed and failed.state == RunState.FAILED and failed.redis_moved
        assert FORGOT in failed.reason and "nothing deleted" in failed.reason
        assert failed.pages == 2 and r.get(keys.lock("src", "kind")) is None
        assert 0 < r.ttl(keys.run_enqueued(run.run_id)) <= 3600
        # Its late batches count nowhere towards an end; a dead letter retried and written
        # does not turn it into a success.
        assert not progress.batch_failed(run.run_id, 2, dead_letter=DeadLetter(
            task="batch", source="src", kind="kind", items=[], error="x", attempts=1, at=0.0))
        assert not progress.batch_done(run.run_id, "src", "kind", 2, written=10, rejected=[])
        assert not progress.producer_done(run.run_id)
        assert progress.get(run.run_id).state == RunState.FAILED  # type: ignore[union-attr]
        assert progress.create_run("src", "kind").state == RunState.RUNNING

        # A run whose record the snapshot never had: nothing brings it back.
        assert progress.get(gone.run_id) is None
        assert not progress.batch_done(gone.run_id, "src", "gone", 1, written=5, rejected=[])
        progress.touch(gone.run_id, "src", "gone")
        progress.set_window(gone.run_id, 0, None)
        assert r.exists(keys.run(gone.run_id), keys.run_done(gone.run_id)) == 0
        assert progress.create_run("src", "gone").state == RunState.RUNNING

        # Finalize, having deleted from the record as it stood, ends the run after the change:
        # failed all the same, saying what it did.
        assert not progress.finish(fin, RunState.SUCCEEDED, expect=RunState.FINALIZING,
                                   deleted=3, watermark="x")
        ended = progress.get(fin.run_id)
        assert ended and (ended.state, ended.deleted, ended.watermark) == (RunState.FAILED, 3, "x")
        assert "while the run was finalizing" in ended.reason

        # A run no task touches again: the watch (beat, `sluice run --wait`) fails it.
        [ended] = progress.watch(stall_after=3600)
        assert ended.run_id == idle.run_id and ended.state == RunState.FAILED
        assert FORGOT in ended.reason and progress.watch(stall_after=3600) == []
        assert progress.create_run("src", "idle").state == RunState.RUNNING
        r.close()


def ids_in(tmp: Path) -> set[str]:
    with sqlite3.connect(tmp / "db.sqlite") as db:
        return {i for (i,) in db.execute("SELECT identifier FROM entities")}


def watermark(tmp: Path) -> str:
    with sqlite3.connect(tmp / "db.sqlite") as db:
        [(value,)] = db.execute("SELECT value FROM sluice_watermarks").fetchall()
        return str(value)


def until(ready, *, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize("snapshot", ["mid-run", "before-the-run"])
def test_a_run_through_a_restart_from_an_older_snapshot_deletes_nothing_and_the_next_works(
        tmp_path: Path, api: FakeAPI, snapshot: str):
    """A full run of an incremental kind, with deletion on: 100 items are gone from the API
    and 10 changed since the last run. Redis is restarted from a snapshot taken mid-run (the
    run's record goes back: failed, with the reason) or before the run (its record is gone:
    lost). Either way every row stays, the watermark stays, and the next run succeeds."""
    items = api.set_timed_items("item", 1500)
    config = cursor_config(tmp_path, api.url, source_keys="delete_threshold = 0.9\n"
                           "max_in_flight = 8", limit=50)
    config.write_text(config.read_text() + 'incremental = { cursor_path = "updated_at", '
                      'param = "since" }\n')
    with RedisServer() as server, Workers(
            config=config, redis_url=server.url, log=tmp_path / "worker.log",
            env={"SLUICE_VISIBILITY_TIMEOUT": "10", "SLUICE_UNACKED_RESTORE_INTERVAL": "2",
                 "SLUICE_PRODUCER_SLICE_SECONDS": "3"}) as workers:
        client = Client(server.url)
        assert client.resync("api", "item").state == RunState.SUCCEEDED
        kept = watermark(tmp_path)
        assert kept == f'"{at(1499)}"'
        api.change("item", list(range(10)), when=90_000)
        del items[1400:]  # a clean full run deletes these 100
        api.state.delays["/cursor/item"] = 0.1  # 28 pages: seconds
        if snapshot == "before-the-run":
            client.redis.save()
        run = client.start("api", "item", full=True)
        until(lambda: client.progress.get(run.run_id).batches_done >= 4)  # type: ignore[union-attr]
        if snapshot == "mid-run":
            client.redis.save()
            until(lambda: client.progress.get(run.run_id).batches_done >= 10)  # type: ignore[union-attr]
        client.close()
        restart_from_snapshot(server)
        client = Client(server.url)
        if snapshot == "mid-run":  # its own tasks find out
            ended = client.wait(run.run_id, timeout=120)
            assert ended.state == RunState.FAILED and FORGOT in ended.reason, ended
            assert ended.deleted == 0 and ended.pages < 28
        else:
            assert client.progress.get(run.run_id) is None
        # Nothing deleted (the 100 stale rows neither), the watermark where it was.
        assert ids_in(tmp_path) >= {f"item-{i}" for i in range(1500)}
        assert watermark(tmp_path) == kept
        api.state.delays.clear()
        after = client.resync("api", "item", full=True, timeout=120)
        lost = client.progress.get(run.run_id)
        client.close()
        assert workers.process and workers.process.poll() is None  # the node rode it out
    assert after.state == RunState.SUCCEEDED and after.deleted == 100, after
    assert ids_in(tmp_path) == {i["id"] for i in items}
    assert watermark(tmp_path) == f'"{at(90_000)}"'
    # The lost run's late batches did not bring its record back as anything but failed.
    if snapshot == "before-the-run":
        assert lost is None
    else:
        assert lost is not None and lost.state == RunState.FAILED
