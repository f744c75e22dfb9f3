"""The run record's Lua scripts (fakeredis with Lua; the integration tests use real Redis)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest

from integrations.secrets import Redactor
from tasks.runs import keys
from tasks.runs.deadletter import DeadLetter
from tasks.runs.progress import Cycle, PageRecord, Progress, RunState


@pytest.fixture
def progress() -> Progress:
    return Progress(fakeredis.FakeRedis(), lock_seconds=60, ttl=3600)


LETTER = DeadLetter(task="batch", source="src", kind="kind", items=[], error="x", attempts=1,
                    at=0.0, seq=2)


def page(batches: list[int], items: int, checkpoint: Any, **more: Any) -> PageRecord:
    return PageRecord(batches=tuple(batches), items=items, checkpoint=checkpoint, **more)


def recorder(progress: Progress) -> Callable[[PageRecord], Any]:
    """record_page on a new run of ("src", "kind")."""
    run_id = progress.create_run("src", "kind").run_id
    return lambda record: progress.record_page(run_id, "src", "kind", record)


def started(progress: Progress, pages: int = 2) -> str:
    run_id = progress.create_run("src", "kind").run_id
    for seq in range(1, pages + 1):
        progress.record_page(run_id, "src", "kind", page([seq], 10, {"cursor": str(seq)}))
    return run_id


def test_a_second_run_of_the_same_kind_is_skipped_until_the_first_ends(progress):
    first = progress.create_run("src", "kind")
    second = progress.create_run("src", "kind")
    assert (first.state, second.state) == ("running", "skipped")
    assert second.reason == f"run {first.run_id} of this source and kind is still running"
    assert progress.create_run("src", "other").state == "running"
    progress.finish(first, RunState.SUCCEEDED)
    assert progress.create_run("src", "kind").state == "running"


def test_pages_recorded_twice_count_once(progress):
    run_id = started(progress, pages=2)
    progress.record_page(run_id, "src", "kind", page([2], 10, {"cursor": "2"}))
    run = progress.get(run_id)
    assert (run.pages, run.batches_enqueued, run.items_fetched) == (2, 2, 20)
    assert progress.partition(run_id, 0) == (True, {"cursor": "2"}, False)
    assert progress.published(run_id) == {1, 2}


def test_a_redelivered_batch_counts_once(progress):
    run_id = started(progress)
    progress.batch_done(run_id, "src", "kind", 1, written=10, rejected=[{"seq": 1, "index": 0}])
    progress.batch_done(run_id, "src", "kind", 1, written=10, rejected=[{"seq": 1, "index": 0}])
    run = progress.get(run_id)
    assert (run.batches_done, run.items_written, run.items_rejected) == (1, 10, 1)
    assert len(progress.rejected(run_id)) == 1 and run.in_flight == 1


def test_rows_deleted_by_tombstones_count_once_on_the_run_its_child_and_the_metrics(progress):
    from tasks.operator.watch import summary_text

    run_id = started(progress)
    for _ in range(2):  # redelivered: counted once
        progress.batch_done(run_id, "src", "kind", 1, written=7, rejected=[], deleted=3)
    progress.batch_done(run_id, "src", "kind", 2, written=0, rejected=[], deleted=2,
                        child="comment")
    run = progress.get(run_id)
    assert (run.items_deleted, run.deleted, run.children["comment"]["items_deleted"]) \
        == (5, 0, 2)
    assert progress.metrics()[("items_deleted", "src", "kind")] == 5
    assert "5 deleted (5 by the API's tombstones)" in summary_text(run)


def test_exactly_one_caller_is_elected_to_finalize(progress):
    run_id = started(progress)
    assert not progress.batch_done(run_id, "src", "kind", 1, written=10, rejected=[])
    assert not progress.producer_done(run_id)  # batch 2 still in flight
    assert progress.batch_done(run_id, "src", "kind", 2, written=10, rejected=[])
    assert progress.get(run_id).state == "finalizing"
    assert not progress.batch_done(run_id, "src", "kind", 2, written=10, rejected=[])
    assert not progress.producer_done(run_id)


def test_a_split_producer_is_done_when_every_partition_is(progress):
    run_id = started(progress)
    progress.split(run_id, [{"checkpoint": {"lo": 0}}, {"checkpoint": {"lo": 5}}, {"key": "r3"}])
    assert progress.partition(run_id, 1) == (True, {"lo": 5}, False)
    assert progress.key(run_id, 2) == "r3"
    for seq in (1, 2):
        progress.batch_done(run_id, "src", "kind", seq, written=10, rejected=[])
    assert not progress.producer_done(run_id, partition=0)
    assert not progress.producer_done(run_id, partition=2)
    assert not progress.producer_done(run_id, partition=2)  # a redelivered partition
    assert progress.partition(run_id, 2)[2] is True
    assert progress.producer_done(run_id, partition=1)
    assert progress.get(run_id).state == "finalizing"


def test_an_error_in_one_partition_ends_the_producer_side(progress):
    run_id = started(progress)
    progress.split(run_id, [{"key": "a"}, {"key": "b"}])
    for seq in (1, 2):
        progress.batch_done(run_id, "src", "kind", seq, written=10, rejected=[])
    assert progress.producer_done(run_id, partition=1, error="PermanentHTTPError: 404")
    assert progress.get(run_id).error == "PermanentHTTPError: 404"


def test_the_producer_finishing_last_is_elected(progress):
    run_id = started(progress)
    for seq in (1, 2):
        assert not progress.batch_done(run_id, "src", "kind", seq, written=10, rejected=[])
    assert progress.producer_done(run_id)


def test_a_dead_letter_keeps_its_items_and_a_later_success_recovers_the_run(progress):
    run_id = started(progress)
    progress.batch_done(run_id, "src", "kind", 1, written=10, rejected=[])
    progress.producer_done(run_id)
    letter = DeadLetter(task="batch", source="src", kind="kind", items=[{"id": 1}],
                        error="down", attempts=4, at=1.0, seq=2)
    assert progress.batch_failed(run_id, 2, dead_letter=letter)
    assert not progress.batch_failed(run_id, 2, dead_letter=letter)  # counted once
    run = progress.get(run_id)
    assert run.batches_failed == 1 and progress.dead_letters(run_id) == {2: letter}
    progress.finish(run, RunState.FAILED, reason="1 batch dead-lettered")
    assert progress.r.get(keys.lock("src", "kind")) is None  # the run no longer blocks its kind
    assert not progress.batch_done(run_id, "src", "kind", 2, written=1, rejected=[])
    run = progress.get(run_id)
    assert (run.state, run.batches_failed, run.items_written) == ("succeeded", 0, 11)
    assert progress.dead_letters(run_id) == {}


def test_a_producer_error_keeps_a_recovered_run_failed(progress):
    run_id = started(progress)
    progress.batch_done(run_id, "src", "kind", 1, written=10, rejected=[])
    progress.producer_done(run_id, error="MalformedPage: boom")
    progress.batch_failed(run_id, 2, dead_letter=LETTER)
    progress.finish(progress.get(run_id), RunState.FAILED)
    progress.batch_done(run_id, "src", "kind", 2, written=10, rejected=[])
    assert progress.get(run_id).state == "failed"


def test_finish_releases_only_its_own_lock_and_sets_ttls(progress):
    run = progress.create_run("src", "kind")
    progress.r.set(keys.lock("src", "kind"), "someone-else")
    progress.finish(run, RunState.FAILED, reason="x")
    assert progress.r.get(keys.lock("src", "kind")) == b"someone-else"
    assert 0 < progress.r.ttl(keys.run(run.run_id)) <= 3600
    rec = progress.get(run.run_id)
    assert rec.state == "failed" and rec.reason == "x" and rec.ended_at >= rec.started_at


def test_a_run_without_progress_is_marked_stalled_and_frees_its_kind(progress):
    run_id = started(progress)
    fresh = progress.create_run("src", "other").run_id
    now = progress.get(run_id).updated_at + 100
    progress.r.hset(keys.run(fresh), "updated_at", repr(now - 1))
    stalled = progress.mark_stalled(after=60, now=now)
    assert [r.run_id for r in stalled] == [run_id]
    assert stalled[0].state == "stalled" and "no progress for 100 s" in stalled[0].reason
    assert [r.run_id for r in progress.active()] == [fresh]
    assert progress.mark_stalled(after=60, now=now) == []  # once
    assert progress.create_run("src", "kind").state == "running"


def test_counters_per_source_and_kind_for_prometheus(progress):
    run_id = started(progress)  # 2 pages of 10
    progress.batch_done(run_id, "src", "kind", 1, written=9, rejected=[{"seq": 1}])
    progress.batch_done(run_id, "src", "kind", 1, written=9, rejected=[{"seq": 1}])
    progress.producer_done(run_id)
    progress.batch_failed(run_id, 2, dead_letter=LETTER)
    progress.finish(progress.get(run_id), RunState.FAILED)
    progress.create_run("src", "kind")
    progress.create_run("src", "kind")  # skipped
    m = progress.metrics()
    assert m[("pages", "src", "kind")] == 2 and m[("items_fetched", "src", "kind")] == 20
    assert m[("items_written", "src", "kind")] == 9 and m[("items_rejected", "src", "kind")] == 1
    assert m[("batches_failed", "src", "kind")] == 1
    assert m[("runs", "src", "kind", "failed")] == 1 and m[("runs", "src", "kind", "skipped")] == 1
    assert m[("run_seconds_count", "src", "kind")] == 1
    assert m[("run_seconds_sum", "src", "kind")] >= 0


def test_the_prometheus_exposition(progress):
    from prometheus_client import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from tasks.operator.exporter import SluiceCollector

    run_id = started(progress)
    progress.batch_done(run_id, "src", "kind", 1, written=10, rejected=[])
    progress.create_run("src", "kind")  # skipped: the first run still holds the kind
    registry = CollectorRegistry()
    registry.register(SluiceCollector(progress))
    text = generate_latest(registry).decode()
    assert 'sluice_items_written_total{kind="kind",source="src"} 10.0' in text
    assert 'sluice_pages_total{kind="kind",source="src"} 2.0' in text
    assert 'sluice_runs_total{kind="kind",source="src",state="skipped"} 1.0' in text
    assert 'sluice_runs_active{kind="kind",source="src"} 1.0' in text


def test_a_run_stuck_finalizing_is_marked_stalled_and_frees_its_kind(progress):
    run_id = started(progress, pages=1)
    progress.producer_done(run_id)
    assert progress.batch_done(run_id, "src", "kind", 1, written=10, rejected=[])
    assert progress.get(run_id).state == "finalizing"  # and its finalize never comes
    [stalled] = progress.mark_stalled(after=60, now=progress.get(run_id).updated_at + 61)
    assert stalled.state == "stalled" and "while finalizing" in stalled.reason
    assert progress.create_run("src", "kind").state == "running"


def test_a_state_asked_for_again_by_another_page_is_a_cycle(progress):
    record = recorder(progress)
    assert record(page([1], 5, {"next": {"cursor": "A"}, "seq": 2})) == (1,)
    assert record(page([2], 5, {"next": {"cursor": "B"}, "seq": 3})) == (2,)
    # the same page recorded again (a redelivered slice) is no cycle
    assert record(page([2], 5, {"next": {"cursor": "B"}, "seq": 3})) == (2,)
    assert record(page([3], 5, {"next": {"cursor": "A"}, "seq": 4})) == Cycle(2)


def test_the_same_items_on_another_page_are_a_cycle(progress):
    record = recorder(progress)
    assert record(page([1], 1, None, items_digest="d1")) == (1,)
    assert record(page([1], 1, None, items_digest="d1")) == (1,)  # redelivered
    assert record(page([2], 1, None, items_digest="d1")) == Cycle(1, "items")


def test_run_sequence_numbers_only_grow(progress):
    first = progress.create_run("src", "a").run_seq
    progress.r.set(keys.RUN_SEQ, first + 10**9)  # a clock far ahead once: still growing
    second = progress.create_run("src", "b").run_seq
    progress.r.delete(keys.RUN_SEQ)  # Redis lost its data: the clock takes over
    third = progress.create_run("src", "c").run_seq
    assert first < second and first < third and second == first + 10**9 + 1


def test_checkpoints_and_errors_are_redacted(progress):
    progress.redactor = Redactor(["s3cret-key"])
    run_id = progress.create_run("src", "kind").run_id
    progress.record_page(run_id, "src", "kind", page(
        [1], 1, {"next": {"url": "https://x/?api_key=s3cret-key&page=2"}, "seq": 2}))
    progress.producer_done(run_id, error="GET https://x/?api_key=s3cret-key failed")
    stored = b"".join(v for v in progress.r.hgetall(keys.run(run_id)).values())
    assert b"s3cret-key" not in stored and b"api_key=***" in stored


def test_the_page_that_closes_a_cycle_is_counted_and_rejected_previews_are_redacted(progress):
    progress.redactor = Redactor(["s3cret-key"])
    record = recorder(progress)
    record(page([1], 5, {"next": {"cursor": "A"}, "seq": 2}))
    assert record(page([2], 5, {"next": {"cursor": "A"}, "seq": 3})) == Cycle(2)
    run_id = progress.active()[0].run_id
    run = progress.get(run_id)
    assert (run.pages, run.batches_enqueued, run.items_fetched) == (2, 2, 10)
    progress.batch_done(run_id, "src", "kind", 2, written=4, rejected=[
        {"seq": 2, "index": 0, "reason": "no identifier", "item": "{'token': 's3cret-key'}"}])
    assert progress.rejected(run_id)[0]["item"] == "{'token': '***'}"


def test_an_empty_page_is_remembered_so_a_resumed_plan_skips_it(progress):
    run_id = progress.create_run("src", "kind").run_id
    progress.record_page(run_id, "src", "kind", page([], 0, {"plan": {}}, page=5))
    progress.record_page(run_id, "src", "kind", page([3], 10, {"plan": {}}, page=3))
    assert progress.published(run_id) == {3, 5}
    assert progress.get(run_id).batches_enqueued == 1


def test_recent_reads_the_newest_records_in_one_round_trip_and_skips_expired_ones(
        progress: Progress, monkeypatch: pytest.MonkeyPatch):
    runs = [progress.create_run(f"s{i}", "k") for i in range(4)]
    for i, run in enumerate(runs):
        progress.r.zadd(keys.RUNS, {run.run_id: 1000 + i})  # a known order
    progress.record_page(runs[3].run_id, "s3", "k", page([1, 2], 10, None))
    progress.r.delete(keys.run(runs[2].run_id))  # expired
    pipelines = []
    pipeline = progress.r.pipeline
    monkeypatch.setattr(progress.r, "pipeline",
                        lambda *a, **kw: pipelines.append(1) or pipeline(*a, **kw))
    recent = progress.recent(3)
    assert [r.run_id for r in recent] == [runs[3].run_id, runs[1].run_id]
    assert recent[0].in_flight == 2 and recent[1].in_flight == 0
    assert len(pipelines) == 1


def test_the_run_list_forgets_ids_older_than_the_record_ttl(progress):
    """sluice:runs has no TTL: without a trim it grew by a run for good (ops/bench/soak.py)."""
    now = time.time()
    progress.r.zadd(keys.RUNS, {"expired-run": now - 3601, "recent-run": now - 3500})
    run = progress.create_run("src", "kind")
    listed = {i.decode() for i in progress.r.zrange(keys.RUNS, 0, -1)}
    assert listed == {"recent-run", run.run_id}
    for _ in range(50):
        progress.finish(progress.create_run("src", "kind"), RunState.SUCCEEDED)
    assert progress.r.zcard(keys.RUNS) == 52  # none older than the TTL: kept


def test_the_watch_keeps_a_long_run_and_drops_one_whose_record_is_gone(progress: Progress):
    """A run longer than the record's TTL used to lose its record mid-run and never end
    (ops/bench/soak.py); an active id without a record stayed listed for good."""
    long = started(progress)
    progress.r.expire(keys.run(long), 5)  # as if most of its TTL had passed while it ran
    forgotten = progress.create_run("src", "other").run_id
    progress.r.sadd(keys.run_done(forgotten), 1)  # a set of the run, written without a TTL
    progress.r.delete(keys.run(forgotten))  # its record expired, or a Redis forgot it
    assert progress.watch(stall_after=900) == []
    assert progress.r.ttl(keys.run(long)) > 3000  # its TTL started again: it goes on
    assert progress.get(long) is not None
    active = {i.decode() for i in progress.r.zrange(keys.ACTIVE, 0, -1)}
    assert active == {long}
    assert 0 < progress.r.ttl(keys.run_done(forgotten)) <= 3600  # nothing kept for good


def test_a_run_that_ends_says_so_on_the_ended_channel_and_only_then(progress):
    """What `sluice run --wait` wakes on (tasks/operator/watch.py)."""
    listener = progress.r.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(keys.RUNS_ENDED)
    run = progress.create_run("api", "a")
    progress.record_page(run.run_id, "api", "a", page([1], 10, None))
    progress.producer_done(run.run_id)
    assert listener.get_message(timeout=0.01) is None  # running: no word yet
    assert progress.batch_done(run.run_id, "api", "a", 1, written=10, rejected=[])  # finalize
    assert listener.get_message(timeout=0.01) is None  # finalizing is not ended
    assert progress.finish(run, RunState.SUCCEEDED)
    message = listener.get_message(timeout=1)
    assert message is not None and message["data"] == run.run_id.encode()
    listener.close()
