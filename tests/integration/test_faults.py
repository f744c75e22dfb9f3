"""Faults with real processes: the HTTP target down then up, a worker child killed mid-run,
dead letters and `sluice failed retry`, backpressure."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest

from tests.integration.conftest import Pipeline
from tests.support.workers import SLUICE

pytestmark = pytest.mark.integration


def test_target_down_then_up_loses_nothing(http_pipeline: Pipeline):
    p = http_pipeline
    items = p.api.set_items("down", 200)
    p.api.state.sink_down = 3  # the first three POSTs answer 503; retries are 3, backoff 0.2 s
    run = p.client.resync("api", "down")
    assert run.state == "succeeded", run
    assert set(p.api.state.sink["down"]) == {i["id"] for i in items}
    assert run.items_written == 200 and run.batches_failed == 0
    assert run.deletion_skipped == "the http target does not delete stale entities"
    posts = [r[3] for r in p.api.requests("/sink/down") if r[1] == "POST"]
    assert posts.count(503) == 3 and posts.count(200) == 4


def test_target_down_past_every_retry_dead_letters_then_failed_retry_completes(
        http_pipeline: Pipeline, tmp_path):
    p = http_pipeline
    items = p.api.set_items("deadl", 100)
    p.api.state.sink_down = -1  # down until told otherwise
    run = p.client.resync("api", "deadl")
    assert run.state == "failed"
    assert run.batches_failed == 2 and run.items_written == 0
    assert "2 batch(es) dead-lettered" in run.reason
    letters = p.client.progress.dead_letters(run.run_id)
    assert sorted(letters) == [1, 2]
    assert letters[1].items == items[:50] and "TargetUnavailable" in letters[1].error
    assert letters[1].attempts == 4  # the first try and 3 retries

    p.api.state.sink_down = 0
    env = {**os.environ, "SLUICE_REDIS_URL": p.workers.redis_url,
           "SLUICE_CONFIG": str(p.workers.config)}
    cli = SLUICE
    listed = subprocess.run([*cli, "failed", "list", run.run_id], env=env,
                            capture_output=True, text=True, check=True).stdout
    assert f"{run.run_id} batch 1 (api/deadl, 50 items, 4 attempts): TargetUnavailable" in listed
    subprocess.run([*cli, "failed", "retry", run.run_id], env=env, check=True,
                   capture_output=True)
    deadline = time.monotonic() + 30
    while p.client.progress.get(run.run_id).state != "succeeded":
        assert time.monotonic() < deadline, p.client.progress.get(run.run_id)
        time.sleep(0.1)
    run = p.client.progress.get(run.run_id)
    assert (run.items_written, run.batches_failed, run.deleted) == (100, 0, 0)
    assert set(p.api.state.sink["deadl"]) == {i["id"] for i in items}
    assert p.client.progress.dead_letters(run.run_id) == {}


def test_worker_child_killed_mid_run_every_item_arrives_once(http_pipeline: Pipeline):
    p = http_pipeline
    items = p.api.set_items("kill", 1000)  # 20 batches
    p.api.server.write_latency = 0.25  # each batch POST takes a while: the kill lands in one
    try:
        run = p.client.start("api", "kill")
        progress = p.client.progress
        deadline = time.monotonic() + 30
        # Kill while a batch is in the middle of its POST (and a few are already written).
        while progress.get(run.run_id).batches_done < 3 or not p.api.state.sink_writing:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        victims = p.workers.children()
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        run = p.client.wait(run.run_id, timeout=90)
    finally:
        p.api.server.write_latency = 0.0
    assert run.state == "succeeded", run
    assert set(p.api.state.sink["kill"]) == {i["id"] for i in items}
    assert run.items_written == 1000 and run.batches_done == 20  # counted once each
    log = p.workers.log.read_text()
    assert all(f"pid:{pid} exited with 'signal 9 (SIGKILL)'" in log for pid in victims)
    # A batch in the middle of its POST when it was killed was delivered again.
    assert max(p.api.state.sink_received[f"kill/{i['id']}"] for i in items) >= 2


@pytest.mark.parametrize("kind", ["down", "downl"])  # a cursor; planned pages (8 at a time)
def test_backpressure_bounds_batches_in_flight(http_pipeline: Pipeline, kind: str):
    p = http_pipeline  # max_in_flight = 4 in this pipeline's config
    p.api.set_items(kind, 1500)  # 30 batches
    p.api.server.write_latency = 0.05
    seen: list[int] = []
    stop = threading.Event()
    try:
        run = p.client.start("api", kind)

        def sample() -> None:
            while not stop.is_set():
                seen.append(p.client.progress.in_flight(run.run_id))
                time.sleep(0.01)

        sampler = threading.Thread(target=sample)
        sampler.start()
        run = p.client.wait(run.run_id, timeout=90)
        stop.set()
        sampler.join()
    finally:
        p.api.server.write_latency = 0.0
    assert run.state == "succeeded" and run.items_written == 1500
    assert max(seen) == 4  # reached the bound, never passed it


def test_a_sink_that_trickles_its_answer_dead_letters_within_the_deadline(
        http_pipeline: Pipeline):
    p = http_pipeline
    p.api.set_items("trickle", 50)
    started = time.monotonic()
    with p.api.trickling("/sink/trickle", 0.5):  # {"accepted": 50} at 2 bytes a second
        run = p.client.resync("api", "trickle")
    took = time.monotonic() - started
    assert run.state == "failed" and run.batches_failed == 1, run
    [letter] = p.client.progress.dead_letters(run.run_id).values()
    assert "TargetUnavailable" in letter.error and "deadline of 1 s" in letter.error
    assert letter.attempts == 4 and took < 30, took
