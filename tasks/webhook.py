"""The webhook task: ``webhook_batch(source, kind, batch_id, events)``.

``sluice serve`` coalesces the events of a burst into batches (``events``: a JSON list of
``integrations.webhooks.Event.as_json``); each is written here through the write stage that
resync pages' batches go through (tasks/write/): the same identifier, mapping, typed table or
``entities`` (``Landing``), rejections; and the same retries and dead letters
(tasks/boundary.py).

    fetch      an event marked ``fetch`` gets its full item from the API (``fetch_item``),
               through the source's webhook share of its rate limit; gone (404): a delete;
               refused (403): that event dead-lettered alone
    collapse   the events of one identifier become its newest (the largest time or number
               at the kind's cursor_path; a tie: the later one); an upsert with none there,
               where the kind has a cursor_path, cannot be ordered and is rejected
    hold       one transaction in which no other batch of the kind writes (``Ordered``):
               an upsert older than the stored item, or than a recent delete of it (a
               tombstone in Redis), is left out (stale); deletes delete, whatever the
               selector makes of the item (a deleted item no longer matches it, and must
               still go), and leave a tombstone
    write      upserts as a batch task writes them, stamped with a fresh run sequence

Why a fresh run sequence per batch (``WebhookLog.run_seq``): rows carry the stamp of the run
that saw them, and only a stamp at least as new overwrites a row. An event is news from after
every run started so far: a resync that started earlier and writes late must not overwrite
it, and that resync's stale deletion (rows stamped older than it) must not remove it. The
next resync, newer still, writes over it as usual.

A parent upserted by a webhook does not fan out to its children: they come through their own
events (GitHub's issue_comment, Jira's comment_*). The http target has no transaction to hold
nor rows to delete: its upserts are posted as a batch is, in the events' order, and a delete
event is rejected with that reason.
"""

from __future__ import annotations

import json
import time
from typing import Any

from celery import Task

from integrations.base import Integration
from integrations.errors import MalformedPage, PermanentError, PermanentHTTPError, describe
from integrations.incremental import Position, position
from integrations.jsonpath import dig
from integrations.webhooks import Action, webhooks_of
from tasks.app import app
from tasks.boundary import Guard
from tasks.runs.deadletter import DeadLetter
from tasks.runs.webhooks import COUNTS, WebhookLog
from tasks.targets.base import Ordered
from tasks.worker import runtime
from tasks.write.landing import Landing, landing
from tasks.write.rejections import rejection

EventJson = dict[str, Any]  # {"delivery", "action", "item", "fetch"}, as it travels


@app.task(bind=True, name="sluice.webhook_batch", max_retries=None)
def webhook_batch(self: Task, source: str, kind: str, batch_id: str, events: str
                  ) -> dict[str, Any]:
    """Write one batch of a source's webhook events of ``kind``. A retryable failure (the
    target down, a follow-up fetch that timed out) retries with backoff; past the retries, or
    on anything else, the batch is dead-lettered with its events and why. An event whose
    follow-up fetch the API refuses (a 403, an expired token) is dead-lettered alone, as
    batch ``BATCH.INDEX`` (``sluice failed retry`` sends it again), and the rest is written."""
    rt = runtime.current()
    log = WebhookLog(rt.redis, redactor=rt.config.redactor, ttl=rt.settings.webhook_delivery_ttl)
    decoded: Any = events
    with Guard(self, rt.settings, retries=rt.settings.ingest_retries) as guard:
        decoded = json.loads(events)
        batch = WebhookBatch(rt, log, source, kind, run_seq=log.run_seq())
        batch.apply(decoded)
    if guard.error is None:
        for index, event, why in batch.unfetched:
            log.dead_letter(DeadLetter(task="webhook", source=source, kind=kind, items=[event],
                                       error=why, attempts=1, at=time.time()),
                            batch=f"{batch_id}.{index}")
        log.record(source, kind, batch_id, counts=batch.counts, rejected=batch.rejected)
        return {"batch": batch_id, **batch.counts}
    letter = guard.letter("webhook", source, kind, decoded)
    log.dead_letter(letter, batch=batch_id)
    return {"batch": batch_id, "dead_lettered": letter.error}


class WebhookBatch:
    """One batch of events of (source, kind) on its way to the target: fetch, collapse,
    hold, write (the module's docstring); ``counts``, ``rejected`` and ``unfetched`` say
    what became of each event."""

    def __init__(self, rt: runtime.Runtime, log: WebhookLog, source: str, kind: str, *,
                 run_seq: int) -> None:
        self.rt, self.log, self.source, self.kind, self.run_seq = rt, log, source, kind, run_seq
        self.integration, self.target = rt.integration(source), rt.target()
        self.lands = landing(self.integration, self.target, source, kind)
        hooks = webhooks_of(self.integration)
        self.cursor = hooks.cursor_path(kind) if hooks is not None else None
        self.counts = dict.fromkeys(COUNTS, 0)
        self.rejected: list[dict[str, Any]] = []
        self.unfetched: list[tuple[int, EventJson, str]] = []  # (index, event, why)

    def position(self, item: Any) -> Position | None:
        return position(dig(item, self.cursor)) if self.cursor is not None else None

    def apply(self, events: list[EventJson]) -> None:
        latest = self.collapse(events)
        if not isinstance(self.target, Ordered):
            write_unordered(self.lands, latest, self.rejected, self.counts,
                            run_seq=self.run_seq)
        else:
            self.hold(self.target, latest)
        self.counts["rejected"] = len(self.rejected)

    def collapse(self, events: list[EventJson]) -> dict[str, tuple[int, EventJson]]:
        """identifier -> (index, its newest event): the largest cursor value, a later
        delivery on a tie or where the two cannot be compared. A version without a cursor
        value (where the kind has a cursor_path) cannot be ordered: rejected."""
        latest: dict[str, tuple[int, EventJson]] = {}
        for index, event in enumerate(events):
            if event.get("fetch"):
                try:
                    event = follow_up(self.rt, self.integration, self.source, self.kind, event)
                except PermanentHTTPError as exc:  # the API refused: kept to send again
                    self.unfetched.append((index, event, f"fetch: {describe(exc)}"))
                    continue
                except PermanentError as exc:  # the event names no item to fetch
                    self.rejected.append(rejection(0, index, event["item"],
                                                   f"fetch: {describe(exc)}"))
                    continue
                # (a retryable failure retries the whole batch: it is idempotent)
            item = event["item"]
            identifier = self.lands.identifier(item)
            if identifier is None:
                self.rejected.append(rejection(0, index, item, "no identifier"))
                continue
            at = self.position(item)
            if at is None and self.cursor is not None and event["action"] != Action.DELETE:
                self.rejected.append(rejection(
                    0, index, item, f"no time or number at {self.cursor!r} (the kind's"
                    " cursor_path) to order this version by"))
                continue
            seen = latest.get(identifier)
            if seen is None or not before(at, self.position(seen[1]["item"])):
                latest[identifier] = (index, event)
        return latest

    def hold(self, target: Ordered, latest: dict[str, tuple[int, EventJson]]) -> None:
        """Write the batch in one held transaction: an upsert older than the stored item, or
        than a recent delete of it (its tombstone), is left out; deletes delete and leave a
        tombstone; an item the selector now leaves out is deleted."""
        table = self.lands.table
        with target.holding(self.source, self.kind, sorted(latest), table=table) as stored:
            deletes = {i: e["item"] for i, (_, e) in latest.items()
                       if e["action"] == Action.DELETE}
            upserts = [(i, index, e["item"]) for i, (index, e) in sorted(latest.items())
                       if e["action"] != Action.DELETE]
            gone = self.log.tombstones(self.source, self.kind, [i for i, _, _ in upserts])
            fresh = [(i, index, item) for i, index, item in upserts
                     if not before(self.position(item), self.position(stored.get(i)))
                     and not before(self.position(item), position(gone.get(i)), tie=True)]
            self.counts["stale"] = len(upserts) - len(fresh)
            left_out = write_upserts(self.lands, fresh, self.rejected, self.counts,
                                     run_seq=self.run_seq)
            if deletes or left_out:
                self.counts["deleted"] = target.delete(
                    self.source, self.kind, sorted({*deletes, *left_out}), table=table)
            self.log.bury(self.source, self.kind, {
                i: dig(item, self.cursor) if self.cursor is not None else None
                for i, item in deletes.items()})
            self.log.unbury(self.source, self.kind, [i for i, _, _ in fresh if i in gone])


def before(a: Position | None, b: Position | None, *, tie: bool = False) -> bool:
    """``a`` is strictly before ``b`` (with ``tie``: or at the same instant); False when
    either is unknown, or one is a time and the other a number (they do not compare)."""
    if a is None or b is None or a[0] != b[0]:
        return False
    return a[1] <= b[1] if tie else a[1] < b[1]


def follow_up(rt: runtime.Runtime, integration: Integration, source: str, kind: str,
              event: EventJson) -> EventJson:
    """An event that carries too little, with the full item from the API (the source's
    webhook share of its rate limit); an item the API no longer has (404, 410) is deleted.
    Raises PermanentError when the item cannot be fetched (no path, a 403)."""
    hooks = webhooks_of(integration)
    if hooks is None:
        raise MalformedPage(f"{kind} events are not fetched by this integration")
    client = rt.client(source, webhook=True)
    full = rt.run(hooks.fetch_item(kind, client, event["item"]))
    if full is None:
        return {**event, "action": str(Action.DELETE), "fetch": False}
    return {**event, "item": full, "fetch": False}


def write_upserts(lands: Landing, upserts: list[tuple[str, int, Any]],
                  rejected: list[dict[str, Any]], counts: dict[str, int], *, run_seq: int
                  ) -> list[str]:
    """Upsert the items (identifier, index in the batch, item) as a batch task writes a page
    of them, its rejections kept. Returns the identifiers the mapping's selector left out."""
    if not upserts:
        return []
    items = [item for _, _, item in upserts]
    done = lands.write(items, seq=0, run_id=f"webhooks-{lands.source}", run_seq=run_seq)
    counts["skipped"] += done.skipped
    left_out: list[str] = []
    if done.skipped:  # neither written nor rejected: the selector left it out
        kept = set(done.landed) | {items_index(upserts, r) for r in done.rejected}
        left_out = [i for i, _, _ in upserts if i not in kept]
    for record in done.rejected:  # where each was in the batch of events, not in this list
        record["index"] = upserts[record["index"]][1]
    counts["written"] += done.written
    rejected += done.rejected
    return left_out


def items_index(upserts: list[tuple[str, int, Any]], record: dict[str, Any]) -> str:
    """The identifier of a rejected item (by its place among the upserts)."""
    identifier: str = upserts[record["index"]][0]
    return identifier


def write_unordered(lands: Landing, latest: dict[str, tuple[int, EventJson]],
                    rejected: list[dict[str, Any]], counts: dict[str, int], *, run_seq: int
                    ) -> None:
    """A target that cannot hold a transaction nor delete (http): upserts posted in the
    events' order, deletes rejected with why."""
    upserts = []
    for identifier, (index, event) in sorted(latest.items(), key=lambda kv: kv[1][0]):
        if event["action"] == Action.DELETE:
            rejected.append(rejection(0, index, event["item"],
                                      "delete: this target does not delete"))
        else:
            upserts.append((identifier, index, event["item"]))
    write_upserts(lands, upserts, rejected, counts, run_seq=run_seq)
