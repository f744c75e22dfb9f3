"""The JSON of the queue: Celery's task bodies and events (kombu's ``json`` serializer) and the
envelope kombu's Redis transport wraps each message in, encoded with msgspec.

A batch's message holds its items as one JSON text; the serializer escapes it into the task's
body, and the Redis transport again into its envelope. With kombu's ``json`` (the standard
library) that escaping and its decoding were a fifth of a worker's CPU on a fast API
(ops/bench/BULK.md). The wire format is unchanged: it is the same JSON, readable by a worker
that does not have this module.

kombu's JSON also carries a few Python types as ``{"__type__": …, "__value__": …}`` (a
``datetime``, a ``Decimal``, a ``UUID``, ``bytes``) and revives them when it reads. So a value
holding anything but JSON's own types is encoded by kombu, and a text whose value holds an
object with a ``__type__`` key is decoded again by kombu: the same values come out as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import msgspec
from kombu.serialization import register
from kombu.transport import redis as kombu_redis
from kombu.utils import json as kombu_json

_kombu_dumps = cast(Callable[..., str], kombu_json.dumps)
_kombu_loads = cast(Callable[..., Any], kombu_json.loads)
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()
_PLAIN = (str, int, float, bool, type(None))
_NESTED = (dict, list)


def plain(value: Any) -> bool:
    """Only JSON's own types (exactly: not a subclass kombu encodes its own way)."""
    kind = type(value)
    if kind in _PLAIN:
        return kind is not float or (value == value and abs(value) != float("inf"))
    if kind is list or kind is tuple:
        return all(plain(v) for v in value)
    if kind is dict:
        return all(type(k) is str and plain(v) for k, v in value.items())
    return False


def dumps(value: Any, **kwargs: Any) -> str:
    """``kombu.utils.json.dumps``, by msgspec when ``value`` is plain JSON."""
    try:
        if not kwargs and plain(value):
            return _encoder.encode(value).decode()
    except (UnicodeEncodeError, RecursionError):  # a lone surrogate; nesting too deep
        pass
    return _kombu_dumps(value, **kwargs)


def typed(value: Any) -> bool:
    """Whether a decoded value holds an object with a ``__type__`` key: what kombu's decoder
    would revive (or refuse). Looked for in the decoded value, not in the text: a batch's items
    travel as one string, and searching its 400 KB for the word cost a third of decoding it."""
    stack = [value]
    while stack:
        node = stack.pop()
        kind = type(node)
        if kind is dict:
            if "__type__" in node:
                return True
            stack.extend(v for v in node.values() if type(v) in _NESTED)
        elif kind is list:
            stack.extend(v for v in node if type(v) in _NESTED)
    return False


def loads(text: str | bytes | bytearray | memoryview, **kwargs: Any) -> Any:
    """``kombu.utils.json.loads``, by msgspec unless the text carries kombu's typed values."""
    if not kwargs:
        raw = text.tobytes() if isinstance(text, memoryview) else text
        try:
            value = _decoder.decode(raw)
        except (msgspec.DecodeError, RecursionError):
            pass  # kombu's own decoder decides, and says why it fails
        else:
            if not typed(value):
                return value
    return _kombu_loads(text, **kwargs)


def install() -> None:
    """Celery's ``json`` serializer and the Redis transport's envelope, in this process."""
    cast(Callable[..., None], register)("json", dumps, loads,
                                        content_type="application/json",
                                        content_encoding="utf-8")
    setattr(kombu_redis, "dumps", dumps)  # noqa: B010 (the module's own names, replaced)
    setattr(kombu_redis, "loads", loads)  # noqa: B010
