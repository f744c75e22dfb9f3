"""The pipeline end to end: real Redis, real prefork workers, the fake API on loopback, SQLite;
every case twice, with the queue on Redis and on RabbitMQ."""

from __future__ import annotations

import pytest

from tasks import messages
from tasks.runs.record import PageRecord
from tests.integration.conftest import Pipeline

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("kind,count", [("cur", 203), ("lnk", 160), ("off", 199), ("pg", 121),
                                        ("pgt", 80)])
def test_every_paginator_brings_every_item(pipeline: Pipeline, kind: str, count: int):
    p = pipeline
    items = p.api.set_items(kind, count)
    run = p.client.resync("api", kind)
    assert run.state == "succeeded", run
    assert set(p.rows(kind)) == {i["id"] for i in items}
    assert p.rows(kind)[f"{kind}-7"] == items[7]
    pages = -(-count // 40)
    assert run.pages == pages and run.batches_done == pages
    assert run.items_fetched == run.items_written == count


def test_item_without_identifier_is_rejected_and_the_rest_is_written(pipeline: Pipeline):
    p = pipeline
    items = p.api.set_items("noid", 250)
    del items[3]["id"]
    items[70]["id"] = None
    run = p.client.resync("api", "noid")
    assert run.state == "succeeded", run  # 2 of 250 (0.8%): within max_rejected (1%)
    assert run.items_rejected == 2 and run.items_written == 248
    assert len(p.rows("noid")) == 248
    rejected = p.client.progress.rejected(run.run_id)
    # Listed as their batches end: two workers may end batch 2 first.
    assert sorted((r["seq"], r["index"], r["reason"]) for r in rejected) == [
        (1, 3, "no identifier"), (2, 20, "no identifier")]


def test_429_with_retry_after_is_waited_for(pipeline: Pipeline):
    p = pipeline
    p.api.set_items("r429", 100)
    p.api.fail("/cursor/r429", 429, times=2, when={"cursor": "50"},
               headers={"Retry-After": "1"})
    run = p.client.resync("api", "r429")
    assert run.state == "succeeded", run
    assert len(p.rows("r429")) == 100
    second_page = [r for r in p.api.requests("/cursor/r429") if "cursor=50" in r[2]]
    assert [r[3] for r in second_page] == [429, 429, 200]
    assert second_page[1][0] - second_page[0][0] >= 0.95  # Retry-After: 1 was honoured
    assert second_page[2][0] - second_page[1][0] >= 0.95


def test_503_storm_within_retries_is_ridden_out(pipeline: Pipeline):
    p = pipeline
    p.api.set_items("storm", 150)
    p.api.fail("/cursor/storm", 503, times=4)  # config: retries = 4
    run = p.client.resync("api", "storm")
    assert run.state == "succeeded", run
    assert len(p.rows("storm")) == 150
    assert [r[3] for r in p.api.requests("/cursor/storm")][:5] == [503] * 4 + [200]


def test_503_storm_past_retries_fails_the_run_with_its_reason(pipeline: Pipeline):
    p = pipeline
    p.api.set_items("longstorm", 150)
    p.api.fail("/cursor/longstorm", 503, times=5, when={"cursor": "100"})
    run = p.client.resync("api", "longstorm")
    assert run.state == "failed"
    assert "TransientHTTPError" in run.reason and "503" in run.reason
    assert run.items_written == 100  # the pages before the storm were written


def test_malformed_page_fails_the_run_not_the_worker(pipeline: Pipeline):
    p = pipeline
    p.api.set_items("bad", 150)
    p.api.fail("/cursor/bad", 200, when={"cursor": "50"}, body=b'{"data": [{"id": 1},')
    run = p.client.resync("api", "bad")
    assert run.state == "failed"
    assert "MalformedPage" in run.reason and "not JSON" in run.reason
    assert p.workers.process and p.workers.process.poll() is None
    # The same workers go on: the next resync of the kind succeeds.
    assert p.client.resync("api", "bad").state == "succeeded"


def test_page_without_the_items_path_fails_with_a_clear_message(pipeline: Pipeline):
    p = pipeline
    p.api.set_items("noitems", 10)
    run = p.client.resync("api", "noitems")
    assert run.state == "failed"
    assert "items path 'data' is not a list" in run.reason


def test_second_resync_while_one_runs_is_skipped(pipeline: Pipeline):
    p = pipeline
    p.api.set_items("slow", 200)
    p.api.state.delays["/cursor/slow"] = 0.3
    first = p.client.start("api", "slow")
    second = p.client.start("api", "slow")
    assert first.state == "running"
    assert second.state == "skipped"
    assert first.run_id in second.reason
    assert p.client.wait(first.run_id).state == "succeeded"
    # Once the first run ended, the lock is free again.
    p.api.state.delays.clear()
    assert p.client.resync("api", "slow").state == "succeeded"


def test_redelivered_batches_count_once(pipeline: Pipeline):
    """The same batch published three times (as a broker redelivery would) counts once."""
    p = pipeline
    items = p.api.set_items("dup", 60)
    progress = p.client.progress
    run = progress.create_run("api", "dup")
    run_id = run.run_id
    batches = {1: items[:50], 2: items[50:]}
    for seq, batch in batches.items():
        progress.record_page(run_id, "api", "dup", PageRecord(
            batches=(seq,), items=len(batch), checkpoint={"cursor": str(seq)}))
    for seq in (1, 1, 2, 1):
        messages.batch(p.client.app, run_id, "api", "dup", seq, batches[seq],
                       run_seq=run.run_seq)

    def handled() -> int:  # the four messages' tasks that ended, as the workers' log says
        return sum(1 for line in p.workers.log.read_text().splitlines()
                   if "sluice.ingest_batch[" in line and " succeeded in " in line
                   and f"'run_id': '{run_id}'" in line)

    p.workers.child.wait_until(lambda: handled() == 4, timeout=60)
    assert progress.producer_done(run_id)  # this caller is elected to finalize ...
    assert not progress.producer_done(run_id)  # ... and only this one
    run = progress.get(run_id)
    assert (run.batches_done, run.items_written, run.in_flight) == (2, 60, 0)
    messages.finalize(p.client.app, run_id)
    assert p.client.wait(run_id).state == "succeeded"


def test_stale_entities_are_deleted_after_a_clean_run_within_the_guard(pipeline: Pipeline):
    p = pipeline
    items = p.api.set_items("stale", 100)
    assert p.client.resync("api", "stale").state == "succeeded"
    assert len(p.rows("stale")) == 100

    # 20 items vanished from the API: a clean run deletes them.
    del items[80:]
    run = p.client.resync("api", "stale")
    assert (run.state, run.deleted) == ("succeeded", 20)
    assert set(p.rows("stale")) == {i["id"] for i in items}

    # A failed run deletes nothing, even though 20 more are gone.
    del items[60:]
    p.api.fail("/cursor/stale", 503, times=5, when={"cursor": "50"})
    run = p.client.resync("api", "stale")
    assert run.state == "failed" and run.deleted == 0
    assert len(p.rows("stale")) == 80

    # An API that suddenly answers almost nothing: 75 of 80 (94%) is over the 90% guard, and
    # the run says so: partial, not succeeded.
    del items[5:]
    run = p.client.resync("api", "stale")
    assert run.state == "partial" and run.deleted == 0
    assert "refused to delete 75 of 80" in run.deletion_refused
    assert len(p.rows("stale")) == 80

    # And an empty answer never wipes the target.
    del items[:]
    run = p.client.resync("api", "stale")
    assert run.state == "partial" and run.deleted == 0
    assert "refused to delete 80 of 80" in run.deletion_refused
    assert len(p.rows("stale")) == 80
