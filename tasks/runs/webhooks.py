"""What the workers did with each source's webhook events, in Redis.

Webhook batches belong to no run: their counts go to the metrics hash (fields
``webhook_<count>|SOURCE|KIND``, named in tasks/runs/metrics.py, exported by
tasks/operator/exporter.py), once per batch id (a redelivered batch is written again,
idempotently, and not counted again); the events they reject, and the batches they
dead-letter, are kept per source for ``sluice failed list`` and ``sluice failed retry
webhooks-SOURCE``. A batch is counted in one step (lua/webhook_batch.lua), a dead letter in
one MULTI, as the run record's steps are.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

import redis

from integrations.secrets import Redactor
from tasks.runs import keys, metrics, scripts
from tasks.runs.deadletter import DeadLetter
from tasks.settings import REDELIVERY_WINDOW

# What a batch's counts are called (each a counter ``metrics.webhook(name)``).
COUNTS = ("written", "deleted", "stale", "rejected", "skipped")
RUN_PREFIX = "webhooks-"  # `sluice failed retry webhooks-SOURCE`


class WebhookLog:
    def __init__(self, client: redis.Redis, *, redactor: Redactor | None = None,
                 ttl: int = REDELIVERY_WINDOW) -> None:
        self.r = client
        self.redactor = redactor or Redactor()
        # How long a tombstone and a counted batch id are kept (SLUICE_WEBHOOK_DELIVERY_TTL):
        # as long as a delivery may be redelivered, or a redelivered version from before the
        # delete brings it back, or a batch handed out again is counted twice.
        self.ttl = ttl
        self._next_run_seq = scripts.register(client, "next_run_seq")
        self._record = scripts.register(client, "webhook_batch")

    def bury(self, source: str, kind: str, deleted: dict[str, Any]) -> None:
        """Keep a tombstone of each item deleted (identifier -> the delete's cursor value,
        None without one) for ``ttl`` seconds: an older version delivered late must not
        bring the item back."""
        if not deleted:
            return
        pipe = self.r.pipeline(transaction=False)
        for identifier, cursor in deleted.items():
            pipe.set(keys.webhook_gone(source, kind, identifier), json.dumps(cursor),
                     ex=self.ttl)
        pipe.execute()

    def tombstones(self, source: str, kind: str, identifiers: list[str]) -> dict[str, Any]:
        """identifier -> the cursor value its delete had, for those deleted recently."""
        if not identifiers:
            return {}
        got = self.r.mget([keys.webhook_gone(source, kind, i) for i in identifiers])
        return {i: json.loads(v) for i, v in zip(identifiers, got, strict=True)
                if v is not None}

    def unbury(self, source: str, kind: str, identifiers: list[str]) -> None:
        """An item written again after its delete (a newer version): no tombstone."""
        if identifiers:
            self.r.delete(*(keys.webhook_gone(source, kind, i) for i in identifiers))

    def run_seq(self) -> int:
        """A stamp newer than every run's before it (the rows a batch writes carry it)."""
        return int(self._next_run_seq(keys=[keys.RUN_SEQ], args=[int(time.time() * 1e6)]))

    def record(self, source: str, kind: str, batch_id: str, *, counts: dict[str, int],
               rejected: list[dict[str, Any]]) -> bool:
        """Count a batch written (once per ``batch_id``) and keep its rejected events.
        False: it was counted before (a redelivery)."""
        records = [json.dumps({**record, "batch": batch_id})
                   for record in self.redactor.data(rejected)]
        added = [x for name, value in counts.items() if value
                 for x in (metrics.field(metrics.webhook(name), source, kind), value)]
        return bool(self._record(
            keys=[keys.webhook_batch(source, batch_id), keys.METRICS,
                  keys.webhook_rejected(source), keys.webhook_dead(source)],
            args=[batch_id, self.ttl, keys.REJECTED_KEEP, json.dumps(records), *added]))

    def dead_letter(self, letter: DeadLetter, *, batch: str) -> None:
        """Keep a batch that could not be written (``batch``: its id), with its events and
        why."""
        letter = replace(letter, error=self.redactor.text(letter.error))
        pipe = self.r.pipeline()
        pipe.hset(keys.webhook_dead(letter.source), batch, letter.to_json())
        pipe.hincrby(keys.METRICS, metrics.field(metrics.WEBHOOK_BATCHES_FAILED,
                                                 letter.source, letter.kind), 1)
        pipe.execute()

    def rejected(self, source: str) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.r.lrange(keys.webhook_rejected(source), 0, -1)]

    def dead_letters(self, source: str) -> dict[str, DeadLetter]:
        """The source's dead-lettered batches, by batch id."""
        raw: dict[bytes, bytes] = self.r.hgetall(keys.webhook_dead(source))  # type: ignore[assignment]  # redis-py's sync client returns the dict
        return {k.decode(): DeadLetter.from_json(v, source=source) for k, v in raw.items()}
