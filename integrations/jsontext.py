"""JSON on the hot path: every page is decoded by the producer, encoded into its batches, and
decoded again by the worker that writes them. With the standard library that was most of a
worker's CPU (61% of the time it held the GIL, in ops/bench/bulk.py's profile); msgspec does
the same work several times faster (decoding 500 issue-like items: 1.4 ms instead of 4.2;
encoding them item by item: 0.5 ms instead of 4.9).

msgspec reads every integer exactly, however long, and keys repeated in an object as the
standard library does (the last one wins). What it refuses goes to the standard library,
which then decodes it, or fails, as it always did: a lone surrogate escape ("\\ud800"), and
nesting deeper than msgspec's limit. ``strict=True`` refuses NaN, Infinity and numbers too
large for a float (1e400) as not JSON: no target stores them, and an API that sends them
gets a reason instead of a batch refused later.

``dumps`` writes non-ASCII characters as they are (no ``\\uXXXX`` escapes) and no spaces;
what msgspec cannot encode (a lone surrogate) goes to the standard library.
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is too large for a number")
    return number


def loads(data: bytes | str, *, strict: bool = False) -> Any:
    """Decode JSON text as ``json.loads`` does; ``strict``: NaN, Infinity and 1e400 raise
    ValueError. Raises ValueError (also for a number of more than 4,300 digits),
    UnicodeDecodeError and RecursionError, as the standard library does."""
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, RecursionError):
        pass  # the standard library decides: it reads some of it, and says why it fails
    if strict:
        return json.loads(data, parse_constant=_not_json, parse_float=_finite)
    return json.loads(data)


def dumps(value: Any) -> str:
    """JSON text of ``value`` (a JSON-like value: dicts with str keys, lists, str, int, float,
    bool, None; a float is finite, as ``loads`` left it)."""
    try:
        return _encoder.encode(value).decode()
    except (TypeError, UnicodeEncodeError):  # a lone surrogate, a type JSON does not have
        return json.dumps(value)


def dumps_array(items: list[Any]) -> str | None:
    """``"[" + ",".join(dumps(item) for item in items) + "]"``, the same text, in one call
    (half the time of 500 calls); None when ``dumps`` would give one of the items to the
    standard library."""
    try:
        return _encoder.encode(items).decode()
    except (TypeError, UnicodeEncodeError):
        return None
