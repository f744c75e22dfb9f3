"""A lost worker node costs seconds, not the broker's visibility timeout.

With the Redis broker, a message a worker took stays in kombu's ``unacked`` hash until it is
acked; if the whole node dies (SIGKILL, a lost machine), it comes back only when a live worker
sweeps for messages older than ``visibility_timeout`` (600 s here). A lower timeout would hand
a slow but live task out twice. Instead, as dramatiq's Redis broker does, every node says it is
alive and which messages it holds:

- each worker node (its main process, the one that takes messages from Redis) records the
  delivery tag of every message it takes in ``sluice:node:{node}:tags`` (``tasks/worker/broker.py``
  hooks kombu's QoS), and writes its heartbeat (Redis's time) into the sorted set
  ``sluice:nodes`` every fifth of ``SLUICE_NODE_TIMEOUT`` (10 s), from a thread of its own,
  whatever its tasks do;
- every node looks at the others at the same pace: the messages of a node whose heartbeat is
  older than the timeout go back to their queue (kombu's own ``restore_by_tag``), under a lock
  so one node does it.

So a node lost mid-run costs about ``SLUICE_NODE_TIMEOUT`` plus a beat; a live node, however
slow its tasks, keeps its messages. A node judges the others only after its own beats have got
through for a whole timeout, so that after a Redis outage (when every node's last beat is old)
the live ones have said so before anyone is taken for dead. kombu's visibility-timeout sweep
stays as the last resort.
Node names are unique per start (hostname, pid, start time): a node restarted under the same
hostname does not adopt, and so never strands, the messages of the one that died.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any, cast

import redis

from tasks.runs import keys, scripts

log = logging.getLogger(__name__)

# Set in a worker's main process: the node whose messages kombu's QoS records
# (tasks/worker/broker.py).
NODE: str | None = None


def node_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{int(time.time())}"


class Liveness:
    """The heartbeat of one worker node and its watch over the others: two short scripts per
    beat, whatever the number of nodes (a sorted set of last heartbeats)."""

    def __init__(self, app: Any, client: redis.Redis, node: str, *, timeout: float) -> None:
        self.app = app
        self.r = client
        self.node = node
        self.timeout = timeout
        self._beat = scripts.register(client, "node_beat")
        self._silent = scripts.register(client, "nodes_silent")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sluice-liveness", daemon=True)
        # Since when this node's own beats get through. Others are judged only after a whole
        # timeout of that: after a Redis outage every node's last beat is old, and the live
        # ones need a beat to say so before anyone is taken for dead.
        self._beating_since: float | None = None

    def start(self) -> Liveness:
        self.beat()
        self._thread.start()
        return self

    def beat(self) -> None:
        self._beat(keys=[keys.NODES], args=[self.node])

    def reap(self) -> list[str]:
        """Give back the messages of every node whose heartbeat stopped. Returns their names."""
        reaped = []
        for raw in self._silent(keys=[keys.NODES], args=[self.timeout]):
            node = raw.decode()
            if node == self.node:
                continue
            if not self.r.set(keys.node_reaper(node), self.node, nx=True,
                              px=int(self.timeout * 1000)):
                continue  # another node is at it
            tags = self.give_back(node)
            log.warning("worker node %s stopped answering: %d message(s) it held are back in "
                        "the queue", node, len(tags))
            reaped.append(node)
        return reaped

    def give_back(self, node: str) -> list[str]:
        """Put the messages ``node`` holds back in their queues (kombu's own ``restore_by_tag``;
        a tag acked meanwhile restores nothing) and forget them, and the node. Returns the
        tags. Only the tags read are removed: one the node records meanwhile (a node taken for
        dead that lives) stays for the next look."""
        tags = [t.decode() for t in cast(set[bytes], self.r.smembers(keys.node_tags(node)))]
        if tags:
            with self.app.connection_for_write() as conn:
                qos = conn.default_channel.qos
                for tag in tags:
                    qos.restore_by_tag(tag)
        pipe = self.r.pipeline()
        if tags:
            pipe.srem(keys.node_tags(node), *tags)
        pipe.zrem(keys.NODES, node)
        pipe.execute()
        return tags

    def tick(self, now: float) -> list[str]:
        """One beat, and the watch over the others once this node has beaten for a timeout."""
        self.beat()
        if self._beating_since is None:
            self._beating_since = now
        if now - self._beating_since < self.timeout:
            return []
        return self.reap()

    def _run(self) -> None:
        while not self._stop.wait(self.timeout / 5):
            try:
                self.tick(time.monotonic())
            except redis.RedisError as exc:  # Redis away for a moment: the next beat retries
                self._beating_since = None
                log.warning("liveness: %s", exc)

    def stop(self) -> None:
        """A clean stop: kombu acked or gave back every message it delivered; one the node
        took but never delivered (the fetch's reply unread when the connection closed) is
        given back here."""
        self._stop.set()
        self._thread.join(5)
        tags = self.give_back(self.node)
        if tags:
            log.info("worker node %s stopping: %d message(s) taken but not run are back in the "
                     "queue", self.node, len(tags))
