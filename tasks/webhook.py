"""The webhook task: ``webhook_batch(source, kind, batch_id, events)``.

``sluice serve`` coalesces the events of a burst into batches (``events``: a JSON list of
``integrations.webhooks.Event.as_json``); each is written here through the batch path of
resync pages: the same identifier, mapping, typed table or ``entities``, rejections, retries
and dead letters (tasks/ingest.py).

    fetch      an event marked ``fetch`` gets its full item from the API (``fetch_item``),
               through the source's webhook share of its rate limit; gone (404): a delete
    collapse   the events of one identifier become its newest (by the kind's cursor_path;
               equal or none: the later one)
    hold       one transaction in which no other batch of the kind writes (``Ordered``):
               an upsert older than the stored item (cursor_path) is left out (stale);
               deletes delete, whatever the selector makes of the item (a deleted item no
               longer matches it, and must still go)
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
from integrations.errors import PermanentError, RetryableError, describe
from integrations.http.paginators import dig
from integrations.http.retry import backoff
from integrations.incremental import comparable, older
from integrations.mapping import Mapping
from integrations.webhooks import Action
from tasks.app import app
from tasks.ingest import rejection, to_entities, write, write_mapped
from tasks.runs.webhooks import WebhookLog
from tasks.targets import Target
from tasks.targets.base import Ordered, Typed
from tasks.worker import runtime

Event = dict[str, Any]  # {"delivery", "action", "item", "fetch"}, as it travels


@app.task(bind=True, name="sluice.webhook_batch", max_retries=None)
def webhook_batch(self: Task, source: str, kind: str, batch_id: str, events: str
                  ) -> dict[str, Any]:
    """Write one batch of a source's webhook events of ``kind``. A retryable failure (the
    target down, a follow-up fetch that timed out) retries with backoff; past the retries, or
    on anything else, the batch is dead-lettered with its events and why."""
    rt = runtime.current()
    log = WebhookLog(rt.redis, redactor=rt.config.redactor)
    settings = rt.settings
    decoded: Any = events
    try:
        decoded = json.loads(events)
        counts, rejected = apply(rt, source, kind, decoded, run_seq=log.run_seq())
    except RetryableError as exc:
        if self.request.retries < settings.ingest_retries:
            delay = (min(settings.ingest_max_backoff, exc.retry_after)
                     if exc.retry_after is not None else
                     backoff(self.request.retries, base=settings.ingest_backoff,
                             cap=settings.ingest_max_backoff))
            raise self.retry(exc=exc, countdown=delay) from exc
        error: Exception = exc
    except Exception as exc:  # permanent: a Sluice error, or one nobody foresaw
        error = exc
    else:
        log.record(source, kind, batch_id, counts=counts, rejected=rejected)
        return {"batch": batch_id, **counts}
    log.dead_letter(source, batch_id, {"kind": kind, "events": decoded, "error": describe(error),
                                       "attempts": self.request.retries + 1, "at": time.time()})
    return {"batch": batch_id, "dead_lettered": describe(error)}


def apply(rt: runtime.Runtime, source: str, kind: str, events: list[Event], *, run_seq: int
          ) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Fetch, collapse, hold, write (the module's docstring). Returns the counts (written,
    deleted, stale, rejected, skipped) and the rejection records."""
    integration, target = rt.integration(source), rt.target()
    mapping = integration.mapping(kind)
    typed = mapping if mapping is not None and isinstance(target, Typed) else None
    rejected: list[dict[str, Any]] = []
    latest: dict[str, tuple[int, Event]] = {}  # identifier -> (index, its newest event)
    cursor = integration.cursor_path(kind)
    for index, event in enumerate(events):
        if event.get("fetch"):
            try:
                event = follow_up(rt, integration, source, kind, event)
            except PermanentError as exc:  # retryable ones retry the batch (it is idempotent)
                rejected.append(rejection(0, index, event["item"], f"fetch: {describe(exc)}"))
                continue
        identifier = (typed.identifier(event["item"]) if typed is not None
                      else integration.identifier(kind, event["item"]))
        if identifier is None:
            rejected.append(rejection(0, index, event["item"], "no identifier"))
            continue
        seen = latest.get(identifier)
        if seen is None or not older(value(event, cursor), value(seen[1], cursor)):
            latest[identifier] = (index, event)
    counts = dict.fromkeys(("written", "deleted", "stale", "rejected", "skipped"), 0)
    table = typed.table(source) if typed is not None else None
    if not isinstance(target, Ordered):
        write_unordered(target, integration, source, kind, latest, rejected, counts,
                        run_seq=run_seq)
    else:
        with target.holding(source, kind, sorted(latest), table=table) as stored:
            deletes = sorted(i for i, (_, e) in latest.items() if e["action"] == Action.DELETE)
            upserts = [(i, index, e["item"]) for i, (index, e) in sorted(latest.items())
                       if e["action"] != Action.DELETE]
            fresh = [(i, index, item) for i, index, item in upserts if cursor is None
                     or i not in stored or not older(dig(item, cursor), dig(stored[i], cursor))]
            counts["stale"] = len(upserts) - len(fresh)
            left_out = write_upserts(target, typed, integration, source, kind, fresh, rejected,
                                     counts, run_seq=run_seq)
            # An item the selector now leaves out goes, as a full resync would remove it.
            if deletes or left_out:
                counts["deleted"] = target.delete(source, kind, sorted({*deletes, *left_out}),
                                                  table=table)
    counts["rejected"] = len(rejected)
    return counts, rejected


def value(event: Event, cursor: str | None) -> Any:
    """The event's cursor value, or None (then it orders by its place in the batch)."""
    if cursor is None or comparable(dig(event["item"], cursor)) is None:
        return None
    return dig(event["item"], cursor)


def follow_up(rt: runtime.Runtime, integration: Integration, source: str, kind: str,
              event: Event) -> Event:
    """An event that carries too little, with the full item from the API (the source's
    webhook share of its rate limit); an item the API no longer has (404, 410) is deleted.
    Raises PermanentError when the item cannot be fetched (no path, a 403)."""
    client = rt.client(source, webhook=True)
    full = rt.run(integration.fetch_item(kind, client, event["item"]))
    if full is None:
        return {**event, "action": str(Action.DELETE), "fetch": False}
    return {**event, "item": full, "fetch": False}


def write_upserts(target: Target, typed: Mapping | None, integration: Integration, source: str,
                  kind: str, upserts: list[tuple[str, int, Any]], rejected: list[dict[str, Any]],
                  counts: dict[str, int], *, run_seq: int) -> list[str]:
    """Upsert the items (identifier, index in the batch, item) as a batch task writes a page
    of them, its rejections kept. Returns the identifiers the mapping's selector left out."""
    if not upserts:
        return []
    items = [item for _, _, item in upserts]
    run_id = f"webhooks-{source}"
    if typed is not None and isinstance(target, Typed):
        written, refused, skipped, landed = write_mapped(target, typed, source, 0, items,
                                                         run_id=run_id, run_seq=run_seq)
        counts["skipped"] += skipped
        kept = {e["identifier"] for e in landed} | {items_index(upserts, r) for r in refused}
        left_out = [i for i, _, _ in upserts if i not in kept] if skipped else []
    else:
        entities, index_of, refused = to_entities(integration, source, kind, 0, items)
        written, unstorable = write(target, entities, index_of, run_id=run_id,
                                    run_seq=run_seq, seq=0, items=items)
        refused += unstorable
        left_out = []
    for record in refused:  # where each was in the batch of events, not in this list
        record["index"] = upserts[record["index"]][1]
    counts["written"] += written
    rejected += refused
    return left_out


def items_index(upserts: list[tuple[str, int, Any]], record: dict[str, Any]) -> str:
    """The identifier of a rejected item (by its place among the upserts)."""
    identifier: str = upserts[record["index"]][0]
    return identifier


def write_unordered(target: Target, integration: Integration, source: str, kind: str,
                    latest: dict[str, tuple[int, Event]], rejected: list[dict[str, Any]],
                    counts: dict[str, int], *, run_seq: int) -> None:
    """A target that cannot hold a transaction nor delete (http): upserts posted in the
    events' order, deletes rejected with why."""
    upserts = []
    for identifier, (index, event) in sorted(latest.items(), key=lambda kv: kv[1][0]):
        if event["action"] == Action.DELETE:
            rejected.append(rejection(0, index, event["item"],
                                      "delete: this target does not delete"))
        else:
            upserts.append((identifier, index, event["item"]))
    write_upserts(target, None, integration, source, kind, upserts, rejected, counts,
                  run_seq=run_seq)
