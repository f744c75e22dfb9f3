"""``finalize.outcome``: how a run ends, row by row of the table in tasks/finalize.py, on a
Runtime whose run records live in fakeredis and whose target is SQLite (no workers)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tasks.finalize import outcome
from tasks.runs.progress import Run, RunState
from tasks.targets.base import Entity, Typed
from tasks.worker.runtime import Runtime
from tests.support.stages import fake_runtime

HELD = 10  # rows the kind holds from an earlier run (run_seq 1)


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    rt = fake_runtime(tmp_path)
    write(rt, HELD, run_seq=1)
    yield rt
    rt.close()


def write(rt: Runtime, count: int, *, run_seq: int = 2) -> None:
    """Run ``run_seq`` (by default: the one that ends) wrote the first ``count`` rows; the
    rest, written before, are stale."""
    rt.target().upsert([Entity(identifier=str(i), kind="item", source="api", data={"id": i})
                        for i in range(count)], run_id=f"run{run_seq}", run_seq=run_seq)


def ended(**fields: Any) -> Run:
    """A run of api/item that is finalizing, with ``fields`` of its record."""
    return Run(run_id="r", source="api", kind="item", state=RunState.FINALIZING, run_seq=2,
               items_fetched=HELD, **fields)


def held(rt: Runtime) -> int:
    return sum(n for source, kind, n in rt.target().counts() if (source, kind) == ("api", "item"))


@pytest.mark.parametrize("fields, state, why", [
    ({"error": "HTTPStatusError: 503"}, RunState.FAILED, "producer: HTTPStatusError: 503"),
    ({"batches_failed": 2}, RunState.FAILED, "2 batch(es) dead-lettered"),
    ({"items_rejected": 2}, RunState.FAILED, "2 of 10 items rejected (20.0%)"),
    ({"incomplete": "a full last page without a next link"}, RunState.PARTIAL,
     "paging may be incomplete: a full last page without a next link"),
    ({"items_expected": 12}, RunState.PARTIAL,
     "the API said there are 12 items, but 10 were read"),
])
def test_a_run_in_doubt_deletes_nothing(rt: Runtime, fields: dict[str, Any], state: RunState,
                                        why: str):
    write(rt, 1)  # nine of ten would be stale
    got, recorded = outcome(rt, ended(**fields))
    assert got == state
    assert why in (recorded.get("reason") or recorded["deletion_refused"])
    assert held(rt) == HELD


def test_within_max_rejected_a_clean_run_deletes_what_it_did_not_write_again(rt: Runtime):
    write(rt, HELD - 1)
    state, fields = outcome(rt, ended(items_rejected=0))
    assert (state, fields) == (RunState.SUCCEEDED, {"deleted": 1})
    assert held(rt) == HELD - 1


def test_the_deletion_guard_refuses_a_large_share_and_the_run_is_partial(rt: Runtime):
    write(rt, HELD // 2)
    state, fields = outcome(rt, ended())
    assert state == RunState.PARTIAL
    assert fields["deletion_refused"] == ("refused to delete 5 of 10 entities (50.0%): "
                                          "delete_threshold is 20%")
    assert held(rt) == HELD


def test_an_incremental_run_deletes_nothing_and_says_so(rt: Runtime):
    write(rt, 1)
    state, fields = outcome(rt, ended(incremental=True))
    assert state == RunState.SUCCEEDED
    assert fields["deletion_skipped"] == ("an incremental run reads only what changed: "
                                          "it deletes nothing")
    assert held(rt) == HELD


def test_a_target_that_does_not_delete_succeeds_and_says_so(tmp_path: Path):
    rt = fake_runtime(tmp_path, target={"type": "http", "url": "http://127.0.0.1:9/{kind}"})
    try:
        state, fields = outcome(rt, ended())
    finally:
        rt.close()
    assert (state, fields) == (RunState.SUCCEEDED, {
        "deletion_skipped": "the http target does not delete stale entities"})


SLICES = {"param_from": "created[gte]", "param_to": "created[lt]",
          "start": "2024-01-01T00:00:00Z", "end": "2024-01-02T00:00:00Z", "step": "6h"}


def sliced(tmp: Path, **more: Any) -> Runtime:
    return fake_runtime(tmp, kinds={"item": {
        "path": "/cursor/item", "items": "data", "slices": {**SLICES, **more},
        "paginator": {"type": "cursor", "cursor_path": "next_cursor", "limit": 10}}})


def skipped_deletion(rt: Runtime) -> str:
    """Run 1 wrote ``HELD`` rows, the run that ends one fewer: it must end succeeded with all
    ``HELD`` rows still held. What it said of the deletion it skipped."""
    try:
        write(rt, HELD, run_seq=1)
        write(rt, HELD - 1)
        state, fields = outcome(rt, ended())
        assert held(rt) == HELD
    finally:
        rt.close()
    assert state == RunState.SUCCEEDED
    return fields["deletion_skipped"]


def test_a_sliced_run_without_a_field_deletes_nothing_and_says_so(tmp_path: Path):
    assert "without slices.field" in skipped_deletion(sliced(tmp_path))


def test_a_sliced_run_deletes_only_the_stale_entities_its_windows_held(tmp_path: Path):
    rt = sliced(tmp_path, field="created")
    try:
        slices = rt.integration("api").slices("item")
        assert slices is not None
        rt.windows.cut("r", slices.cut(*slices.span(now=0)), incremental=False)
        rt.target().upsert([Entity(identifier=f"old-{i}", kind="item", source="api",
                                   data={"id": i, "created": c}) for i, c in enumerate(
            ["2024-01-01T05:00:00Z", "2023-01-01T00:00:00Z", "2025-01-01T00:00:00Z"])],
            run_id="run1", run_seq=1)
        write(rt, HELD, run_seq=1)
        write(rt, HELD)  # run 2 wrote these ten again, none of the three old ones
        state, fields = outcome(rt, ended())
        ids = {e["identifier"] for e in rt.target().read("api", "item", limit=100)}
    finally:
        rt.close()
    assert (state, fields.get("deleted")) == (RunState.SUCCEEDED, 1), fields
    assert ids == {*map(str, range(HELD)), "old-1", "old-2"}  # before and after the span


def test_a_sliced_run_moves_out_of_entities_only_what_it_wrote_into_the_kinds_table(
        tmp_path: Path):
    """A kind given a mapping: a sliced run read only its windows, so of its rows left in
    entities only those it wrote into the table go; one before the span stays (not lost)."""
    from tasks.write.mapped import write_mapped

    rt = fake_runtime(tmp_path, kinds={"item": {
        "path": "/cursor/item", "items": "data", "slices": {**SLICES, "field": "created"},
        "paginator": {"type": "cursor", "cursor_path": "next_cursor", "limit": 10},
        "mapping": {"table": "items", "properties": {"created": ".created"}}}})
    try:
        slices = rt.integration("api").slices("item")
        assert slices is not None
        rt.windows.cut("r", slices.cut(*slices.span(now=0)), incremental=False)
        old = [{"id": f"old-{i}", "created": c} for i, c in
               enumerate(["2024-01-01T05:00:00Z", "2023-01-01T00:00:00Z"])]
        rt.target().upsert([Entity(identifier=o["id"], kind="item", source="api", data=o)
                            for o in old], run_id="run1", run_seq=1)
        mapping = rt.integration("api").mapping("item")
        assert mapping is not None
        target = rt.target()
        assert isinstance(target, Typed)
        write_mapped(target, mapping, "api", 0, [old[0], *({"id": f"n-{i}", "created":
                     "2024-01-01T06:00:00Z"} for i in range(HELD))], run_id="r", run_seq=2)
        state, fields = outcome(rt, ended())
        left = {e["identifier"] for e in rt.target().read("api", "item", limit=100)}
    finally:
        rt.close()
    assert (state, fields.get("moved")) == (RunState.SUCCEEDED, 1), fields
    assert left == {"old-1"}


def test_a_sliced_run_whose_span_held_no_window_deletes_nothing_and_says_so(tmp_path: Path):
    rt = sliced(tmp_path, field="created")  # and no windows were cut (an empty span)
    assert skipped_deletion(rt) == ("the run's span held no window: it read nothing, "
                                    "so it deletes nothing")
