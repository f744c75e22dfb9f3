"""The batch task: ``ingest_batch(run_id, source, kind, seq, items)``.

validate (every item needs an identifier, else it is rejected with a reason and the rest go
on) -> map to entities -> upsert into the target in one transaction. A transient target error
is retried with backoff; after the last retry, or on a permanent error, the batch is
dead-lettered in Redis with its items, so nothing accepted is lost.
"""

from __future__ import annotations

import random
import time
from typing import Any

from celery import Task

from integrations.base import Integration
from integrations.errors import PermanentError, RetryableError
from tasks import runtime
from tasks.app import app
from tasks.finalize import finalize
from tasks.targets import Entity


def to_entities(
    integration: Integration, source: str, kind: str, seq: int, items: list[Any]
) -> tuple[list[Entity], list[dict[str, Any]]]:
    """Entities (one per identifier, the last item wins) and rejection records."""
    entities: dict[str, Entity] = {}
    rejected: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        identifier = integration.identifier(kind, item)
        if identifier is None:
            rejected.append({"seq": seq, "index": index, "reason": "no identifier",
                             "item": repr(item)[:200]})
            continue
        entities[identifier] = {"identifier": identifier, "kind": kind, "source": source,
                                "data": item}
    return list(entities.values()), rejected


def backoff(retries: int, *, base: float, cap: float, hint: float | None) -> float:
    """Seconds before the next attempt: the target's hint, else exponential with jitter."""
    if hint is not None:
        return min(cap, hint)
    ceiling = min(cap, base * 2**retries)
    return ceiling / 2 + random.random() * ceiling / 2


@app.task(bind=True, name="sluice.ingest_batch", max_retries=None)
def ingest_batch(
    self: Task, run_id: str, source: str, kind: str, seq: int, items: list[Any]
) -> dict[str, Any]:
    rt = runtime.current()
    settings = rt.settings
    entities, rejected = to_entities(rt.integration(source), source, kind, seq, items)
    try:
        rt.target().upsert(entities, run_id=run_id)
    except RetryableError as exc:
        if self.request.retries < settings.ingest_retries:
            delay = backoff(self.request.retries, base=settings.ingest_backoff,
                            cap=settings.ingest_max_backoff, hint=exc.retry_after)
            raise self.retry(exc=exc, countdown=delay) from exc
        error: Exception = exc
    except PermanentError as exc:
        error = exc
    else:
        if rt.progress.batch_done(run_id, source, kind, seq, written=len(entities),
                                  rejected=rejected):
            finalize.delay(run_id)
        return {"run_id": run_id, "seq": seq, "written": len(entities), "rejected": len(rejected)}
    dead_letter = {"source": source, "kind": kind, "seq": seq, "items": items,
                   "error": f"{type(error).__name__}: {error}",
                   "attempts": self.request.retries + 1, "at": time.time()}
    if rt.progress.batch_failed(run_id, seq, dead_letter=dead_letter):
        finalize.delay(run_id)
    return {"run_id": run_id, "seq": seq, "dead_lettered": dead_letter["error"]}
