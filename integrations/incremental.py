"""Incremental kinds: what ``incremental = {...}`` in a kind means, and how cursor values compare.

A run of an incremental kind reads only what changed since its partition's *watermark*: the
largest ``cursor_path`` value a clean run has seen. It either sends the watermark minus the
lookback as a query parameter (``param = "since"``), or, where the API has no such parameter
but lists the newest first, stops paging at the first item older than it
(``stop_when_older = true``). Values compare as ISO-8601 times or as numbers, as the API
gives them; the watermark keeps the API's own spelling.

``cursor_type`` says what the values are, where a number alone does not (an epoch in seconds,
in milliseconds, or a counter); without it the type is inferred from the values, and a number
is taken as epoch seconds for the lookback:

    cursor_type   lookback "2m" subtracts   initial may be            sluice status shows
    iso           2 minutes of the time     an ISO time               the time
    epoch_s       120                       a number or an ISO time   the number and its time
    epoch_ms      120000                    a number or an ISO time   the number and its time
    number        (only "0s": no time)      a number                  the number
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from integrations.jsonpath import dig
from integrations.settings import StrictModel

_DURATION = re.compile(r"^(\d+)([smhd])$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_COMPACT_ZONE = re.compile(r"[+-]\d{4}$")
_ZONE = re.compile(r"[+-]\d{2}:\d{2}$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(text: str) -> int:
    """'2m' -> 120. Raises ValueError."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30s, 2m, 1h, 1d")
    return int(match[1]) * _SECONDS[match[2]]


def _duration(text: str) -> str:
    seconds(text)
    return text


# A lookback in sluice.toml: "30s", "2m", "1h", "1d" (checked when the file is read).
Duration = Annotated[str, AfterValidator(_duration)]

CursorType = Literal["iso", "epoch_s", "epoch_ms", "number"]
# Units of a second in each epoch type's numbers.
_PER_SECOND = {"epoch_s": 1, "epoch_ms": 1000}


class Incremental(StrictModel):
    """A kind's ``incremental`` section."""

    cursor_path: str = Field(description="dot path to the item's update time (or version)")
    param: str | None = Field(
        None, description="query parameter that asks for items changed since a value (with "
        "a graphql paginator: the query's variable)")
    stop_when_older: bool = Field(
        False, description="the API lists the newest first: stop at the first older item")
    lookback: Duration = Field("0s", description="sent: the watermark minus this (30s, 2m, 1h)")
    initial: str | None = Field(
        None, description="the value sent while a partition has no watermark yet (an ISO "
        "time for the epoch types is sent in their unit)")
    cursor_type: CursorType | None = Field(
        None, description="iso, epoch_s, epoch_ms or number: the lookback's unit (default: "
        "inferred from the values, a number taken as epoch seconds)")

    @model_validator(mode="after")
    def _one_way(self) -> Incremental:
        if (self.param is None) == (not self.stop_when_older):
            raise ValueError("set either 'param' (the API filters by it) or "
                             "'stop_when_older = true' (the API lists the newest first)")
        if self.cursor_type == "number" and seconds(self.lookback):
            raise ValueError(f"lookback {self.lookback!r} is a duration, and a cursor_type "
                             "'number' is no time: write lookback = '0s', or the cursor's "
                             "time type (iso, epoch_s, epoch_ms)")
        if self.initial is not None:
            self._initial(self.initial)
        return self

    def _initial(self, text: str) -> Any:
        """``initial`` as it is sent: an ISO time in the epoch types' unit. Raises ValueError
        for a value the cursor type cannot take."""
        kind, number, when = self.cursor_type, _number(text), _time(text)
        if number is None and when is None:
            raise ValueError(f"initial {text!r} is neither an ISO-8601 time nor a number")
        if (kind == "iso" and when is None) or (kind == "number" and number is None):
            raise ValueError(f"initial {text!r}: a cursor_type {kind!r} takes "
                             f"{'an ISO-8601 time' if kind == 'iso' else 'a number'}")
        if kind in _PER_SECOND and number is None and when is not None:
            return _epoch(when, _PER_SECOND[kind])
        return text

    def value(self, item: Any) -> Any:
        """The item's cursor value (None when it has none)."""
        return dig(item, self.cursor_path) if isinstance(item, dict) else None

    def since(self, watermark: Any) -> Any:
        """What is sent (or compared) for ``watermark``: it minus the lookback; ``initial``
        when there is no watermark; None: read everything."""
        if watermark is None:
            return None if self.initial is None else self._initial(self.initial)
        unit = _PER_SECOND.get(self.cursor_type or "", 1)  # a lookback in the cursor's unit
        return minus(watermark, seconds(self.lookback) * unit)

    def shown(self, watermark: Any) -> str:
        """A watermark as ``sluice status`` shows it: its JSON, and for an epoch type the ISO
        time beside it (``1704067200000 (2024-01-01T00:00:00Z)``)."""
        raw = json.dumps(watermark)
        per = _PER_SECOND.get(self.cursor_type or "")
        at = position(watermark)
        if per is None or at is None or at[0] != "number":
            return raw
        try:
            when = datetime.fromtimestamp(float(at[1] / per), UTC)
        except (OverflowError, OSError, ValueError):  # no time a calendar holds
            return raw
        spec = "seconds" if at[1] % per == 0 else "milliseconds"
        return f"{raw} ({when.isoformat(timespec=spec).replace('+00:00', 'Z')})"


def _epoch(when: datetime, per_second: int) -> int:
    """``when`` as an integer epoch in units of 1/``per_second`` s (exact: no float)."""
    delta = when - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * per_second \
        + delta.microseconds * per_second // 1_000_000


def comparable(value: Any) -> Decimal | None:
    """A value's position in time (or its number), exactly: ISO-8601 times as epoch seconds
    (a time without a zone is taken as UTC), numbers (and numeric strings, however long) as
    they are. None: not comparable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value)) if math.isfinite(value) else None
    if isinstance(value, str):
        number = _number(value)
        if number is not None:
            return number
        when = _time(value)
        return None if when is None else Decimal(repr(when.timestamp()))
    return None


# Where a value stands, of one scale: ("number", n) or ("time", epoch seconds). A number and
# a time are not compared with each other (10**12 is no instant after every ISO time).
Position = tuple[str, Decimal]


def position(value: Any) -> Position | None:
    """``comparable(value)`` with its scale; None: not comparable."""
    at = comparable(value)
    if at is None:
        return None
    timed = isinstance(value, str) and _number(value) is None
    return ("time" if timed else "number", at)


def _number(text: str) -> Decimal | None:
    try:
        number = Decimal(text.strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _time(text: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def newest(values: list[Any]) -> Any:
    """The largest comparable value, in its own spelling (None when there is none)."""
    best, best_key = None, None
    for value in values:
        key = comparable(value)
        if key is not None and (best_key is None or key > best_key):
            best, best_key = value, key
    return best


def minus(value: Any, lookback: int) -> Any:
    """``value`` moved back ``lookback`` seconds, spelled as the API spelled it: an ISO time
    stays an ISO time (``Z`` kept), a number a number (the lookback is subtracted as it is:
    ``Incremental.since`` gives it in the cursor's unit, milliseconds for ``epoch_ms``)."""
    if not lookback:
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value - lookback
    if isinstance(value, str):
        number = _number(value)
        if number is not None:  # exact, however many digits (a nanosecond epoch)
            return str(number - lookback)
        if _DATE.match(value):  # a date alone: a day back, as a date
            return (datetime.fromisoformat(value) - timedelta(days=1)).date().isoformat()
        when = datetime.fromisoformat(value)
        text = (when - timedelta(seconds=lookback)).isoformat()
        if value.endswith("Z") and text.endswith("+00:00"):
            text = text[:-6] + "Z"
        elif _COMPACT_ZONE.search(value) and _ZONE.search(text):  # +0000 stays +0000
            text = text[:-3] + text[-2:]
        return text
    return value


def older(value: Any, than: Any) -> bool:
    """``value`` is strictly before ``than`` (an item without a value is not)."""
    a, b = comparable(value), comparable(than)
    return a is not None and b is not None and a < b
