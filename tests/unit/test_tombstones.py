"""Deletion tombstones (a kind's ``deleted``): which items are tombstones, how a batch is
split into what is written and what is deleted, and the deletion in the target."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from integrations.rest.settings import RestSettings
from integrations.tombstones import Tombstones
from tasks.targets.sqlite import SqliteTarget
from tasks.write.tombstones import without_tombstones


def test_an_item_is_a_tombstone_when_the_expression_is_true_in_python_or_jq():
    python = Tombstones(".deleted == true")
    assert python.python is not None  # the usual shape runs without jq
    assert python.marks([{"id": 1}, {"id": 2, "deleted": True}, {"id": 3, "deleted": "yes"},
                         "a string", None]) == [False, True, False, False, False]
    jq_only = Tombstones('.status | ascii_downcase | . == "deleted"')
    assert jq_only.python is None
    assert jq_only.marks([{"status": "DELETED"}, {"status": "open"}, {"status": 5}, 7]) \
        == [True, False, False, False]  # jq fails on 5 and 7: no tombstones
    assert Tombstones(".gone").marks([{"gone": 0}, {"gone": None}, {}, {"gone": []}]) \
        == [True, False, False, True]  # jq's truth: all but null and false
    assert Tombstones("empty").marks([{"id": 1}]) == [False]


def test_a_deleted_expression_jq_does_not_compile_is_a_config_error_naming_the_key():
    def settings(deleted: Any) -> RestSettings:
        return RestSettings.model_validate({
            "integration": "rest", "base_url": "http://x",
            "kinds": {"k": {"path": "/k", "deleted": deleted}}})

    assert settings(".deleted == true").kinds["k"].deleted == ".deleted == true"
    with pytest.raises(ValidationError, match=r"kinds\.k\.deleted[\s\S]*is not valid jq"):
        settings(".deleted ==")


def identify(item: Any) -> str | None:
    return str(item["id"]) if isinstance(item, dict) and "id" in item else None


TOMBSTONES = Tombstones(".deleted == true")


def test_a_batch_without_tombstones_is_left_as_it_is():
    assert without_tombstones(TOMBSTONES, identify, 3, [{"id": 1}, {"id": 2}]) is None


def test_the_later_item_of_an_identifier_wins_within_a_batch():
    items = [{"id": 1, "v": "old"}, {"id": 2, "deleted": True}, {"id": 1, "deleted": True},
             {"id": 2, "v": "back"}, {"id": 3, "v": "kept"}, {"deleted": True}, {"v": "no id"}]
    split = without_tombstones(TOMBSTONES, identify, 3, items)
    assert split is not None
    # 1: upserted, then deleted -> deleted; 2: deleted, then upserted -> written.
    assert split.delete == ["1"]
    assert split.items == [{"id": 2, "v": "back"}, {"id": 3, "v": "kept"}, {"v": "no id"}]
    assert split.origin == [3, 4, 6]  # an item without an id goes on: rejected where written
    assert [(r["seq"], r["index"], r["reason"]) for r in split.rejected] \
        == [(3, 5, "deleted: no identifier")]


def test_tombstones_delete_rows_of_entities_and_typed_tables_and_http_rejects_them(tmp_path):
    target = SqliteTarget(tmp_path / "t.db")
    target.upsert([{"identifier": i, "kind": "k", "source": "s", "data": {"id": i}}
                   for i in ("1", "2")], run_id="r", run_seq=1)
    split = without_tombstones(TOMBSTONES, identify, 0,
                               [{"id": 1, "deleted": True}, {"id": 9}, {"id": 7, "deleted": True}])
    assert split is not None
    rejected = [{"seq": 0, "index": 0, "reason": "unstorable: x", "item": "{}"}]
    assert split.apply(target, "s", "k", rejected, table=None) == 1  # 7 was never stored
    assert rejected[0]["index"] == 1  # a written item's rejection: its place in the batch
    assert {e["identifier"] for e in target.read("s", "k", limit=10)} == {"2"}
    # A typed table not made yet: nothing to delete, no error.
    assert split.apply(target, "s", "k", [], table="s_k") == 0

    class Http:  # no Ordered: deletes nothing (as tasks/webhook.py's write_unordered)
        supports_delete = False

    refused: list[dict[str, Any]] = []
    assert split.apply(Http(), "s", "k", refused, table=None) == 0  # type: ignore[arg-type]
    assert [(r["index"], r["reason"]) for r in refused] == [
        (0, "deleted: this target does not delete"), (2, "deleted: this target does not delete")]
