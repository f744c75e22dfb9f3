"""integrations.jsontext gives what the standard library's json gives, on the texts where
msgspec and json could differ, and on random JSON."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest

from integrations import jsontext

EDGES = [
    b"[18446744073709551615, 18446744073709551616, -9223372036854775809]",  # past 64 bits
    b"[123456789012345678901234567890123]",
    b'{"a": 1, "a": 2}',  # the last wins
    b"[1.0, -0, 1E2, 0.1, 1e-7, 5e-324, 1.7976931348623157e308]",
    b'"\\ud800"',  # a lone surrogate escape: msgspec refuses, json reads it
    b'"\\ud83d\\ude00 \\u00e9 \xc3\xa9"',
    b'{"": null, "x": [true, false, {}, []]}',
    b"  [ 1 , 2 ]  ",
]


@pytest.mark.parametrize("text", EDGES)
def test_loads_is_json_loads(text: bytes) -> None:
    assert jsontext.loads(text) == json.loads(text)
    assert jsontext.loads(text.decode()) == json.loads(text)


@pytest.mark.parametrize("text", [b"[NaN]", b"[Infinity]", b"[-Infinity]", b"[1e400]"])
def test_strict_refuses_what_no_target_stores(text: bytes) -> None:
    with pytest.raises(ValueError, match=r"not JSON|too large"):
        jsontext.loads(text, strict=True)
    value = jsontext.loads(text)[0]  # not strict: as json reads them
    assert not math.isfinite(value)


@pytest.mark.parametrize("text", [b"", b"[1,]", b"{'a': 1}", b"[1] x", b"\xff", b"[" * 5000])
def test_what_json_refuses_is_refused_with_its_error(text: bytes) -> None:
    with pytest.raises((ValueError, RecursionError)) as ours:
        jsontext.loads(text)
    with pytest.raises((ValueError, RecursionError)) as theirs:
        json.loads(text)
    assert type(ours.value) is type(theirs.value)


def value(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.randrange(9 if depth < 4 else 6)
    if pick == 0:
        return rng.choice([None, True, False])
    if pick == 1:
        return rng.randint(-(2**80), 2**80) if rng.random() < 0.3 else rng.randint(-999, 999)
    if pick == 2:
        return rng.uniform(-1e12, 1e12)
    if pick in (3, 4, 5):
        alphabet = "ab é\"\\/\n\t\u2028😀\x00\x1f"
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(8)))
    if pick in (6, 7):
        return [value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {f"k{rng.randrange(5)}": value(rng, depth + 1)
            for _ in range(rng.randrange(4))}


def test_random_values_round_trip_as_json_does() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        v = value(rng)
        text = jsontext.dumps(v)
        assert json.loads(text) == v
        assert jsontext.loads(text) == v
        assert jsontext.loads(json.dumps(v)) == json.loads(json.dumps(v))


def test_dumps_falls_back_for_a_lone_surrogate() -> None:
    assert json.loads(jsontext.dumps(["\ud800", 2**70])) == ["\ud800", 2**70]


def test_dumps_array_is_the_items_dumped_one_by_one() -> None:
    rng = random.Random(11)
    for _ in range(500):
        items = [value(rng) for _ in range(rng.randrange(6))]
        one_by_one = "[" + ",".join(jsontext.dumps(item) for item in items) + "]"
        whole = jsontext.dumps_array(items)
        if any("\ud800" in jsontext.dumps(item) for item in items):
            continue
        assert whole == one_by_one
    assert jsontext.dumps_array([1, "\ud800"]) is None  # one of them goes to json: not here
