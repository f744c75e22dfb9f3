"""Sluice's queue names and a task message as it lies in Redis, with the standard library only.

``sluice run`` asks the running workers to start its runs (``tasks/operator/thin.py``) before
it imports Celery, kombu or redis-py: those imports were most of the half second between the
command and its producer task. So the one message it sends is built here, as kombu's Redis
transport would write it for ``app.send_task`` with Sluice's settings (Celery's task protocol
2, JSON, the body written into the envelope as JSON (``body_encoding = "json"``,
``tasks/worker/wire.py``), priority 0, the anonymous exchange routing to the queue
by name), and published with the wake token ``tasks/worker/broker.py`` adds beside every
message. ``tests/unit/test_thin.py`` compares it with what Celery and kombu write.

The queue names live here, not in ``tasks.messages`` (which imports Celery), for the same
reason; ``tasks.messages`` says what goes where.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from typing import Any

from tasks.runs import keys

START = "sluice.start_request"  # the task of ``sluice run``'s start request (tasks/start.py)

URGENT = "sluice.urgent"
PRODUCERS = "sluice.producers"
BATCHES = "sluice"  # the queue of Sluice's first versions: messages queued then still run
BULK = "sluice.bulk"
QUEUES = (URGENT, PRODUCERS, BATCHES, BULK)

# Tokens kept in a queue's wake list: how many idle workers one burst of messages wakes at once
# (tasks/worker/broker.py).
WAKE_TOKENS = 64

Command = tuple[str | int, ...]


def _json(value: Any) -> str:
    """JSON as ``tasks.worker.wire`` (msgspec) writes plain values: compact, not ASCII-only."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def task_message(task: str, args: list[Any], kwargs: dict[str, Any], *, task_id: str,
                 queue: str, argsrepr: str, kwargsrepr: str = "{}") -> str:
    """The JSON kombu's Redis transport LPUSHes for ``app.send_task(task, args, kwargs,
    task_id=..., queue=..., argsrepr=..., kwargsrepr=...)`` from a client of Sluice's app.
    ``args`` and ``kwargs`` hold JSON's own types only."""
    body = [args, kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    headers: dict[str, Any] = {
        "lang": "py", "task": task, "id": task_id, "shadow": None, "eta": None,
        "expires": None, "group": None, "group_index": None, "retries": 0,
        "timelimit": [None, None], "root_id": task_id, "parent_id": None,
        "argsrepr": argsrepr, "kwargsrepr": kwargsrepr,
        "origin": f"gen{os.getpid()}@{socket.gethostname()}", "ignore_result": None,
        "replaced_task_nesting": 0, "stamped_headers": None, "stamps": {}}
    properties: dict[str, Any] = {
        "correlation_id": task_id, "reply_to": str(uuid.uuid4()), "argsrepr": argsrepr,
        "kwargsrepr": kwargsrepr, "delivery_mode": 2,
        "delivery_info": {"exchange": "", "routing_key": queue}, "priority": 0,
        "body_encoding": "json", "delivery_tag": str(uuid.uuid4())}
    return _json({"body": body, "content-encoding": "utf-8",
                  "content-type": "application/json", "headers": headers,
                  "properties": properties})


def publish_commands(queue: str, message: str) -> list[Command]:
    """What publishing ``message`` to ``queue`` (priority 0) sends to Redis, in one round
    trip: the message, and the token that wakes an idle worker of the queue (at most
    ``WAKE_TOKENS`` kept; ``tasks.worker.broker.put`` adds the same to each message)."""
    wake = keys.fetch_wake(queue)
    return [("LPUSH", queue, message), ("LPUSH", wake, "1"),
            ("LTRIM", wake, 0, WAKE_TOKENS - 1)]
