"""The worker's fetch (tasks/worker/broker.py, lua/fetch.lua) on a real Redis: it records a
message as held before it removes it from its queue, in one step, in kombu's order."""

from __future__ import annotations

import json
from collections.abc import Iterator

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


@pytest.mark.parametrize("properties_last", [True, False])
def test_a_big_message_is_recorded_under_its_own_tag(r: redis.Redis, properties_last: bool):
    # A batch's body holds its items as text: '"properties":' sits in it many times, escaped;
    # only the envelope's own key counts, at the end (kombu's order) or, in another shape,
    # before 400 KB of body.
    items = json.dumps([{"properties": {"delivery_tag": f"no{i}"}} for i in range(10_000)])
    props = {"delivery_tag": "big", "delivery_info": {"exchange": "", "routing_key": "sluice"}}
    envelope = {"body": items, "properties": props} if properties_last else \
        {"properties": props, "body": items}
    r.lpush("sluice", json.dumps(envelope, separators=(",", ":")))
    queue, item = fetch(r, "sluice")  # type: ignore[misc]
    assert queue == b"sluice" and json.loads(item) == envelope and len(item) > 400_000
    assert r.hkeys("unacked") == [b"big"]
    assert json.loads(r.hget("unacked", "big")) == [envelope, "", "sluice"]
