"""Incremental kinds in pieces: cursor values, the settings, where watermarks live, the
schedules of incremental and full runs, and child kinds' settings."""

from __future__ import annotations

from datetime import timedelta

import fakeredis
import pytest
from pydantic import ValidationError

from integrations.incremental import Incremental, comparable, minus, newest, older
from integrations.mapping import Mapping, MappingSettings
from integrations.rest.settings import RestSettings
from tasks.config import Schedule, parse_config
from tasks.runs.watermarks import Watermarks
from tasks.schedule import beat_schedule
from tasks.targets.sqlite import SqliteTarget


def test_values_compare_as_times_or_numbers_and_keep_their_spelling():
    assert newest(["2024-01-01T00:00:00Z", "2024-01-01T00:00:01+00:00", None, True]) \
        == "2024-01-01T00:00:01+00:00"
    assert newest([3, "10", 7.5]) == "10"
    assert older("2024-01-01T09:59:00.000+0000", "2024-01-01T10:00:00Z")  # Jira's spelling
    assert not older("2024-01-01T10:00:00Z", "2024-01-01T10:00:00Z")  # equal: not older
    assert not older(None, "2024-01-01T10:00:00Z")  # no value: never ends the paging
    assert comparable("not a time") is None
    assert minus("2024-01-01T00:02:00Z", 120) == "2024-01-01T00:00:00Z"
    assert minus(1700000120, 120) == 1700000000 and minus("1700000120", 120) == "1700000000"
    # Exactly, however long the number (a nanosecond epoch), and in the API's own spelling.
    assert minus("1700000000123456700", 120) == "1700000000123456580"
    assert older("1700000000123456700", "1700000000123456701")
    assert minus("2024-01-05", 120) == "2024-01-04"  # a date alone moves back a day
    assert minus("2024-01-05T10:00:00.000+0000", 120) == "2024-01-05T09:58:00+0000"


def test_incremental_settings_take_one_way_and_a_valid_lookback():
    inc = Incremental(cursor_path="updated_at", param="since", lookback="2m")
    assert inc.since(None) is None and inc.since("2024-01-01T00:05:00Z") == "2024-01-01T00:03:00Z"
    assert Incremental(cursor_path="u", param="since", initial="2020-01-01T00:00:00Z"
                       ).since(None) == "2020-01-01T00:00:00Z"
    for bad in ({"cursor_path": "u"}, {"cursor_path": "u", "param": "s", "stop_when_older": True},
                {"cursor_path": "u", "param": "s", "lookback": "2 minutes"},
                {"cursor_path": "u", "param": "s", "initial": "yesterday"}):
        with pytest.raises(ValidationError):
            Incremental.model_validate(bad)


def test_a_cursor_type_puts_the_lookback_and_initial_in_the_cursors_unit():
    def inc(cursor_type, **more):
        return Incremental(cursor_path="u", param="since", cursor_type=cursor_type, **more)

    # 2m is 120000 for epoch_ms (the issue: it went back 120 ms), 120 for epoch_s.
    assert inc("epoch_ms", lookback="2m").since(1704067320000) == 1704067200000
    assert inc("epoch_ms", lookback="2m").since("1704067320000") == "1704067200000"
    assert inc("epoch_s", lookback="2m").since(1704067320) == 1704067200
    assert inc("iso", lookback="2m").since("2024-01-01T00:02:00Z") == "2024-01-01T00:00:00Z"
    assert inc(None, lookback="2m").since(1704067320) == 1704067200  # inferred: seconds
    assert inc("number").since(41) == 41  # "0s" on a counter is fine
    # An ISO initial is sent in the epoch's unit, exactly; a number as it is.
    assert inc("epoch_ms", initial="2024-01-01T00:00:00.123Z").since(None) == 1704067200123
    assert inc("epoch_s", initial="2024-01-01T00:00:00Z").since(None) == 1704067200
    assert inc("epoch_ms", initial="1704067200000").since(None) == "1704067200000"
    assert inc("iso", initial="2024-01-01").since(None) == "2024-01-01"
    assert inc(None, initial="2024-01-01T00:00:00Z").since(None) == "2024-01-01T00:00:00Z"


def test_a_cursor_type_refuses_what_it_cannot_mean():
    with pytest.raises(ValidationError, match="lookback '2m' is a duration, and a cursor_type "
                                              "'number' is no time"):
        Incremental(cursor_path="u", param="s", cursor_type="number", lookback="2m")
    for bad in ({"cursor_type": "iso", "initial": "5"},
                {"cursor_type": "number", "initial": "2024-01-01T00:00:00Z"},
                {"cursor_type": "epoch_ms", "initial": "yesterday"},
                {"cursor_type": "epoch_us"}):
        with pytest.raises(ValidationError):
            Incremental.model_validate({"cursor_path": "u", "param": "s", **bad})


def test_sluice_check_names_a_duration_lookback_on_a_number_cursor(tmp_path):
    raw = {"sources": {"t": {"integration": "rest", "base_url": "http://x", "kinds": {"k": {
        "path": "/k", "incremental": {"cursor_path": "version", "param": "after",
                                      "cursor_type": "number", "lookback": "5m"}}}}}}
    with pytest.raises(Exception, match=r"sources\.t\.kinds\.k\.incremental.*'number' is no "
                                        "time"):
        parse_config(raw, tmp_path / "sluice.toml")


def test_status_shows_an_epoch_watermark_with_its_time_beside_it():
    def shown(cursor_type, value):
        return Incremental(cursor_path="u", param="s", cursor_type=cursor_type).shown(value)

    assert shown("epoch_ms", 1704067320000) == "1704067320000 (2024-01-01T00:02:00Z)"
    assert shown("epoch_ms", 1704067320001) == "1704067320001 (2024-01-01T00:02:00.001Z)"
    assert shown("epoch_s", "1704067200") == '"1704067200" (2024-01-01T00:00:00Z)'
    assert shown("iso", "2024-01-01T00:00:00Z") == '"2024-01-01T00:00:00Z"'  # a time already
    assert shown(None, 1704067200) == "1704067200"  # inferred: maybe no time at all
    assert shown("number", 7) == "7"
    assert shown("epoch_ms", 10**30) == str(10**30)  # past any calendar: as it is


def test_watermarks_live_in_a_target_with_state_else_in_redis(tmp_path):
    r = fakeredis.FakeRedis()
    in_db = Watermarks(SqliteTarget(tmp_path / "t.db"), r)
    in_redis = Watermarks(object(), r)  # type: ignore[arg-type]  # a target without state
    assert "state table" in in_db.where and "Redis" in in_redis.where
    for store in (in_db, in_redis):
        marks = store.advanced("s", "k", {"null": ["2024-01-02T00:00:00Z", "2024-01-01T00:00:00Z"]},
                               mapping=None)
        store.save("s", "k", marks)
        # Only forward: an older value seen later does not move it back.
        store.save("s", "k", store.advanced("s", "k", {"null": ["2023-01-01T00:00:00Z"]},
                                            mapping=None))
        assert store.get("s", "k", mapping=None) == {"null": "2024-01-02T00:00:00Z"}
    assert r.hgetall("sluice:watermarks:s:k")  # the http target's, in Redis


def mapping(**settings) -> Mapping:
    return Mapping(MappingSettings.model_validate(settings), kind="k", id_path="id")


def test_a_watermark_belongs_to_the_mapping_it_was_read_with(tmp_path):
    r = fakeredis.FakeRedis()
    store = Watermarks(SqliteTarget(tmp_path / "t.db"), r)
    first, same = mapping(properties={"t": ".title"}), mapping(properties={"t": ".title"})
    other = mapping(properties={"t": ".title", "n": ".n"})
    assert first.digest == same.digest != other.digest  # stable, and the settings' own
    assert mapping(properties={"t": ".title"}, table="x").digest != first.digest

    def run(seen: str, *, read_with: Mapping | None, partition: str = "null") -> None:
        marks = store.advanced("s", "k", {partition: [seen]}, mapping=read_with)
        store.save("s", "k", store.stamped("s", "k", marks, mapping=read_with))

    run("2024-01-01T00:00:00Z", read_with=None, partition='"a"')
    run("2024-01-01T00:00:00Z", read_with=None)
    assert store.get("s", "k", mapping=None) == {"null": "2024-01-01T00:00:00Z",
                                                 '"a"': "2024-01-01T00:00:00Z"}
    # A mapping added: what was read without it is absent; the run that saves forgets it
    # (partition "a", not seen again, keeps nothing).
    assert store.get("s", "k", mapping=first) == {}
    run("2024-01-02T00:00:00Z", read_with=first)
    assert store.get("s", "k", mapping=same) == {"null": "2024-01-02T00:00:00Z"}
    assert store.get("s", "k", mapping=other) == {}  # changed
    assert store.get("s", "k", mapping=None) == {}  # removed
    run("2024-01-03T00:00:00Z", read_with=other)
    assert store.get("s", "k", mapping=other) == {"null": "2024-01-03T00:00:00Z"}
    run("2024-01-04T00:00:00Z", read_with=None)  # removed: back to entities, read all once
    assert store.get("s", "k", mapping=None) == {"null": "2024-01-04T00:00:00Z"}
    assert store.get("s", "k", mapping=other) == {}
    # A run that saw no cursor value still says which mapping the (no) watermarks are of.
    store.save("s", "k", store.stamped("s", "k", {}, mapping=first))
    assert store.get("s", "k", mapping=first) == {} and store.get("s", "k", mapping=None) == {}
    assert store.target.watermarks("s", "k") == {"mapping": f'"{first.digest}"'}


def test_a_mapping_does_not_move_watermarks_kept_in_redis():
    """The http target has no typed tables: a mapping changes nothing of where a kind lands."""
    r = fakeredis.FakeRedis()
    store = Watermarks(object(), r)  # type: ignore[arg-type]  # a target without tables
    store.save("s", "k", store.stamped("s", "k", {"null": "1"}, mapping=None))
    assert store.get("s", "k", mapping=mapping(properties={"t": ".title"})) == {"null": 1}


def test_a_source_schedules_incremental_and_full_runs(tmp_path):
    raw = {"sources": {"t": {"integration": "rest", "base_url": "http://x", "every": "5m",
                             "full_schedule": "0 3 * * *", "kinds": {"k": {"path": "/k"}}}}}
    config = parse_config(raw, tmp_path / "sluice.toml")
    assert config.schedules["t"][0] == Schedule(timedelta(minutes=5), False)
    entries = beat_schedule(config)
    assert entries["resync-t"]["kwargs"] == {"full": False}
    assert entries["resync-full-t"]["kwargs"] == {"full": True}
    raw["sources"]["t"]["full_every"] = "1d"
    with pytest.raises(Exception, match="full_schedule: set either 'full_schedule'"):
        parse_config(raw, tmp_path / "sluice.toml")


def test_child_kinds_name_a_parent_read_on_its_own():
    def settings(kinds):
        return RestSettings.model_validate({"integration": "rest", "base_url": "http://x",
                                            "kinds": kinds})

    ok = settings({"issue": {"path": "/i"},
                   "comment": {"parent": "issue", "path": "/i/{parent.number}/c",
                               "params": {"repo": "{parent.repo.name}"},
                               "include_from_parent": ["id"]}})
    assert ok.kinds["comment"].parent_fields() == ["id", "number", "repo.name"]
    for kinds, error in (
            ({"c": {"parent": "nope", "path": "/c"}}, "not another kind"),
            ({"a": {"path": "/a"}, "b": {"parent": "a", "path": "/b"},
              "c": {"parent": "b", "path": "/c"}}, "itself a child kind"),
            ({"c": {"path": "/c/{parent.id}"}}, "need a 'parent' kind")):
        with pytest.raises(ValidationError, match=error):
            settings(kinds)


def test_mapping_settings_refuse_what_would_lose_rows(tmp_path):
    from integrations.mapping import Mapping, MappingSettings
    from tasks.config import ConfigError

    for section, error in (
            ({"table": "entities"}, "Sluice's own tables"),
            ({"table": "sluice_state"}, "Sluice's own tables"),
            ({"properties": {"t": ".a"}, "relations": {"t": ".b"}}, "both a property and a"),
            ({"items_to_parse": ".c"}, "items_to_parse needs an identifier")):
        with pytest.raises(ValidationError, match=error):
            MappingSettings.model_validate(section)
    # Two kinds into one table: refused when sluice.toml is read.
    kinds = {k: {"path": f"/{k}", "mapping": {"table": "shared"}} for k in ("a", "b")}
    raw = {"sources": {"t": {"integration": "rest", "base_url": "http://x", "kinds": kinds}}}
    with pytest.raises(ConfigError, match=r"'shared' is already the table of sources\.t\.kinds\.a"):
        parse_config(raw, tmp_path / "sluice.toml")
    # An item the selector leaves out is skipped, whatever its properties make of it.
    mapping = Mapping(MappingSettings.model_validate(
        {"selector": '.state != "closed"', "properties": {"xy": ".x.y"}}), kind="k", id_path="id")
    mapped = mapping.map([{"id": 1, "state": "closed", "x": 7}, {"id": 2, "x": {"y": 3}}])
    assert (mapped.skipped, mapped.rejected, [r[2] for r in mapped.rows]) == (1, [], [{"xy": 3}])


def test_a_parent_placeholder_without_a_field_is_refused():
    with pytest.raises(ValidationError, match=r"\{parent\} names no parent field"):
        RestSettings.model_validate({"integration": "rest", "base_url": "http://x", "kinds": {
            "i": {"path": "/i"}, "c": {"parent": "i", "path": "/c/{parent}"}}})
