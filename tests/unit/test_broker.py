"""The worker's fetch (tasks/worker/broker.py, lua/fetch.lua) on a real Redis: it records a
message as held before it removes it from its queue, in one step, in kombu's order."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tasks.runs import scripts

SEP = "\x06\x16"  # kombu's separator between a queue's name and its priority step


@pytest.fixture
def r(own_redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(own_redis_url)
    yield client
    client.close()


def message(tag: str, queue: str = "sluice") -> str:
    return json.dumps({"body": "e30=", "headers": {}, "properties": {
        "delivery_tag": tag, "delivery_info": {"exchange": "", "routing_key": queue},
        "big": 12345678901234567890}})


def fetch(r: redis.Redis, *queues: str, node: bool = True) -> list[bytes] | None:
    script = scripts.register(r, "fetch")
    return script(keys=["unacked", "unacked_index", "sluice:node:n1:tags", *queues],
                  args=["1000.5", "1" if node else "0"])  # type: ignore[return-value]


def test_takes_the_oldest_of_the_first_nonempty_list_and_records_it(r: redis.Redis):
    r.lpush("sluice", message("t1"), message("t2"))  # kombu publishes with LPUSH
    r.lpush("other", message("o1", "other"))
    queue, item = fetch(r, f"sluice{SEP}3", "sluice", "other")  # type: ignore[misc]
    assert (queue, item) == (b"sluice", message("t1").encode())
    # kombu's record, the message as it came (its big number unrounded)
    assert json.loads(r.hget("unacked", "t1")) == [json.loads(message("t1")), "", "sluice"]
    assert r.hget("unacked", "t1").startswith(b"[" + message("t1").encode() + b",")
    assert r.zscore("unacked_index", "t1") == 1000.5
    assert r.smembers("sluice:node:n1:tags") == {b"t1"}
    assert r.lrange("sluice", 0, -1) == [message("t2").encode()]


def test_nothing_when_empty_and_no_node_record_without_a_node(r: redis.Redis):
    assert fetch(r, "sluice", "other") is None
    r.lpush("other", message("o1", "other"))
    assert fetch(r, "sluice", "other", node=False) == [b"other", message("o1", "other").encode()]
    assert r.hexists("unacked", "o1") and not r.exists("sluice:node:n1:tags")


def test_a_message_that_is_not_kombus_is_handed_on_unrecorded(r: redis.Redis):
    r.lpush("sluice", "not json")
    assert fetch(r, "sluice") == [b"sluice", b"not json"]
    assert not r.exists("unacked") and r.llen("sluice") == 0


def test_a_redis_that_refuses_the_record_leaves_the_message_in_its_queue(r: redis.Redis):
    r.lpush("sluice", message("t1"))
    r.set("unacked", "a string, not a hash")  # HSET fails as a full Redis's would
    with pytest.raises(redis.ResponseError):
        fetch(r, "sluice")
    assert r.lrange("sluice", 0, -1) == [message("t1").encode()]
    assert not r.exists("sluice:node:n1:tags")


def test_a_message_published_leaves_a_token_in_its_queues_wake_list(own_redis_url: str,
                                                                     r: redis.Redis):
    """Every message sent through kombu's Redis transport pushes a token beside it, in the same
    round trip; the list keeps at most WAKE_TOKENS."""
    from kombu import Connection, Exchange, Producer, Queue

    from tasks.runs import keys
    from tasks.worker import broker

    broker.install()
    queue = Queue("wake-test", Exchange("wake-test"), "wake-test")
    with Connection(own_redis_url) as conn:
        producer = Producer(conn.channel())
        queue(producer.channel).declare()
        producer.publish({"n": 0}, exchange=queue.exchange, routing_key="wake-test")
        assert r.llen("wake-test") == 1 and r.lrange(keys.fetch_wake("wake-test"), 0, -1) == [b"1"]
        for n in range(1, broker.WAKE_TOKENS + 10):
            producer.publish({"n": n}, exchange=queue.exchange, routing_key="wake-test")
    assert r.llen("wake-test") == broker.WAKE_TOKENS + 10
    assert r.llen(keys.fetch_wake("wake-test")) == broker.WAKE_TOKENS


@pytest.mark.parametrize(("properties_last", "embedded"),
                         [(True, False), (False, False), (True, True), (False, True)])
def test_a_big_message_is_recorded_under_its_own_tag(r: redis.Redis, properties_last: bool,
                                                     embedded: bool):
    # A batch's body holds its items as text: '"properties":' sits in it many times, escaped;
    # or, in a body written as JSON (wire.EMBEDDED), as keys deeper than the envelope's. Only
    # the envelope's own key counts, at the end (kombu's order) or, in another shape, before
    # 400 KB of body.
    value = [{"properties": {"delivery_tag": f"no{i}"}} for i in range(10_000)]
    items: Any = value if embedded else json.dumps(value)
    props = {"delivery_tag": "big", "delivery_info": {"exchange": "", "routing_key": "sluice"}}
    envelope = {"body": items, "properties": props} if properties_last else \
        {"properties": props, "body": items}
    r.lpush("sluice", json.dumps(envelope, separators=(",", ":")))
    queue, item = fetch(r, "sluice")  # type: ignore[misc]
    assert queue == b"sluice" and json.loads(item) == envelope and len(item) > 400_000
    assert r.hkeys("unacked") == [b"big"]
    assert json.loads(r.hget("unacked", "big")) == [envelope, "", "sluice"]


@pytest.mark.parametrize("kwargs", [{}, {"x": datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)}])
def test_a_json_body_is_json_in_its_envelope_and_reads_back_as_the_same_text(
        own_redis_url: str, r: redis.Redis, kwargs: dict[str, Any]):
    """A JSON body (a task's: its items a JSON text inside it) is written into kombu's envelope
    as JSON, the items' quotes escaped once, not as a string escaped again; a worker's fetch
    (and kombu's own readers: basic_get, the restore of an unacked message) read back the
    same body text, and a message of another content type stays a string."""
    from kombu import Connection, Consumer, Exchange, Producer, Queue

    from tasks.worker import broker, wire

    broker.install()
    wire.install()
    items = json.dumps([{"id": i, "title": 'say "hi"\\', "properties": {"a": i}}
                        for i in range(3)])
    body = [["run", "src", "issue", 3, items], kwargs, {}]
    queue = Queue("embed-test", Exchange("embed-test"), "embed-test")
    got: list[Any] = []
    with Connection(own_redis_url, transport_options={"body_encoding": "utf-8"}) as conn:
        channel = conn.channel()  # (Sluice's app's option: tasks/app.py)
        producer = Producer(channel, serializer="json")
        queue(channel).declare()
        producer.publish(body, exchange=queue.exchange, routing_key="embed-test")
        raw = r.lindex("embed-test", 0)
        assert raw is not None  # the items' quotes escaped once (in the body), not twice
        assert b'\\"id\\"' in raw and b'\\\\\\"id' not in raw
        envelope = json.loads(raw)
        assert envelope["properties"]["body_encoding"] == wire.EMBEDDED
        assert envelope["body"][0][4] == items  # the body as JSON, the items a string in it

        def take(message: Any) -> None:
            got.append((message.body, message.decode(), message.delivery_tag))

        with Consumer(conn.channel(), [queue], callbacks=[lambda _b, m: take(m)],
                      accept=["json"]) as consumer:
            conn.drain_events(timeout=5)
            tag = got[-1][2]
            consumer.channel.qos.restore_by_tag(tag)  # given back, as for a lost node
            conn.drain_events(timeout=5)
        simple = conn.SimpleQueue(queue)
        producer.publish(body, exchange=queue.exchange, routing_key="embed-test")
        taken = simple.get(timeout=5)  # basic_get: kombu reads the envelope whole
        got.append((taken.body, taken.decode(), taken.delivery_tag))
        taken.ack()
        producer.publish("plain text", exchange=queue.exchange, routing_key="embed-test",
                         content_type="text/plain", content_encoding="utf-8",
                         serializer=None)
        plain = json.loads(r.lindex("embed-test", 0) or b"")
        assert plain["properties"]["body_encoding"] == "utf-8"  # a string, as kombu writes it
        assert simple.get(timeout=5).body in ("plain text", b"plain text")
        simple.close()
    assert len(got) == 3
    for text, decoded, _tag in got:
        assert json.loads(text) == json.loads(wire.dumps(body))  # bytes, as kombu gives it
        assert decoded == [list(body[0]), kwargs, {}]
