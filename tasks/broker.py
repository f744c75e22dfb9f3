"""A narrow workaround for kombu's Redis transport (5.7) when Redis restarts.

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

from typing import Any

import redis
from kombu.transport import redis as kombu_redis

_original = kombu_redis.Channel._connparams


def _connparams(self: Any, asynchronous: bool = False) -> Any:
    if self.connection is None or self.connection.client is None:
        raise redis.ConnectionError("this channel's broker connection was closed")
    return _original(self, asynchronous)


def install() -> None:
    kombu_redis.Channel._connparams = _connparams
