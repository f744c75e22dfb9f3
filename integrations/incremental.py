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
from typing import Any

from pydantic import Field, field_validator, model_validator

from integrations.base import StrictModel
from integrations.http.paginators import dig

_DURATION = re.compile(r"^(\d+)([smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(text: str) -> int:
    """'2m' -> 120. Raises ValueError."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30s, 2m, 1h, 1d")
    return int(match[1]) * _SECONDS[match[2]]


class Incremental(StrictModel):
    """A kind's ``incremental`` section."""

    cursor_path: str = Field(description="dot path to the item's update time (or version)")
    param: str | None = Field(
        None, description="query parameter that asks for items changed since a value")
    stop_when_older: bool = Field(
        False, description="the API lists the newest first: stop at the first older item")
    lookback: str = Field("0s", description="sent: the watermark minus this (30s, 2m, 1h)")
    initial: str | None = Field(
        None, description="the value sent while a partition has no watermark yet")

    @field_validator("lookback")
    @classmethod
    def _lookback(cls, value: str) -> str:
        seconds(value)
        return value

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


def comparable(value: Any) -> float | None:
    """A value's position in time (or its number): ISO-8601 times as epoch seconds (a time
    without a zone is taken as UTC), numbers as they are. None: not comparable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.timestamp()
    return None


def newest(values: list[Any]) -> Any:
    """The largest comparable value, in its own spelling (None when there is none)."""
    best, best_key = None, -math.inf
    for value in values:
        key = comparable(value)
        if key is not None and key > best_key:
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
        try:
            number = float(value)
        except ValueError:
            when = datetime.fromisoformat(value)
            moved = when - timedelta(seconds=lookback)
            text = moved.isoformat()
            if value.endswith("Z") and text.endswith("+00:00"):
                text = text[:-6] + "Z"
            return text
        return str(int(number - lookback) if number.is_integer() else number - lookback)
    return value


def older(value: Any, than: Any) -> bool:
    """``value`` is strictly before ``than`` (an item without a value is not)."""
    a, b = comparable(value), comparable(than)
    return a is not None and b is not None and a < b
