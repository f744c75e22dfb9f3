"""A lost worker node costs seconds, not the broker's visibility timeout.

With the Redis broker, a message a worker took stays in kombu's ``unacked`` hash until it is
acked; if the whole node dies (SIGKILL, a lost machine), it comes back only when a live worker
sweeps for messages older than ``visibility_timeout`` (600 s here). A lower timeout would hand
a slow but live task out twice. Instead, as dramatiq's Redis broker does, every node says it is
alive and which messages it holds:

- each worker node (its main process, the one that takes messages from Redis) records the
  delivery tag of every message it takes in ``sluice:node:{node}:tags`` (``tasks/broker.py``
  hooks kombu's QoS), and keeps ``sluice:node:{node}:alive`` set with a TTL of
  ``SLUICE_NODE_TIMEOUT`` seconds (10), renewed every fifth of it by a thread of its own,
  whatever its tasks do;
- every node looks at the others at the same pace: the messages of a node whose key expired
  go back to their queue (kombu's own ``restore_by_tag``), under a lock so one node does it.

So a node lost mid-run costs about ``SLUICE_NODE_TIMEOUT`` plus a beat; a live node, however
slow its tasks, keeps its messages. kombu's visibility-timeout sweep stays as the last resort.
Node names are unique per start (hostname, pid, start time): a node restarted under the same
hostname does not adopt, and so never strands, the messages of the one that died.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

import redis

from tasks import keys

log = logging.getLogger(__name__)

# Set in a worker's main process: the node whose messages kombu's QoS records (tasks/broker.py).
NODE: str | None = None


def node_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{int(time.time())}"


class Liveness:
    """The heartbeat of one worker node and its watch over the others."""

    def __init__(self, app: Any, client: redis.Redis, node: str, *, timeout: float) -> None:
        self.app = app
        self.r = client
        self.node = node
        self.timeout = timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sluice-liveness", daemon=True)

    def start(self) -> Liveness:
        self.beat()
        self._thread.start()
        return self

    def beat(self) -> None:
        pipe = self.r.pipeline()
        pipe.set(keys.node_alive(self.node), "1", px=int(self.timeout * 1000))
        pipe.sadd(keys.NODES, self.node)
        pipe.execute()

    def reap(self) -> list[str]:
        """Give back the messages of every node whose heartbeat stopped. Returns their names."""
        reaped = []
        for raw in self.r.smembers(keys.NODES):
            node = raw.decode()
            if node == self.node or self.r.exists(keys.node_alive(node)):
                continue
            if not self.r.set(keys.node_reaper(node), self.node, nx=True,
                              px=int(self.timeout * 1000)):
                continue  # another node is at it
            tags = [t.decode() for t in self.r.smembers(keys.node_tags(node))]
            if tags:
                with self.app.connection_for_write() as conn:
                    qos = conn.default_channel.qos
                    for tag in tags:
                        qos.restore_by_tag(tag)  # a tag acked meanwhile restores nothing
            pipe = self.r.pipeline()
            pipe.delete(keys.node_tags(node))
            pipe.srem(keys.NODES, node)
            pipe.execute()
            log.warning("worker node %s stopped answering: %d message(s) it held are back in "
                        "the queue", node, len(tags))
            reaped.append(node)
        return reaped

    def _run(self) -> None:
        while not self._stop.wait(self.timeout / 5):
            try:
                self.beat()
                self.reap()
            except redis.RedisError as exc:  # Redis away for a moment: the next beat retries
                log.warning("liveness: %s", exc)

    def stop(self) -> None:
        """A clean stop: the node's messages were acked or given back by kombu itself."""
        self._stop.set()
        self._thread.join(5)
        pipe = self.r.pipeline()
        pipe.delete(keys.node_alive(self.node), keys.node_tags(self.node))
        pipe.srem(keys.NODES, self.node)
        pipe.execute()
