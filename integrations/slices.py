"""Time-window slices: a kind whose API filters by time is read as many windows at once.

``slices = { param_from = "created[gte]", param_to = "created[lt]", start = "2020-01-01T00:00:00Z",
step = "30d" }`` cuts ``[start, end)`` (``end``: the run's start by default) into windows of
``step``; each window is a partition of the run, paged by the kind's own paginator with the
window's bounds sent as ``param_from`` and ``param_to`` (query parameters, or the variables of
a graphql paginator). A window whose first page shows it holds more than ``max_window_items``
is split before it is read on: into as many pieces as its count says it needs (``pieces``), at
once, since each level of splitting costs a first page read in turn.

Bounds are integers in the cursor's unit: epoch seconds for ``iso`` and ``epoch_s``,
milliseconds for ``epoch_ms``, the number itself for ``number``. They are sent as the type
spells them (an ISO time with ``Z``, an epoch number), or through ``format`` (strftime, UTC)
when the API wants a date or a spelling of its own. A format coarser than a second (a date)
sets the windows' resolution: ``start``, ``end`` and ``step`` must fall on it, and a window is
never split below it.

    window         [a, b]: JSON, kept on the run record; a <= item < b
    cut(lo, hi)    the windows of [lo, hi), the last one shorter
    pieces(held)   how many pieces a window showing ``held`` items is split into (2 to 16)
    split(w, k)    [a, c1], [c1, c2], ... [c(k-1), b]: k pieces of equal length on the
                   resolution (fewer when w is too short for k); None when w cannot be split
    params(w)      {param_from: sent(a), param_to: sent(b)}
    within(lo, hi) whether an item's ``field`` falls in [lo, hi): what a full run may delete
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

from pydantic import Field, model_validator

from integrations.fetched import Fetched
from integrations.incremental import CursorType, _epoch, _number, _time, seconds
from integrations.settings import StrictModel

Window = list[int]  # [a, b]: from a (included) to b (excluded), in the cursor's unit

_PER_SECOND = {"iso": 1, "epoch_s": 1, "epoch_ms": 1000}
# A reference time with every field set, to find what a format tells apart.
_PROBE = 981173106  # 2001-02-03T04:05:06Z
# Windows a run may hold (splits included): partition p numbers its pages from
# p * pager.PARTITION_SPAN, below tasks.runs.seqs.PART_SPAN (the batch parts' numbering).
MAX_WINDOWS = 428
# Pieces a crowded window is split into at most: enough that a window 8 times too full is read
# on after one split (a first page each), few enough that one window does not take most of
# MAX_WINDOWS.
MAX_PIECES = 16


class Slices(StrictModel):
    """A kind's ``slices`` section."""

    param_from: str = Field(min_length=1, description="the parameter that takes a window's "
                            "start, included (created[gte]); a graphql kind: a variable")
    param_to: str = Field(min_length=1, description="the parameter that takes a window's "
                          "end, excluded (created[lt])")
    start: str = Field(description="where the first window starts: an ISO time (or, for "
                       "epoch_s, epoch_ms and number, a number)")
    end: str | None = Field(None, description="where the last window ends (default: the "
                            "run's start; required for cursor_type number)")
    step: str = Field(description="a window's length: a duration (30d, 6h) for the time "
                      "types, a whole number for cursor_type number")
    cursor_type: CursorType = Field("iso", description="iso, epoch_s, epoch_ms or number: "
                                    "how bounds are written and sent")
    format: str | None = Field(None, min_length=1, description="strftime pattern (UTC) of "
                               "the bounds sent (%Y-%m-%d); time types only")
    field: str | None = Field(
        None, min_length=1, description="dot path to the item's value the windows filter by "
        "(created): a clean full run deletes only the stale entities whose value falls in its "
        "windows (default: the kind's incremental.cursor_path; with neither, a sliced run "
        "deletes nothing)")
    max_window_items: int | None = Field(
        None, ge=1, description="a window whose first page shows more items (a total, a "
        "plan of pages, a full page with a next one) is split before it is read on: into "
        "2 to 16 pieces, about two for every max_window_items it shows")

    @model_validator(mode="after")
    def _valid(self) -> Slices:
        timed = self.cursor_type != "number"
        if not timed and self.format is not None:
            raise ValueError("format: a cursor_type 'number' is no time; its bounds are sent "
                             "as numbers")
        if timed:
            try:
                step = seconds(self.step) * _PER_SECOND[self.cursor_type]
            except ValueError as exc:
                raise ValueError(f"step: {exc}") from None
        else:
            if not self.step.isdigit():
                raise ValueError(f"step: {self.step!r}: a cursor_type 'number' steps by a whole "
                                 "number (1000), not a duration")
            step = int(self.step)
            if self.end is None:
                raise ValueError("end: a cursor_type 'number' has no 'now': write where the "
                                 "last window ends")
        if step <= 0:
            raise ValueError(f"step: {self.step!r} is no length")
        if self.format is not None:
            try:
                datetime.fromtimestamp(_PROBE, UTC).strftime(self.format)
            except ValueError as exc:
                raise ValueError(f"format: {self.format!r}: {exc}") from None
        start = self.position("start", self.start)
        end = None if self.end is None else self.position("end", self.end)
        if end is not None and start >= end:
            raise ValueError(f"start {self.start!r} is not before end {self.end!r}")
        if end is not None:
            self.cut(start, end)  # not too many windows (else a ValueError naming step)
        grain = self.resolution()
        for name, value in (("start", start), ("end", end), ("step", step)):
            if value is not None and value % grain:
                raise ValueError(f"{name}: the format {self.format!r} tells times apart only "
                                 f"every {grain // _PER_SECOND[self.cursor_type]} s; {name} "
                                 "must fall on that")
        return self

    def position(self, name: str, text: Any) -> int:
        """A bound (or a cursor value) as an integer in the cursor's unit. Raises ValueError
        naming ``name``."""
        number = _number(str(text)) if not isinstance(text, bool) else None
        if self.cursor_type == "number" or (number is not None and self.cursor_type != "iso"):
            if number is None or number != number.to_integral_value():
                raise ValueError(f"{name}: {text!r} is not a whole number")
            return int(number)
        when = _time(str(text)) if number is None else None
        if when is None:
            raise ValueError(f"{name}: {text!r} is not an ISO-8601 time")
        return _epoch(when, _PER_SECOND[self.cursor_type])

    def resolution(self) -> int:
        """The smallest step the sent bounds tell apart, in the cursor's unit."""
        if self.format is None:
            return 1
        per = _PER_SECOND[self.cursor_type]
        shown = datetime.fromtimestamp(_PROBE, UTC).strftime(self.format)
        for grain in (1, 60, 3600, 86400):
            if datetime.fromtimestamp(_PROBE + grain, UTC).strftime(self.format) != shown:
                return grain * per
        return 86400 * per

    def step_units(self) -> int:
        if self.cursor_type == "number":
            return int(self.step)
        return seconds(self.step) * _PER_SECOND[self.cursor_type]

    def span(self, *, now: float, since: Any = None) -> tuple[int, int]:
        """[lo, hi) a run reads: ``start`` (or ``since``, an incremental run's watermark minus
        its lookback, moved down onto the resolution) to ``end`` (or ``now``)."""
        per = _PER_SECOND.get(self.cursor_type, 1)
        hi = self.position("end", self.end) if self.end is not None else int(now * per)
        lo = self.position("start", self.start)
        if since is not None:
            lo = self.position("incremental.since", since)
            lo -= lo % self.resolution()
        return lo, hi

    def cut(self, lo: int, hi: int) -> list[Window]:
        """The windows of [lo, hi): ``step`` long, the last one shorter. Raises ValueError when
        there would be more than MAX_WINDOWS."""
        step = self.step_units()
        count = max(0, -(-(hi - lo) // step))
        if count > MAX_WINDOWS:
            raise ValueError(f"step: [{self.sent(lo)}, {self.sent(hi)}) in steps of "
                             f"{self.step} is {count} windows, more than {MAX_WINDOWS}: "
                             "raise step (or a later start)")
        return [[a, min(a + step, hi)] for a in range(lo, hi, step)]

    def within(self, lo: int, hi: int) -> Callable[[Any], bool]:
        """Whether an item's ``field`` value falls in [lo, hi) as the windows asked for it
        (no value, or one that is no time or number of the cursor's type: no). ``hi`` is
        sent truncated onto the resolution (a run's start as end, sent as today's date, did
        not ask for today's items): so it is taken here. A number between units (an epoch
        with a fraction, 1704067200.5) falls where its whole part does: against whole bounds,
        comparing it as it is says the same."""
        hi -= hi % self.resolution()

        def holds(value: Any) -> bool:
            if value is None or isinstance(value, bool | dict | list):
                return False
            number = _number(str(value)) if self.cursor_type != "iso" else None
            if number is not None:  # compared as it is: no int of a billion digits (1e999999999)
                return lo <= number < hi
            try:
                return lo <= self.position("field", value) < hi
            except ValueError:
                return False
        return holds

    def pieces(self, held: int) -> int:
        """How many pieces a crowded window that shows ``held`` items is split into: two for
        every ``max_window_items`` (each piece then holds half of it if the items are spread
        evenly, so that an uneven spread seldom needs a second split, a first page more in
        turn), from 2 to MAX_PIECES."""
        limit = self.max_window_items
        if limit is None:
            return 2
        return max(2, min(MAX_PIECES, -(-2 * held // limit)))

    def split(self, window: Window, pieces: int = 2) -> list[Window] | None:
        """The window in ``pieces`` pieces, in order, their bounds on the resolution, so that
        their lengths differ by one resolution at most; fewer when the window holds fewer
        resolutions than that (no piece is shorter than one). None when it cannot be split."""
        a, b = window
        grain = self.resolution()
        count = min(pieces, (b - a) // grain)
        if count < 2:
            return None
        # Each raw cut is at least a resolution past the one before (the length // count is),
        # so moving them down onto the resolution keeps them apart and inside (a, b).
        cuts = [c - c % grain for c in (a + i * (b - a) // count for i in range(1, count))]
        return [[lo, hi] for lo, hi in pairwise([a, *cuts, b])]

    def sent(self, bound: int) -> Any:
        """A bound as the API takes it."""
        if self.cursor_type == "number":
            return bound
        per = _PER_SECOND[self.cursor_type]
        if self.format is None and self.cursor_type != "iso":
            return bound
        when = datetime.fromtimestamp(bound / per, UTC)
        if self.format is not None:
            return when.strftime(self.format)
        return when.isoformat(timespec="seconds").replace("+00:00", "Z")

    def params(self, window: Window) -> dict[str, Any]:
        """What a window's requests carry: its bounds, as sent."""
        return {self.param_from: self.sent(window[0]), self.param_to: self.sent(window[1])}

    def crowded(self, first: Fetched) -> bool:
        """The first page of a window shows it holds more than ``max_window_items``: its
        total; else a plan of pages as full as this one; else a page with a next one holds
        at least one item more."""
        limit = self.max_window_items
        if limit is None:
            return False
        return held(first) > limit


def held(first: Fetched) -> int:
    """At least how many items the window of this first page holds."""
    if first.total is not None:
        return first.total
    if first.plan is not None:
        return len(first.items) * (1 + int(first.plan.get("count", 0)))
    return len(first.items) + (first.next is not None)
