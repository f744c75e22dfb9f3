"""Time-window slices: cutting, splitting, sending, and the checks of their config."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import fakeredis
import httpx
import pytest
from pydantic import ValidationError

from integrations.errors import ConfigError, MalformedPage
from integrations.fetched import Fetched
from integrations.http.paginators import fetched
from integrations.rest.integration import RestIntegration
from integrations.rest.settings import KindSettings, RestSettings
from integrations.slices import MAX_WINDOWS, Slices
from tasks.config import load_config
from tasks.runs import keys
from tasks.runs.progress import Progress
from tasks.runs.windows import FULL, GONE, MOVED, Split, Windows

DAY = 86400
T2020 = 1577836800  # 2020-01-01T00:00:00Z


def sl(**kw: Any) -> Slices:
    base: dict[str, Any] = {"param_from": "created[gte]", "param_to": "created[lt]",
                            "start": "2020-01-01T00:00:00Z", "step": "30d"}
    return Slices(**{**base, **kw})


def test_cut_into_steps_the_last_shorter() -> None:
    s = sl(end="2020-03-01T00:00:00Z")
    lo, hi = s.span(now=0)
    windows = s.cut(lo, hi)
    assert windows == [[T2020, T2020 + 30 * DAY], [T2020 + 30 * DAY, T2020 + 60 * DAY]]
    assert hi == T2020 + 60 * DAY  # 2020 is a leap year: Jan 31 + Feb 29 days
    assert s.params(windows[1]) == {"created[gte]": "2020-01-31T00:00:00Z",
                                    "created[lt]": "2020-03-01T00:00:00Z"}


def test_end_defaults_to_the_runs_start_and_an_incremental_since_moves_the_start() -> None:
    s = sl(step="1d")
    assert s.span(now=T2020 + 2.5 * DAY) == (T2020, T2020 + 2 * DAY + DAY // 2)
    assert s.cut(*s.span(now=T2020 + 2.5 * DAY))[-1] == [T2020 + 2 * DAY, T2020 + 2.5 * DAY]
    lo, _ = s.span(now=T2020 + 3 * DAY, since="2020-01-02T06:00:00Z")
    assert lo == T2020 + DAY + 6 * 3600
    assert s.cut(T2020, T2020) == []


def test_epoch_ms_bounds_are_sent_as_numbers() -> None:
    s = sl(cursor_type="epoch_ms", start="1577836800000", step="1h")
    lo, hi = s.span(now=T2020 + 7200)
    assert (lo, hi) == (T2020 * 1000, (T2020 + 7200) * 1000)
    assert s.params(s.cut(lo, hi)[1]) == {"created[gte]": (T2020 + 3600) * 1000,
                                          "created[lt]": (T2020 + 7200) * 1000}
    # An ISO start is taken in the unit too.
    assert sl(cursor_type="epoch_s", start="2020-01-01T00:00:00Z").span(now=T2020 + 1)[0] == T2020


def test_number_windows_and_format() -> None:
    s = sl(cursor_type="number", start="0", end="2500", step="1000")
    assert s.cut(*s.span(now=0)) == [[0, 1000], [1000, 2000], [2000, 2500]]
    dated = sl(format="%Y-%m-%d", step="1d", end="2020-01-03T00:00:00Z")
    assert dated.params([T2020, T2020 + DAY]) == {"created[gte]": "2020-01-01",
                                                  "created[lt]": "2020-01-02"}


def test_split_in_halves_on_the_resolution() -> None:
    s = sl()
    assert s.split([0, 10]) == [[0, 5], [5, 10]]
    assert s.split([0, 1]) is None  # a second: the finest an ISO time says
    dated = sl(format="%Y-%m-%d", step="1d")
    assert dated.split([T2020, T2020 + 4 * DAY]) == [[T2020, T2020 + 2 * DAY],
                                                     [T2020 + 2 * DAY, T2020 + 4 * DAY]]
    assert dated.split([T2020, T2020 + DAY]) is None  # no half day in a date


def test_split_in_k_pieces_of_equal_length_on_the_resolution() -> None:
    s = sl()
    month = [T2020, T2020 + 30 * DAY]
    pieces = s.split(month, 16)
    assert pieces is not None and len(pieces) == 16
    assert (pieces[0][0], pieces[-1][1]) == (T2020, T2020 + 30 * DAY)
    assert all(p[1] == q[0] for p, q in pairwise(pieces))  # no gap
    assert {b - a for a, b in pieces} == {30 * DAY // 16}
    assert s.split([0, 10], 3) == [[0, 3], [3, 6], [6, 10]]  # lengths differ by one at most
    assert s.split([0, 3], 16) == [[0, 1], [1, 2], [2, 3]]  # none shorter than a second
    dated = sl(format="%Y-%m-%d", step="1d")
    days = dated.split([T2020, T2020 + 10 * DAY], 4)
    assert days is not None and len(days) == 4
    assert all(a % DAY == 0 and b % DAY == 0 for a, b in days)
    assert sorted(b - a for a, b in days) == [2 * DAY, 2 * DAY, 3 * DAY, 3 * DAY]
    assert dated.split([T2020, T2020 + 3 * DAY], 16) == [
        [T2020 + i * DAY, T2020 + (i + 1) * DAY] for i in range(3)]
    # The last window of a run ends at its start, off the resolution: no piece below a day.
    ragged = dated.split([T2020, T2020 + 2 * DAY + 3600], 16)
    assert ragged == [[T2020, T2020 + DAY], [T2020 + DAY, T2020 + 2 * DAY + 3600]]
    assert dated.split([T2020, T2020 + DAY + 3600], 16) is None


@pytest.mark.parametrize(("held", "pieces"), [
    (1501, 3), (3000, 4), (3001, 5), (7500, 10), (11_250, 15), (12_000, 16), (20_000, 16),
    (1, 2)])
def test_a_crowded_window_is_split_in_two_pieces_per_max_window_items(held: int,
                                                                      pieces: int) -> None:
    assert sl(max_window_items=1500).pieces(held) == pieces


def read(s: Slices, window: list[int], items: range, *, halves: bool = False
         ) -> tuple[int, list[list[int]]]:
    """How a window of these items (one a second) is read: the first pages asked for one after
    another at most (its split's levels, plus one), and the windows read on."""
    count = sum(1 for i in items if window[0] <= i < window[1])
    pieces = s.split(window, 2 if halves else s.pieces(count)) if count > 1500 else None
    if pieces is None:
        return 1, [window]
    depths, read_on = zip(*(read(s, p, items, halves=halves) for p in pieces), strict=True)
    return 1 + max(depths), [w for ws in read_on for w in ws]


def test_the_adaptive_case_needs_three_levels_of_splits_not_eleven() -> None:
    """The bench's adaptive case: 20,000 items in 5.5 hours of a 30-day window, 1,500 at most
    a window. Halving takes 11 levels (a first page each, one after another); pieces as many
    as the count asks for take 3, and each window read on holds 1,500 at most."""
    s = sl(max_window_items=1500)
    items = range(T2020, T2020 + 20_000)
    depth, read_on = read(s, [T2020, T2020 + 30 * DAY], items)
    assert depth == 4  # 3 splits, then the window is read on
    assert max(sum(1 for i in items if a <= i < b) for a, b in read_on) <= 1500
    assert sum(1 for a, b in read_on if any(a <= i < b for i in items)) <= 2 * 20_000 // 1500 + 2
    assert read(s, [T2020, T2020 + 30 * DAY], items, halves=True)[0] == 12


def test_too_many_windows_is_an_error_naming_step() -> None:
    s = sl(step="1s")
    with pytest.raises(ValueError, match="raise step"):
        s.cut(0, MAX_WINDOWS + 1)
    assert len(s.cut(0, MAX_WINDOWS)) == MAX_WINDOWS


def test_crowded_from_a_total_a_plan_or_a_full_page() -> None:
    s = sl(max_window_items=150)
    assert s.crowded(Fetched(items=[1] * 100, next={"c": 1}, total=151))
    assert not s.crowded(Fetched(items=[1] * 100, next={"c": 1}, total=150))
    assert s.crowded(Fetched(items=[1] * 100, next=None, plan={"count": 1}))
    assert not s.crowded(Fetched(items=[1] * 100, next={"c": 1}))  # at least 101: not >150
    assert sl(max_window_items=100).crowded(Fetched(items=[1] * 100, next={"c": 1}))
    assert not sl(max_window_items=1).crowded(Fetched(items=[], next=None))
    assert not sl().crowded(Fetched(items=[1] * 100, next={"c": 1}, total=10**6))


@pytest.mark.parametrize(("kw", "message"), [
    ({"stepp": "1d"}, "stepp"),
    ({"step": "month"}, "step"),
    ({"start": "2021-01-01T00:00:00Z", "end": "2020-01-01T00:00:00Z"}, "not before end"),
    ({"cursor_type": "number", "start": "0", "end": "10", "step": "1d"}, "not a duration"),
    ({"cursor_type": "number", "start": "0", "step": "10"}, "end"),
    ({"cursor_type": "number", "start": "0", "end": "10", "step": "1", "format": "%Y"},
     "format"),
    ({"start": "yesterday"}, "start"),
    ({"format": "%Y-%m-%d", "step": "6h"}, "step"),
    ({"format": "%Y-%m-%d", "start": "2020-01-01T12:00:00Z"}, "start"),
    ({"max_window_items": 0}, "max_window_items"),
    ({"step": "1s", "end": "2020-01-02T00:00:00Z"}, "raise step"),
])
def test_bad_slices_name_the_key(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        sl(**kw)


def rest(kind: dict[str, Any]) -> RestSettings:
    return RestSettings(integration="rest", base_url="http://api", kinds={"k": kind})


SLICES = {"param_from": "from", "param_to": "to", "start": "2020-01-01T00:00:00Z",
          "step": "1d"}


def test_a_window_is_sent_as_query_params_or_graphql_variables() -> None:
    integration = RestIntegration(rest({
        "path": "/x", "paginator": {"type": "cursor", "cursor_path": "next"},
        "slices": SLICES}))
    window = {"window": [T2020, T2020 + DAY]}
    _, params = integration.paginator("k", window).request({"cursor": None})
    assert params is not None
    assert (params["from"], params["to"]) == ("2020-01-01T00:00:00Z", "2020-01-02T00:00:00Z")
    query = ("query($after: String, $from: DateTime, $to: DateTime) { items(after: $after, "
             "from: $from, to: $to) { nodes { id } pageInfo { hasNextPage endCursor } } }")
    graphql = RestIntegration(rest({
        "path": "/graphql", "slices": SLICES,
        "paginator": {"type": "graphql", "query": query, "connection_path": "data.items"}}))
    body = graphql.paginator("k", window).payload({"after": None})
    assert body["variables"] == {"from": "2020-01-01T00:00:00Z", "to": "2020-01-02T00:00:00Z"}


def test_slices_with_incremental_graphql_and_parents_are_checked() -> None:
    with pytest.raises(ValidationError, match=r"slices\.param_to"):
        KindSettings(path="/graphql", slices={**SLICES, "param_to": "until"}, paginator={
            "type": "graphql", "connection_path": "data.items",
            "query": "query($after: String, $from: String) { x }"})
    with pytest.raises(ValidationError, match="write param = 'from'"):
        KindSettings(path="/x", slices=SLICES,
                     incremental={"cursor_path": "created", "param": "since"})
    with pytest.raises(ValidationError, match="cursor_type"):
        KindSettings(path="/x", slices=SLICES,
                     incremental={"cursor_path": "created", "param": "from",
                                  "cursor_type": "epoch_ms"})
    with pytest.raises(ValidationError, match="child kind"):
        KindSettings(path="/x/{parent.id}", parent="p", slices=SLICES)
    KindSettings(path="/x", slices=SLICES, incremental={"cursor_path": "created",
                                                        "param": "from"})


def test_sluice_check_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "sluice.toml"
    path.write_text("""
[sources.s]
integration = "rest"
base_url = "http://api"
[sources.s.kinds.k]
path = "/x"
slices = { param_from = "a", param_to = "b", start = "2020-01-01T00:00:00Z", step = "1 month" }
""")
    with pytest.raises(ConfigError, match=r"kinds\.k\.slices.*step"):
        load_config(path)


def test_windows_are_claimed_within_the_limit_and_a_split_adds_its_pieces() -> None:
    r = fakeredis.FakeRedis()
    progress, windows = Progress(r), Windows(r)
    run = progress.create_run("s", "k")
    assert windows.claim(run.run_id, 8, most=8) == []  # not sliced
    windows.cut(run.run_id, [[0, 10], [10, 20], [20, 30], [30, 40], [40, 50]], incremental=False)
    assert windows.claim(run.run_id, 3, most=2) == [0, 1]
    assert windows.claim(run.run_id, 3, most=5) == [2]  # three in flight: the limit
    assert windows.split(run.run_id, 1, [[10, 13], [13, 16], [16, 20]]) == Split(5, 2)
    assert [windows.get(run.run_id, p) for p in (1, 5, 6)] == [[10, 13], [13, 16], [16, 20]]
    assert progress.window(run.run_id, 5) == progress.window(run.run_id, 6) == (True, None)
    assert r.hget(keys.run(run.run_id), "windows_split") == b"1"  # windows, not pieces
    progress.producer_done(run.run_id, partition=0)
    assert windows.claim(run.run_id, 3, most=5) == [3]  # one done: one more
    assert windows.claim(run.run_id, 3, most=5) == []
    for p in (1, 2, 3):
        progress.producer_done(run.run_id, partition=p)
    assert windows.claim(run.run_id, 3, most=5) == [4, 5, 6]  # the split's pieces come last
    assert windows.span(run.run_id) == [0, 50]


def test_a_split_redelivered_adds_nothing_twice() -> None:
    """A second reader of the partition (a redelivered task) that looked at the window's same
    first page finds it split already: nothing is added, it reads the partition's window."""
    r = fakeredis.FakeRedis()
    progress, windows = Progress(r), Windows(r)
    run = progress.create_run("s", "k")
    windows.cut(run.run_id, [[0, 100]], incremental=False)
    pieces = [[0, 25], [25, 50], [50, 75], [75, 100]]
    assert windows.split(run.run_id, 0, pieces) == Split(1, 3)
    assert windows.split(run.run_id, 0, pieces) == Split(MOVED, 0)
    assert r.hget(keys.run(run.run_id), "partitions") == b"4"
    assert r.hget(keys.run(run.run_id), "windows_split") == b"1"
    # The window it reads now can be split in turn.
    assert windows.split(run.run_id, 0, [[0, 12], [12, 25]]) == Split(4, 1)
    assert windows.get(run.run_id, 0) == [0, 12]
    assert r.hget(keys.run(run.run_id), "windows_split") == b"2"
    with pytest.raises(ValueError, match="pieces"):
        windows.split(run.run_id, 0, [[0, 5], [6, 12]])
    r.delete(keys.run(run.run_id))
    assert windows.split(run.run_id, 0, [[0, 6], [6, 12]]) == Split(GONE, 0)


def test_a_split_takes_the_pieces_that_fit_the_last_reaching_the_windows_end() -> None:
    r = fakeredis.FakeRedis()
    progress, windows = Progress(r), Windows(r)
    run = progress.create_run("s", "k")
    windows.cut(run.run_id, [[0, 10], [10, 100]], incremental=False)
    r.hset(keys.run(run.run_id), "partitions", MAX_WINDOWS - 2)  # room for two more
    pieces = [[10, 25], [25, 40], [40, 55], [55, 70], [70, 85], [85, 100]]
    assert windows.split(run.run_id, 1, pieces) == Split(MAX_WINDOWS - 2, 2)
    assert [windows.get(run.run_id, p) for p in (1, MAX_WINDOWS - 2, MAX_WINDOWS - 1)] == [
        [10, 25], [25, 40], [40, 100]]
    assert r.hget(keys.run(run.run_id), "partitions") == str(MAX_WINDOWS).encode()
    # No room: the window is read whole, nothing changed.
    assert windows.split(run.run_id, 0, [[0, 5], [5, 10]]) == Split(FULL, 0)
    assert windows.get(run.run_id, 0) == [0, 10]
    assert r.hget(keys.run(run.run_id), "windows_split") == b"1"


def test_a_graphql_total_count_shows_a_crowded_window() -> None:
    query = ("query($after: String, $from: DateTime, $to: DateTime) { items(after: $after, "
             "from: $from, to: $to) { totalCount nodes { id } pageInfo { hasNextPage "
             "endCursor } } }")
    paginator = RestIntegration(rest({
        "path": "/graphql", "slices": {**SLICES, "max_window_items": 2},
        "paginator": {"type": "graphql", "query": query, "connection_path": "data.items",
                      "total_path": "data.items.totalCount"}})).paginator("k", None)
    request = httpx.Request("POST", "http://api/graphql")
    answer = {"data": {"items": {"totalCount": 3, "nodes": [{"id": 1}],
                                 "pageInfo": {"hasNextPage": True, "endCursor": "a"}}}}
    first = fetched(paginator, paginator.first(), httpx.Response(200, request=request),
                    answer, [{"id": 1}], first=True)
    assert first.total == 3 and sl(max_window_items=2).crowded(first)
    answer["data"]["items"]["totalCount"] = "3"
    with pytest.raises(MalformedPage, match="totalCount"):
        paginator.total(httpx.Response(200, request=request), answer)


def test_within_holds_what_the_sent_bounds_asked_for() -> None:
    """A bound not on the resolution (the run's start, as end) is sent truncated: today's
    items after midnight were not asked for, and a deletion within the span must keep them.
    A fractional epoch or number falls in the window its whole part does."""
    dated = sl(format="%Y-%m-%d", step="1d")
    lo, hi = dated.span(now=T2020 + DAY + 5 * 3600)  # the run started at 05:00 on day two
    assert dated.params(dated.cut(lo, hi)[-1])["created[lt]"] == "2020-01-02"
    holds = dated.within(lo, hi)
    assert holds("2020-01-01T23:59:59Z")
    assert not holds("2020-01-02T03:00:00Z") and not holds("2020-01-02")
    epoch = sl(cursor_type="epoch_s", start=str(T2020), end=str(T2020 + DAY), step="6h")
    holds = epoch.within(*epoch.span(now=0))
    assert holds("1577836800.000216") and holds(T2020 + DAY - 0.5) and holds(float(T2020))
    assert not holds(T2020 - 0.5) and not holds(T2020 + DAY) and not holds(True)
    number = sl(cursor_type="number", start="0", end="100", step="10")
    holds = number.within(*number.span(now=0))
    assert holds(5.5) and holds("99.9") and not holds(-0.5) and not holds(100.0)
    assert not holds(True) and not holds(False)
    assert not holds("1e999999999") and holds("5e0")  # at once: not made a whole int first
