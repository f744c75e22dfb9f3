"""The run record's contract between Python and Lua: record_page's KEYS and ARGV by name and
in order, the field-name templates of keys.py and the metric names of metrics.py, as the Lua
scripts spell them. A rename or a slot moved on one side only fails here."""

from __future__ import annotations

import re
from importlib import resources

import fakeredis
import pytest

from integrations.secrets import Redactor
from tasks.runs import keys, metrics
from tasks.runs.progress import PageRecord, Progress, page_args, page_keys

LUA = resources.files("tasks.runs").joinpath("lua")
SCRIPTS = sorted(p.name.removesuffix(".lua") for p in LUA.iterdir() if p.name.endswith(".lua"))

# The field prefixes each script spells itself (a field built with `'prefix' .. x`, or named
# in its header as 'prefix{x}'); every other script spells none.
SPELLED = {
    "record_page": {keys.CHECKPOINT, keys.MARK, keys.SEEN_ITEMS},
    "split_window": {keys.WINDOW, keys.SINCE},
    "batch_done": {keys.CHILD},
    "batch_failed": {keys.CHILD},
    "record_children": {keys.CHILD},
}


def lua(name: str) -> str:
    return LUA.joinpath(f"{name}.lua").read_text()


def header(name: str, slot: str) -> list[str]:
    """The names a script's header gives its KEYS or ARGV slots, in slot order."""
    named = {int(n): word for n, word in
             re.findall(rf"^-- {slot}\[(\d+)\]\s+(\w+)", lua(name), re.M)}
    assert sorted(named) == list(range(1, len(named) + 1)), f"{name}: {slot} slots missing"
    return [named[i] for i in sorted(named)]


def test_record_page_builds_the_keys_and_argv_its_script_names_in_its_order() -> None:
    page = PageRecord(batches=(1,), items=1, checkpoint=None)
    args = page_args("r", page, now=0.0, lock_seconds=60, redactor=Redactor())
    assert list(page_keys("r", "s", "k")) == header("record_page", "KEYS")
    assert list(args) == header("record_page", "ARGV")
    # every slot the script reads is one its header names
    used = {int(n) for n in re.findall(r"ARGV\[(\d+)\]", lua("record_page"))}
    assert max(used) == len(args)


def test_a_page_argv_carries_the_field_templates_of_keys() -> None:
    page = PageRecord(batches=(), items=0, checkpoint={"next": {"cursor": "A"}, "seq": 4},
                      partition=3, page=7, newest="2024-01-01")
    args = page_args("r", page, now=0.0, lock_seconds=60, redactor=Redactor())
    assert (args["field"], args["newest_field"]) == ("checkpoint:3", "mark:3")
    assert (args["page"], args["next_seq"], args["batches"]) == (7, "4", "[]")
    assert args["newest_field"] == keys.mark_field(3) and args["mark"]
    unraised = PageRecord(batches=(5, 6), items=2, checkpoint=None, page=9)
    args = page_args("r", unraised, now=0.0, lock_seconds=60, redactor=Redactor())
    assert (args["newest_field"], args["mark"], args["page"]) == ("", "", 5)


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_scripts_spell_the_field_prefixes_keys_defines(name: str) -> None:
    spelled = set(re.findall(r"'([a-z_]+[:.])(?:\{|'\s*\.\.)", lua(name)))
    assert spelled == SPELLED.get(name, set())


def test_every_prefix_keys_defines_is_spelled_or_built_in_python_only() -> None:
    """The templates are what the prefixes make; a prefix no script spells is Python's."""
    assert keys.child_field("issue.comment", "items_written") == "child.issue.comment.items_written"
    assert keys.child_of("child.issue.comment.items_written") == ("issue.comment",
                                                                  "items_written")
    assert keys.child_of("checkpoint:1") is None
    assert keys.partition_of(keys.mark_field(12), keys.MARK) == 12
    assert keys.partition_of(keys.key_field(12), keys.MARK) is None
    python_only = {keys.KEY}
    assert set().union(*SPELLED.values()) | python_only == {
        keys.CHECKPOINT, keys.SINCE, keys.KEY, keys.MARK, keys.WINDOW, keys.CHILD,
        keys.SEEN_ITEMS}


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_counter_a_script_adds_to_is_one_metrics_knows(name: str) -> None:
    counted = set(re.findall(r"metric\(run, metrics, '(\w+)'", lua(name)))
    assert counted <= metrics.NAMES


def test_run_lib_names_a_counter_as_metrics_field_does() -> None:
    progress = Progress(fakeredis.FakeRedis(), lock_seconds=60, ttl=3600)
    run = progress.create_run("src", "kind")
    progress.record_page(run.run_id, "src", "kind",
                         PageRecord(batches=(1,), items=10, checkpoint=None))
    progress.create_run("src", "kind")  # skipped: counted with its state as the label
    raw = progress.r.hgetall(keys.METRICS)
    assert raw[metrics.field("pages", "src", "kind").encode()] == b"1"
    assert raw[metrics.field(metrics.RUNS, "src", "kind", "skipped").encode()] == b"1"
    assert metrics.parse(metrics.field(metrics.RUNS, "s", "k", "skipped")) == (
        "runs", "s", "k", "skipped")


def test_the_channel_a_run_ends_on_is_the_one_keys_names() -> None:
    assert f"redis.call('PUBLISH', '{keys.RUNS_ENDED}', run_id)" in lua("run_lib")
