"""The batch task: ``ingest_batch(run_id, source, kind, seq, items)``.

validate (every item needs an identifier, else it is rejected with a reason and the rest go
on) -> map to entities or typed rows -> upsert into the target in one transaction, stamped
with the run's sequence number (all of it the write stage's, ``tasks/write``, which webhook
batches share). A kind with ``deleted`` (the API's deletion tombstones, ``integrations.
tombstones``) first takes its tombstones out of the batch: their identifiers' rows are
deleted (typed table or ``entities``; counted as deleted), never written. Within a batch the
later item of an identifier wins: a tombstone after an upsert deletes it, an upsert after a
tombstone is written. The http target deletes nothing: a tombstone there is rejected with why,
as a webhook's delete is.

An item whose values the target cannot store is rejected alone and the rest of the batch
lands. A transient target error is retried with backoff; after the last retry, or
on a permanent error, the batch is dead-lettered in Redis with its items, so nothing accepted
is lost. Rejected items are counted on the run and listed by ``sluice failed list``.
"""

from __future__ import annotations

import json
from typing import Any

from celery import Task

from integrations import jsontext
from tasks import messages
from tasks.app import app
from tasks.boundary import Guard
from tasks.runs.seqs import fanout_seq
from tasks.worker import runtime
from tasks.write.landing import child_kinds, landing
from tasks.write.tombstones import without_tombstones


@app.task(bind=True, name="sluice.ingest_batch", max_retries=None,
          Request="tasks.worker.requests:DecodedOnce")
def ingest_batch(
    self: Task, run_id: str, source: str, kind: str, seq: int, items: str | list[Any],
    run_seq: int | None = None, root: str | None = None,
) -> dict[str, Any]:
    """Write one batch: ``items`` is a JSON array as text (as the producer sends it), or a
    list (``sluice failed retry`` of an older dead letter); ``root``: the run's kind, when
    ``kind`` is a child kind of it. The items written fan out to the kind's child kinds.
    Whatever is raised while writing (a Sluice error past its retries, a bug, JSON too deep
    to decode) dead-letters the batch with the exception's type, message and place."""
    rt = runtime.current()
    child = kind if root is not None else ""
    kept: str | list[Any] = items  # what a dead letter holds: the items, decoded when they are
    with Guard(self, rt.settings, retries=rt.settings.ingest_retries) as guard:
        decoded: list[Any] = jsontext.loads(items) if isinstance(items, str) else items
        kept = decoded
        if run_seq is None:  # a message from `sluice failed retry` of an older version
            run = rt.progress.get(run_id)
            run_seq = run.run_seq if run else 0
        integration, target = rt.integration(source), rt.target()
        lands = landing(integration, target, source, kind)
        tombstones = integration.tombstones(kind)
        split = None if tombstones is None else without_tombstones(
            tombstones, lands.identifier, seq, decoded)
        if split is not None:
            decoded = split.items
        done = lands.write(decoded, seq=seq, run_id=run_id, run_seq=run_seq,
                           text=items if isinstance(items, str) and split is None else None)
        written, rejected, skipped = done.written, done.rejected, done.skipped
        deleted = 0
        if split is not None:
            deleted = split.apply(target, source, kind, rejected, table=lands.table)
        if root is None:  # children of children are not fetched (a kind's parent is a root)
            fanout(rt, run_id, source, kind, seq, list(done.landed.values()), run_seq=run_seq)
    if guard.error is None:
        if rt.progress.batch_done(run_id, source, root or kind, seq, written=written,
                                  rejected=rejected, child=child, skipped=skipped,
                                  deleted=deleted):
            messages.finalize(app, run_id)
        return {"run_id": run_id, "seq": seq, "written": written, "rejected": len(rejected),
                "deleted": deleted}
    letter = guard.letter("batch", source, kind, kept, seq=seq, root=root)
    if rt.progress.batch_failed(run_id, seq, dead_letter=letter, child=child):
        messages.finalize(app, run_id)
    return {"run_id": run_id, "seq": seq, "dead_lettered": letter.error}


def fanout(rt: runtime.Runtime, run_id: str, source: str, kind: str, seq: int,
           parents: list[Any], *, run_seq: int) -> None:
    """The parents written fan out: one task per child kind fetches the children of every
    parent of this batch. Recorded on the run, then sent, before the batch is done, so the
    run cannot end while they are out (a task lost in between leaves the run to the stall
    watch, never ended early; a redelivered batch sends them again: the run counts each
    once). Nothing is sent for a run whose record is gone or was failed because Redis
    restarted or failed over under it."""
    integration = rt.integration(source)
    for number, child in enumerate(child_kinds(integration, kind)):
        if not parents:
            return
        refs = [integration.parent_ref(kind, item) for item in parents]
        task = fanout_seq(seq, number)
        if not rt.progress.record_children(run_id, source, kind, [task], child=child):
            return
        messages.children(app, run_id, source, child, task, json.dumps(refs), run_seq=run_seq,
                          count=len(refs), root=kind)
