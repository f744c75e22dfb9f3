"""tasks.worker.wire reads and writes what kombu's own JSON does: plain JSON by msgspec, kombu's
typed values (``{"__type__": …, "__value__": …}``) revived by kombu, wherever they sit."""

from __future__ import annotations

import datetime
import decimal
import json
import uuid
from typing import Any

import msgspec
import pytest
from kombu.utils import json as kombu_json

from tasks.worker import wire

TYPED: list[Any] = [
    datetime.datetime(2024, 1, 1, 12, 30, tzinfo=datetime.UTC),
    datetime.date(2024, 1, 2),
    decimal.Decimal("1.50"),
    uuid.UUID("96c7f1e1-68bd-492f-8985-6ccd64e3d6e7"),
    b"bytes",
]


def message(value: Any) -> dict[str, Any]:
    """A task body inside kombu's envelope, as the Redis transport stores it."""
    body = kombu_json.dumps([["run", "src", "issue", 3, "[]"], {"run_seq": 2, "x": value}, {}])
    return {"body": body, "content-type": "application/json",
            "properties": {"delivery_tag": "t", "delivery_info": {"routing_key": "sluice"}}}


@pytest.mark.parametrize("value", TYPED)
def test_typed_values_come_back_as_kombu_gives_them(value: Any) -> None:
    for shape in (value, [1, {"deep": [value]}], {"a": {"b": value}}):
        text = kombu_json.dumps(shape)
        assert wire.loads(text) == kombu_json.loads(text)
        assert wire.loads(text.encode()) == kombu_json.loads(text)
        assert wire.loads(wire.dumps(shape)) == shape
        outer = wire.loads(wire.dumps(message(shape)))  # the body stays a string, as in kombu
        assert wire.loads(outer["body"]) == kombu_json.loads(outer["body"])
        assert wire.loads(outer["body"])[1]["x"] == shape


def test_an_unknown_type_is_refused_as_kombu_refuses_it() -> None:
    text = '[{"k": {"__type__": "nope", "__value__": 1}}]'
    with pytest.raises(ValueError, match="Unsupported type"):
        kombu_json.loads(text)
    with pytest.raises(ValueError, match="Unsupported type"):
        wire.loads(text)


@pytest.mark.parametrize("text", [
    '{"__type__": "datetime"}',  # not kombu's shape: kept as it is, by both
    '["__type__", {"name": "__type__"}, "{\\"__type__\\": \\"uuid\\"}"]',  # only words
    '{"items": "[{\\"__type__\\": \\"decimal\\", \\"__value__\\": \\"1\\"}]"}',  # in a string
    '[18446744073709551616, 1.5, null, true, "\\u00e9"]',
    '"\\ud800"',  # a lone surrogate: msgspec refuses, kombu reads it
])
def test_other_texts_decode_as_kombu_decodes_them(text: str) -> None:
    assert wire.loads(text) == kombu_json.loads(text) == json.loads(text)
    assert wire.loads(text.encode()) == kombu_json.loads(text)
    assert wire.loads(memoryview(text.encode())) == kombu_json.loads(text)


def test_a_value_nested_past_the_decoders_limit_fails_as_kombu_fails() -> None:
    text = "[" * 100_000 + "]" * 100_000
    with pytest.raises(RecursionError):
        kombu_json.loads(text)
    with pytest.raises(RecursionError):
        wire.loads(text)


def test_typed_finds_a_typed_object_however_deep_it_is() -> None:
    value: Any = {"__type__": "x", "__value__": 1}
    for _ in range(5000):
        value = [{"k": value}]
    assert wire.typed(value)
    assert not wire.typed([{"k": [{"__types__": 1}]}] * 10)


def envelope(body: Any, encoding: str, **extra: Any) -> str:
    return json.dumps({"body": body, "content-encoding": "utf-8",
                       "content-type": "application/json", "headers": {"task": "t"},
                       "properties": {"body_encoding": encoding, "delivery_tag": "t"}, **extra})


def test_an_embedded_body_is_read_as_its_text_and_any_other_envelope_as_kombu_reads_it() -> None:
    body = wire.dumps([["run", "src", "issue", 3, '[{"a": "b\\\\"}]'], {"run_seq": 2}, {}])
    text = envelope(json.loads(body), wire.EMBEDDED)
    read = wire.loads_envelope(text.encode())
    assert type(read["body"]) is msgspec.Raw
    assert json.loads(wire.Embedded().decode(read["body"])) == json.loads(body)
    whole = wire.loads(text)  # kombu's own readers decode it whole; its codec writes it back
    assert json.loads(wire.Embedded().decode(whole["body"])) == json.loads(body)
    assert {k: v for k, v in read.items() if k != "body"} == \
        {k: v for k, v in whole.items() if k != "body"}
    for other in (envelope(body, "utf-8"), envelope("e30=", "base64"),
                  envelope(json.loads(body), wire.EMBEDDED, more=1),  # a key kombu does not write
                  envelope(body, "utf-8", headers={"eta": {"__type__": "datetime",
                                                           "__value__": "2024-01-01T00:00:00"}})):
        assert wire.loads_envelope(other) == wire.loads(other) == kombu_json.loads(other)
