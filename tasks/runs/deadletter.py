"""``DeadLetter``: what is kept of a task that gave up (``tasks.boundary``), in Redis.

One record type for every task that dead-letters (a run's batch, a children task, a webhook
batch): the task writes it (``Progress.batch_failed``, ``WebhookLog.dead_letter``) and
``sluice failed list`` / ``retry`` read it back through the same class, so a field cannot be
written under one name and read under another.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

Task = Literal["batch", "children", "webhook"]  # what `sluice failed retry` sends again


@dataclass(frozen=True)
class DeadLetter:
    """A task that could not finish: enough to send it again, and why it gave up.

    ``items``: a batch's items (its JSON text when it could not be decoded), a children task's
    parents, a webhook batch's events. ``seq``: the batch's number in its run (None for a
    webhook batch, which belongs to no run); ``root``: the run's kind, when ``kind`` is a child
    kind of it. ``error``: ``integrations.errors.describe`` of what was raised."""

    task: Task
    source: str
    kind: str
    items: Any
    error: str
    attempts: int
    at: float
    seq: int | None = None
    root: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes, **defaults: Any) -> DeadLetter:
        """The record as written; ``defaults`` fill what it lacks (the source of a webhook
        batch's, which its key names). Records written before this class (kept for
        ``run_ttl_seconds``) lack ``task``, and a webhook batch's held ``events``."""
        data: dict[str, Any] = json.loads(raw)
        if "events" in data:
            data["items"] = data.pop("events")
            data.setdefault("task", "webhook")
        known = {f.name for f in fields(cls)}
        return cls(**{"task": "batch", **defaults,
                      **{k: v for k, v in data.items() if k in known}})

    @property
    def count(self) -> str:
        """How many items it holds (``undecodable``: its JSON text could not be decoded)."""
        return str(len(self.items)) if isinstance(self.items, list) else "undecodable"
