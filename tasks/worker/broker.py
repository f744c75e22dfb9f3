"""Two narrow additions to kombu's Redis transport (5.7).

1. Each message a worker node takes is recorded under the node's name, so a live node can give
back the messages of a dead one within seconds (``tasks/worker/liveness.py``): ``QoS.append``
adds the delivery tag to ``sluice:node:{node}:tags`` in the same pipeline that records it as
unacked, and removing it from kombu's indexes (ack, reject, restore) removes it there too.

2. A workaround for when Redis restarts.

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

import time
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from tasks.runs import keys
from tasks.worker import liveness
from tasks.worker.wire import dumps

_original = kombu_redis.Channel._connparams


def _connparams(self: Any, asynchronous: bool = False) -> Any:
    if self.connection is None or self.connection.client is None:
        raise redis.ConnectionError("this channel's broker connection was closed")
    return _original(self, asynchronous)


_remove_from_indices = kombu_redis.QoS._remove_from_indices


def _append_and_record(self: Any, message: Any, delivery_tag: str) -> None:
    """kombu's ``QoS.append``, with the tag also recorded under this node, in the same
    pipeline (a node that dies in between leaves no message unrecorded)."""
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


def install() -> None:
    kombu_redis.Channel._connparams = _connparams
    kombu_redis.QoS.append = _append_and_record
    kombu_redis.QoS._remove_from_indices = _remove_everywhere
