"""The producer's slice (tasks/resync.py ``Slice``) without workers: the run record in
fakeredis, the fake API on loopback, the batches it publishes kept in this process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integrations.fakeapi import FakeAPI
from tasks import messages
from tasks.resync import Slice
from tasks.runs.progress import Run
from tasks.worker import runtime
from tasks.worker.runtime import Runtime
from tests.support.stages import Outbox, fake_runtime


@pytest.fixture
def outbox() -> Outbox:
    return Outbox()


@pytest.fixture
def rt(tmp_path: Path, api: FakeAPI) -> Iterator[Runtime]:
    rt = fake_runtime(tmp_path, base_url=api.url, producer_slice_pages=2)
    yield rt
    rt.close()


def produce(rt: Runtime, run: Run, outbox: Outbox, partition: int = 0) -> bool:
    got = rt.progress.get(run.run_id)
    assert got is not None
    return Slice(rt, got, partition, sender=outbox.app).produce()


def published(outbox: Outbox) -> list[tuple[int, list[int]]]:
    """(seq, item ids) of each batch sent since the last look, in order."""
    return batches(outbox.take())


def batches(sent: list[tuple[str, list[Any], dict[str, Any]]]) -> list[tuple[int, list[int]]]:
    return [(args[3], [i["id"] for i in json.loads(args[4])])
            for name, args, _ in sent if name == messages.INGEST]


def test_a_slice_stops_after_its_pages_and_the_next_goes_on_from_the_checkpoint(
        rt: Runtime, api: FakeAPI, outbox: Outbox):
    items = api.set_items("item", 45)  # five pages of ten
    run = rt.progress.create_run("api", "item")
    assert produce(rt, run, outbox) is False  # two pages: the slice is over, a task goes on
    first = published(outbox)
    assert [seq for seq, _ in first] == [1, 2]
    assert produce(rt, run, outbox) is False
    assert produce(rt, run, outbox) is True  # the last page is out
    rest = published(outbox)
    assert [seq for seq, _ in rest] == [3, 4, 5]
    assert [i for _, ids in first + rest for i in ids] == [i["id"] for i in items]
    assert len(api.requests("/cursor/item")) == 5  # no page asked for twice
    recorded = rt.progress.get(run.run_id)
    assert recorded is not None
    assert (recorded.pages, recorded.items_fetched, recorded.batches_enqueued) == (5, 45, 5)


def test_a_redelivered_slice_of_a_finished_partition_publishes_nothing(
        rt: Runtime, api: FakeAPI, outbox: Outbox):
    api.set_items("item", 15)
    run = rt.progress.create_run("api", "item")
    assert produce(rt, run, outbox) is True
    assert len(published(outbox)) == 2
    assert produce(rt, run, outbox) is True
    assert published(outbox) == []
    assert len(api.requests("/cursor/item")) == 2


def test_backpressure_ends_the_slice_without_asking_for_more_pages(
        tmp_path: Path, api: FakeAPI, outbox: Outbox):
    api.set_items("item", 50)
    rt = fake_runtime(tmp_path, base_url=api.url, source={"max_in_flight": 2})
    try:
        run = rt.progress.create_run("api", "item")
        assert produce(rt, run, outbox) is False  # nothing written: it hands the process back
        assert [seq for seq, _ in published(outbox)] == [1, 2]
        assert len(api.requests("/cursor/item")) == 2
        for seq in (1, 2):  # the workers wrote them: room again
            rt.progress.batch_done(run.run_id, "api", "item", seq, written=10, rejected=[])
        assert produce(rt, run, outbox) is False
        assert [seq for seq, _ in published(outbox)] == [3, 4]
    finally:
        rt.close()


def test_a_sigterm_ends_the_slice_after_the_page_in_hand(rt: Runtime, api: FakeAPI,
                                                         outbox: Outbox):
    api.set_items("item", 50)
    run = rt.progress.create_run("api", "item")
    runtime.STOPPING.set()
    try:
        assert produce(rt, run, outbox) is False
    finally:
        runtime.STOPPING.clear()
    assert published(outbox) == []  # asked for nothing: the next task starts from page 1
    assert produce(rt, run, outbox) is False
    assert [seq for seq, _ in published(outbox)] == [1, 2]


def test_a_known_total_splits_the_kind_into_page_ranges_for_other_producers(
        tmp_path: Path, api: FakeAPI, outbox: Outbox):
    items = api.set_items("p", 60)  # six pages of ten
    kinds = {"p": {"path": "/offset/p", "items": "values", "paginator": {
        "type": "offset", "offset_param": "startAt", "limit_param": "maxResults", "limit": 10,
        "total_path": "total"}}}
    rt = fake_runtime(tmp_path, base_url=api.url, kinds=kinds, source={"partitions": 3},
                      producer_slice_pages=100)
    try:
        run = rt.progress.create_run("api", "p")
        assert produce(rt, run, outbox) is True  # partition 0: its range only
        sent = outbox.take()
        handed = [(args, kwargs) for name, args, kwargs in sent if name == messages.RESYNC]
        assert handed == [(["api", "p"], {"run_id": run.run_id, "partition": 1}),
                          (["api", "p"], {"run_id": run.run_id, "partition": 2})]
        for partition in (1, 2):
            assert produce(rt, run, outbox, partition) is True
        every = batches(sent) + published(outbox)
        assert sorted(i for _, ids in every for i in ids) == sorted(i["id"] for i in items)
        assert len({seq for seq, _ in every}) == 6  # one numbering across the partitions
        assert len(api.requests("/offset/p")) == 6
        recorded = rt.progress.get(run.run_id)
        assert recorded is not None
        assert (recorded.partitions, recorded.pages, recorded.items_fetched) == (3, 6, 60)
    finally:
        rt.close()
