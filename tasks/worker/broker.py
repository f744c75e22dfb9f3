"""Five narrow changes to kombu's Redis transport (5.7).

1. **Take and record in one step.** kombu takes a message with BRPOP and only then records it
as unacked (``QoS.append``: MULTI ZADD/HSET; celery#7950, kombu#305). Between the two the
message is in no queue and no record: a node SIGKILLed there loses it for good, and so does a
node frozen (a busy machine, a pause, SIGSTOP) while its BRPOP waits in Redis, since Redis pops
the next message for it the moment one is published. Here a worker takes with a Lua script
(``lua/fetch.lua``, as dramatiq's broker does) that records the message in kombu's ``unacked``
hash and index and under the node, then pops it, atomically. The script does not block, so a
worker whose queues were empty waits in Redis before it looks again: BLPOP on a wake list per
queue it consumes (``keys.fetch_wake``), into which every message published here pushes a
token beside the message (in the same round trip). An idle worker so looks again the moment a
message comes, instead of after its wait: Redis ends a blocking command's timeout only at its
next ``hz`` tick (10 a second by default), so a wait of ``IDLE_WAIT`` really lasted up to 0.1 s,
and each hop of a run (the command to the producer, the producer's first batch to a worker)
paid it. ``IDLE_WAIT`` stays the bound for messages that come without a token (given back by
kombu's visibility sweep or by ``liveness``, or sent by an older Sluice). A token that finds
no idle worker waits in its list, at most ``WAKE_TOKENS`` of them, and costs a look later.
The order stays kombu's (priority steps, then the queues' fair cycle); consumers without acks
(``no_ack``, such as a control command's replies) keep kombu's BRPOP.

2. Each message a worker node takes is recorded under the node's name, so a live node can give
back the messages of a dead one within seconds (``tasks/worker/liveness.py``): the fetch adds
the delivery tag to ``sluice:node:{node}:tags``, and removing it from kombu's indexes (ack,
reject, restore) removes it there too.

3. A JSON body is written into the message's envelope as the JSON it is, not as a string
(``wire.EMBEDDED``): a batch's items are then escaped once on their way, not twice, and the
fetch reads the envelope without decoding the body (``wire.loads_envelope``).

4. A channel's two pools are ``tasks.runs.client.IdlePool``s: a connection unused for
``SLUICE_REDIS_IDLE_SECONDS`` is closed instead of staying open for good. Each channel of
Celery's producer pool (up to ``broker_pool_limit``, 10, per process; one more whenever that
many threads publish at once) held two for good: the connection its first PING opened (kombu's
"evaluate connection", in the asynchronous pool, never used again by a channel that does not
consume) and the one its publishes use; a consumer's acks, likewise, one per thread that acked
at once. The connections kombu holds for good (the fetch, pub/sub) are never idle in a pool,
so they are not touched.

5. A workaround for when Redis restarts.

After the broker connection is lost, kombu still uses channels of the released connection: to
restore the messages in hand when the channel closes, and to ack messages of tasks that were
running across the reconnect. Both build a Redis client from ``channel.connection``, which is
then None, and raise ``AttributeError``. Celery does not count that as a connection error, so
the whole worker node stops ("Unrecoverable error") instead of reconnecting.

Here that case raises ``redis.ConnectionError`` instead, which Celery handles as what it is: the
close is ignored, the ack is logged as failed. Nothing is lost: such messages stay in Redis's
``unacked`` hash and a live worker restores them once ``visibility_timeout`` has passed (the
batch runs again; writes are idempotent and progress counts it once).
"""

from __future__ import annotations

import hashlib
import logging
import time
from queue import Empty
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str

from tasks import envelope
from tasks.ids import new_id
from tasks.runs import keys, scripts
from tasks.runs.client import IdlePool, client_name
from tasks.worker import liveness, wire
from tasks.worker.wire import dumps

log = logging.getLogger(__name__)

# Seconds an idle worker waits in Redis between two looks at its empty queues, unless a
# token comes first (Redis rounds the wait up to its next hz tick: 0.1 s by default).
IDLE_WAIT = 0.05
WAKE_TOKENS = envelope.WAKE_TOKENS
_FETCH_SHA = hashlib.sha1(scripts.source("fetch").encode()).hexdigest()

_original = kombu_redis.Channel._connparams


def _connparams(self: Any, asynchronous: bool = False) -> Any:
    if self.connection is None or self.connection.client is None:
        raise redis.ConnectionError("this channel's broker connection was closed")
    return _original(self, asynchronous)


def _get_pool(self: Any, asynchronous: bool = False) -> Any:
    """kombu's ``Channel._get_pool``, as an ``IdlePool``."""
    params = self._connparams(asynchronous=asynchronous)
    self.keyprefix_fanout = self.keyprefix_fanout.format(db=params["db"])
    params["client_name"] = params.get("client_name") or client_name(
        "broker-fetch" if asynchronous else "broker")
    return IdlePool(**params)


_remove_from_indices = kombu_redis.QoS._remove_from_indices
_brpop_start = kombu_redis.Channel._brpop_start
_brpop_read = kombu_redis.Channel._brpop_read
_put = kombu_redis.Channel._put
_augment = kombu_redis.Channel._inplace_augment_message
_basic_consume = kombu_redis.Channel.basic_consume


def _state(channel: Any) -> dict[str, Any]:
    """This module's state on a kombu channel: the queues consumed without acks, the tags the
    fetch recorded (``QoS.append`` need not), whether the next command is a wait, which
    command is in flight, and the connection that has sent the script's text."""
    state: dict[str, Any] | None = channel.__dict__.get("_sluice")
    if state is None:
        state = channel.__dict__["_sluice"] = {"no_ack": set(), "recorded": set(),
                                               "idle": False, "sent": "BRPOP",
                                               "cached": None}
    return state


def _reliable(channel: Any) -> bool:
    """Whether this channel takes with the fetch script: every queue it consumes is acked."""
    return not (_state(channel)["no_ack"] & set(channel.active_queues))


def basic_consume(self: Any, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
    if no_ack:
        _state(self)["no_ack"].add(queue)
    else:
        _state(self)["no_ack"].discard(queue)
    return _basic_consume(self, queue, no_ack, *args, **kwargs)


def _key(channel: Any, name: str) -> str:
    return f"{channel.global_keyprefix}{name}"


def fetch_start(self: Any, timeout: float | None = None) -> None:
    """kombu's ``_brpop_start``: send the fetch script, or, after a look that found every
    queue empty, a short wait in Redis. The reply is read by ``fetch_read``."""
    state = _state(self)
    if not _reliable(self):
        state["sent"] = "BRPOP"
        _brpop_start(self, timeout)
        return None
    queues = self._queue_cycle.consume(len(self.active_queues))
    if not queues:
        return None
    connection = self.client.connection
    self._in_poll = connection
    self._brpop_sent_at = time.monotonic()
    if state["idle"]:
        state["sent"] = "BLPOP"
        wakes = [_key(self, keys.fetch_wake(queue)) for queue in self.active_queues]
        connection.send_command("BLPOP", *wakes, min(IDLE_WAIT, timeout or IDLE_WAIT))
        return None
    # The script's text once per connection (EVAL caches it in Redis), then its SHA1; a Redis
    # that forgot it (restarted) answers NOSCRIPT and the next look sends the text again.
    state["sent"] = "EVALSHA" if state["cached"] is connection else "EVAL"
    script = _FETCH_SHA if state["sent"] == "EVALSHA" else scripts.source("fetch")
    lists = [_key(self, self._q_for_pri(queue, pri))
             for pri in self.priority_steps for queue in queues]
    node = liveness.NODE
    connection.send_command(
        state["sent"], script, 3 + len(lists), _key(self, self.unacked_key),
        _key(self, self.unacked_index_key), _key(self, keys.node_tags(node or "-")), *lists,
        repr(time.time()), "1" if node else "0")
    return None


def fetch_read(self: Any, **options: Any) -> bool:
    """kombu's ``_brpop_read`` for ``fetch_start``'s reply: deliver the message taken (already
    recorded), or raise ``Empty``. Returns True when a message was delivered."""
    state = _state(self)
    sent = state["sent"]
    if sent == "BRPOP":
        return bool(_brpop_read(self, **options))
    try:
        try:
            reply = self.client.parse_response(self.client.connection, sent, **options)
        except self.connection_errors:
            self.client.connection.disconnect()
            raise
        except redis.exceptions.NoScriptError:
            state["cached"] = None  # a look again at once, with the script's text
            raise Empty() from None
        except redis.ResponseError as exc:  # such as a full Redis refusing the record: the
            log.warning("taking a message failed, will try again: %s", exc)  # message stays
            reply = None
        looked = sent in ("EVAL", "EVALSHA")
        if sent == "EVAL":
            state["cached"] = self.client.connection
        # After a look that found nothing, a wait; after a wait, a look.
        state["idle"] = looked and not reply
        if not looked or not reply:
            raise Empty()
        queue, item = reply
        queue = bytes_to_str(queue)[len(self.global_keyprefix):].rsplit(self.sep, 1)[0]
        self._queue_cycle.rotate(queue)
        payload = wire.loads_envelope(item)
        state["recorded"].add(payload.get("properties", {}).get("delivery_tag"))
        self.connection._deliver(payload, queue)
        return True
    finally:
        self._in_poll = None
        self._flush_brpop_reauth()


class _Pipeline:
    """A redis pipeline in the shape of kombu's ``PublishBatch`` (``add(command, *args)``),
    so that kombu's own ``_put`` writes a message's commands into it."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe

    def add(self, command: str, *args: Any) -> None:
        getattr(self.pipe, command)(*args)


def put(self: Any, queue: str, message: Any, **kwargs: Any) -> None:
    """kombu's ``Channel._put`` (publish a message to a queue), with a token pushed to the
    queue's wake list after the message, in the same round trip, so an idle worker waiting
    on it looks at once (``fetch_start``). kombu's batched publishing holds both in its
    pipeline; a single message gets one of its own."""
    batch = kwargs.pop("_publish_batch", None)
    if batch is not None:
        _put(self, queue, message, _publish_batch=batch, **kwargs)
        _wake(self, batch.add, queue)
        return
    with self.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
        own = _Pipeline(pipe)
        _put(self, queue, message, _publish_batch=own, **kwargs)
        _wake(self, own.add, queue)
        pipe.execute()


def augment(self: Any, message: dict[str, Any], exchange: str, routing_key: str) -> None:
    """kombu's ``_inplace_augment_message`` (the body written as the channel's
    ``body_encoding`` says, a delivery tag), then a JSON body written ``EMBEDDED`` instead of
    as a string (``wire``), unless the transport's options ask for another encoding."""
    _augment(self, message, exchange, routing_key)
    properties = message["properties"]
    if properties.get("body_encoding") == "utf-8" and wire.embeddable(message):
        message["body"] = wire.Embedded().encode(message["body"])
        properties["body_encoding"] = wire.EMBEDDED


def _wake(channel: Any, add: Any, queue: str) -> None:
    """Add to a pipeline (``add(command, *args)``) a token for the queue's wake list, which
    keeps at most ``WAKE_TOKENS``. kombu's client adds ``global_keyprefix`` to LPUSH's key
    itself, not to LTRIM's. ``tasks.envelope.publish_commands`` (``sluice run``'s start
    request) sends the same two."""
    wake = keys.fetch_wake(queue)
    add("lpush", wake, "1")
    add("ltrim", _key(channel, wake), 0, WAKE_TOKENS - 1)


def _append_and_record(self: Any, message: Any, delivery_tag: str) -> None:
    """kombu's ``QoS.append``. A message the fetch script took is recorded already; any other
    (``basic_get``) is recorded here, and under this node in the same pipeline."""
    recorded = _state(self.channel)["recorded"]
    if delivery_tag in recorded:
        recorded.discard(delivery_tag)
        virtual.QoS.append(self, message, delivery_tag)
        return
    delivery = message.delivery_info
    with self.pipe_or_acquire() as pipe:
        pipe.zadd(self.unacked_index_key, {delivery_tag: time.time()}).hset(
            self.unacked_key, delivery_tag,
            dumps([message._raw, delivery["exchange"], delivery["routing_key"]]))
        if liveness.NODE is not None:
            pipe.sadd(keys.node_tags(liveness.NODE), delivery_tag)
        pipe.execute()
    virtual.QoS.append(self, message, delivery_tag)


def _remove_everywhere(self: Any, delivery_tag: str, pipe: Any = None) -> Any:
    pipe = _remove_from_indices(self, delivery_tag, pipe)
    if liveness.NODE is not None:
        pipe = pipe.srem(keys.node_tags(liveness.NODE), delivery_tag)
    return pipe


def _next_delivery_tag(self: Any) -> str:
    """kombu's delivery tag (a uuid4), without a system call (``tasks.ids``)."""
    return new_id()


def install() -> None:
    kombu_redis.Channel._connparams = _connparams
    kombu_redis.Channel._get_pool = _get_pool
    kombu_redis.Channel.basic_consume = basic_consume
    kombu_redis.Channel._brpop_start = fetch_start
    kombu_redis.Channel._brpop_read = fetch_read
    kombu_redis.Channel._put = put
    kombu_redis.Channel._inplace_augment_message = augment
    kombu_redis.QoS.append = _append_and_record
    kombu_redis.QoS._remove_from_indices = _remove_everywhere
    kombu_redis.Channel._next_delivery_tag = _next_delivery_tag
