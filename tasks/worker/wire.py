"""The JSON of the queue: Celery's task bodies and events (kombu's ``json`` serializer) and the
envelope kombu's Redis transport wraps each message in, encoded with msgspec.

A batch's message holds its items as one JSON text; the serializer escapes it into the task's
body. With kombu's ``json`` (the standard library) that escaping and its decoding were a fifth
of a worker's CPU on a fast API (ops/bench/BULK.md). kombu's Redis transport then wrote the
body, a JSON text, as a string inside its envelope: escaped a second time (each quote of the
items twice), and unescaped again by the worker that took it, about a millisecond of the
producer's and of the consumer's CPU for a 500-item batch. Here a JSON body is written into the
envelope as the JSON it is (``body_encoding`` ``EMBEDDED``, kombu's field for how the body is
written; ``Embedded`` is its codec), and the consumer reads the envelope without decoding the
body (``loads_envelope``): Celery gets the same body text as before. A message of another
content type, or one written by a Sluice without this (``utf-8``, ``base64``), reads as it did;
a worker without it cannot read a message with ``EMBEDDED`` (kombu knows no such codec).

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
_PLAIN = (str, int, float, bool, type(None), msgspec.Raw)
_NESTED = (dict, list)


def plain(value: Any) -> bool:
    """Only JSON's own types (exactly: not a subclass kombu encodes its own way)."""
    kind = type(value)
    if kind in _PLAIN:  # msgspec.Raw: JSON text written as it is (an ``EMBEDDED`` body)
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


EMBEDDED = "json"  # kombu's body_encoding of a body written into the envelope as JSON


class Embedded:
    """kombu's body codec (``Channel.codecs``) for ``EMBEDDED``: the body, a JSON text, goes
    into the envelope as that JSON (``msgspec.Raw``). Read back it is that text again, from
    the ``msgspec.Raw`` of ``loads_envelope``, or from the value a whole decode of the
    envelope made of it (kombu's own readers: the unacked restore, fanout, ``basic_get``)."""

    def encode(self, body: str | bytes) -> msgspec.Raw:
        return msgspec.Raw(body)

    def decode(self, body: Any) -> bytes | str:
        if type(body) is msgspec.Raw:  # bytes, as kombu's message keeps a body (utf-8)
            return bytes(body)
        return dumps(body)


class _Envelope(msgspec.Struct, forbid_unknown_fields=True):
    """kombu's envelope, its body left as the JSON it is."""

    properties: dict[str, Any]
    body: msgspec.Raw = msgspec.Raw(b"null")
    headers: Any = None
    content_type: Any = msgspec.field(default=None, name="content-type")
    content_encoding: Any = msgspec.field(default=None, name="content-encoding")


_envelope = msgspec.json.Decoder(_Envelope)


def loads_envelope(text: bytes | str) -> Any:
    """A message as the Redis transport reads it (``loads``), but an ``EMBEDDED`` body is not
    decoded: it stays the JSON text it is (a ``msgspec.Raw`` its codec reads), instead of a
    value built and written again; a body written as a string is that string. Any other
    envelope (a key kombu does not write, kombu's typed values in its headers or properties,
    a body neither) is decoded whole, by ``loads``."""
    try:
        envelope = _envelope.decode(text)
        body: Any = envelope.body
        if envelope.properties.get("body_encoding") != EMBEDDED:
            body = _decoder.decode(body)  # a string (utf-8, base64), as kombu reads it
    except (msgspec.DecodeError, RecursionError):
        return loads(text)
    if type(body) not in (str, msgspec.Raw) or typed(envelope.headers) or typed(
            envelope.properties):
        return loads(text)
    return {"body": body, "content-encoding": envelope.content_encoding,
            "content-type": envelope.content_type, "headers": envelope.headers,
            "properties": envelope.properties}


def embeddable(message: dict[str, Any]) -> bool:
    """Whether kombu's message (body written ``utf-8``, as it is) is JSON text, which can be
    written into its envelope ``EMBEDDED``: JSON by content type, in UTF-8."""
    return (message.get("content-type") == "application/json"
            and message.get("content-encoding") == "utf-8"
            and type(message.get("body")) in (str, bytes) and bool(message["body"]))


def install() -> None:
    """Celery's ``json`` serializer and the Redis transport's envelope, in this process."""
    cast(Callable[..., None], register)("json", dumps, loads,
                                        content_type="application/json",
                                        content_encoding="utf-8")
    setattr(kombu_redis, "dumps", dumps)  # noqa: B010 (the module's own names, replaced)
    setattr(kombu_redis, "loads", loads)  # noqa: B010
    codecs: dict[str, Any] = {**kombu_redis.Channel.codecs, EMBEDDED: Embedded()}
    kombu_redis.Channel.codecs = codecs
