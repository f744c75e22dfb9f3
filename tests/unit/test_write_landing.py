"""The write stage's one decision (``tasks.write.landing``): a kind lands in its typed table
when it has a mapping and the target has tables, else in ``entities``; writing, the
identifier and stale deletion all follow the same decision."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.worker.runtime import Runtime
from tasks.write.landing import Landing, landing
from tests.support.stages import fake_runtime

KIND = {"path": "/cursor/item", "items": "data",
        "paginator": {"type": "cursor", "cursor_path": "next_cursor", "limit": 10}}
MAPPED = {**KIND, "mapping": {"table": "items", "identifier": ".key",
                              "properties": {"n": {"jq": ".n", "type": "integer"}}}}


def lands(rt: Runtime) -> Landing:
    return landing(rt.integration("api"), rt.target(), "api", "item")


def test_a_mapped_kind_lands_in_its_table_and_is_deleted_from_it(tmp_path: Path) -> None:
    rt = fake_runtime(tmp_path, kinds={"item": MAPPED})
    try:
        place = lands(rt)
        assert place.table == "items"
        assert place.identifier({"key": "a", "id": "not this"}) == "a"
        items: list[Any] = [{"key": "a", "n": 1}, {"n": 2}, {"key": "b", "n": "x"}]
        done = place.write(items, seq=3, run_id="r1", run_seq=1)
        assert (done.written, done.skipped, list(done.landed)) == (1, 0, ["a"])
        assert [(r["index"], r["seq"]) for r in done.rejected] == [(1, 3), (2, 3)]
        assert [r["identifier"] for r in rt.target().read_rows("items", limit=10)] == ["a"]
        assert rt.target().read("api", "item", limit=10) == []  # nothing in entities
        place.write([{"key": "b", "n": 2}], seq=0, run_id="r2", run_seq=2)
        gone = place.delete_stale(run_seq=2, threshold=1.0)
        assert gone.deleted == 1
        assert [r["identifier"] for r in rt.target().read_rows("items", limit=10)] == ["b"]
    finally:
        rt.close()


def test_a_kind_without_a_mapping_lands_in_entities(tmp_path: Path) -> None:
    rt = fake_runtime(tmp_path, kinds={"item": KIND})
    try:
        place = lands(rt)
        assert (place.mapping, place.table) == (None, None)
        done = place.write([{"id": 1}, {"v": "no id"}], seq=0, run_id="r1", run_seq=1)
        assert (done.written, [r["reason"] for r in done.rejected]) == (1, ["no identifier"])
        assert done.landed == {"1": {"id": 1}}
        assert [e["identifier"] for e in rt.target().read("api", "item", limit=10)] == ["1"]
        assert place.delete_moved(run_seq=1, threshold=1.0).deleted == 0
    finally:
        rt.close()


def test_a_mapping_on_a_target_without_tables_lands_in_entities(tmp_path: Path) -> None:
    """The http target has no tables: a mapped kind's items go whole, by the integration's
    identifier (not the mapping's), and nothing is moved out of entities."""
    rt = fake_runtime(tmp_path, kinds={"item": MAPPED},
                      target={"type": "http", "url": "http://127.0.0.1:9/{kind}"})
    try:
        place = lands(rt)
        assert (place.mapping, place.table) == (None, None)
        assert place.identifier({"key": "a", "id": 7}) == "7"
        assert place.delete_moved(run_seq=1, threshold=1.0).deleted == 0
    finally:
        rt.close()
