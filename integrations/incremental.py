"""Incremental kinds: what ``incremental = {...}`` in a kind means, and how cursor values compare.

A run of an incremental kind reads only what changed since its partition's *watermark*: the
largest ``cursor_path`` value a clean run has seen. It either sends the watermark minus the
lookback as a query parameter (``param = "since"``), or, where the API has no such parameter
but lists the newest first, stops paging at the first item older than it
(``stop_when_older = true``). Values compare as ISO-8601 times or as numbers, as the API
gives them; the watermark keeps the API's own spelling.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import AfterValidator, Field, model_validator

from integrations.base import StrictModel
from integrations.http.paginators import dig

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


class Incremental(StrictModel):
    """A kind's ``incremental`` section."""

    cursor_path: str = Field(description="dot path to the item's update time (or version)")
    param: str | None = Field(
        None, description="query parameter that asks for items changed since a value")
    stop_when_older: bool = Field(
        False, description="the API lists the newest first: stop at the first older item")
    lookback: Duration = Field("0s", description="sent: the watermark minus this (30s, 2m, 1h)")
    initial: str | None = Field(
        None, description="the value sent while a partition has no watermark yet")

    @model_validator(mode="after")
    def _one_way(self) -> Incremental:
        if (self.param is None) == (not self.stop_when_older):
            raise ValueError("set either 'param' (the API filters by it) or "
                             "'stop_when_older = true' (the API lists the newest first)")
        if self.initial is not None and comparable(self.initial) is None:
            raise ValueError(f"initial {self.initial!r} is neither an ISO-8601 time nor a "
                             "number")
        return self

    def value(self, item: Any) -> Any:
        """The item's cursor value (None when it has none)."""
        return dig(item, self.cursor_path) if isinstance(item, dict) else None

    def since(self, watermark: Any) -> Any:
        """What is sent (or compared) for ``watermark``: it minus the lookback; ``initial``
        when there is no watermark; None: read everything."""
        if watermark is None:
            return self.initial
        return minus(watermark, seconds(self.lookback))


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
    stays an ISO time (``Z`` kept), a number a number (epoch seconds, or any counter: the
    lookback is subtracted as it is)."""
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
