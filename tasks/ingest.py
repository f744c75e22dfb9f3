"""The batch task: ``ingest_batch(run_id, source, kind, seq, items)``.

validate (every item needs an identifier, else it is rejected with a reason and the rest go
on) -> map to entities -> upsert into the target in one transaction, stamped with the run's
sequence number. A kind with ``deleted`` (the API's deletion tombstones, ``integrations.
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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import Task

from integrations import jsontext
from integrations.base import Integration
from integrations.errors import TargetRejected, describe
from integrations.mapping import AS_IS, ColumnType, Mapping, fit, infer
from integrations.secrets import excerpt
from integrations.tombstones import Tombstones
from tasks import messages
from tasks.app import app
from tasks.boundary import Guard
from tasks.runs.seqs import fanout_seq
from tasks.targets import Entity, Target
from tasks.targets.base import (
    ColumnTypeChanged,
    Ordered,
    Row,
    SchemaFrozen,
    Table,
    Typed,
    bad_text,
)
from tasks.worker import runtime


def to_entities(
    integration: Integration, source: str, kind: str, seq: int, items: list[Any]
) -> tuple[list[Entity], dict[str, int], list[dict[str, Any]]]:
    """Entities (one per identifier, the last item wins), the index of each entity's item, and
    rejection records for items without a usable identifier."""
    entities: dict[str, Entity] = {}
    index_of: dict[str, int] = {}
    rejected: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        try:
            identifier = integration.identifier(kind, item)
            problem = None if identifier is None else bad_text(identifier)
        except Exception as exc:  # e.g. an id of 5,000 digits: str() refuses it
            identifier, problem = None, describe(exc)
        if identifier is None or problem:
            rejected.append(rejection(seq, index, item, (problem and f"identifier: {problem}")
                                      or "no identifier"))
            continue
        entities[identifier] = {"identifier": identifier, "kind": kind, "source": source,
                                "data": item}
        index_of[identifier] = index
    return list(entities.values()), index_of, rejected


def rejection(seq: int, index: int, item: Any, reason: str) -> dict[str, Any]:
    """What is kept of a rejected item: where it was, why, and the start of it."""
    return {"seq": seq, "index": index, "reason": reason, "item": excerpt(repr(item), 200)}


def write(target: Target, entities: list[Entity], index_of: dict[str, int], *, run_id: str,
          run_seq: int, seq: int, items: list[Any]) -> tuple[int, list[dict[str, Any]]]:
    """Upsert the batch. When the target rejects it, the items it cannot store (``unstorable``:
    a NUL in PostgreSQL text, a lone surrogate) are rejected and the rest written again; a
    batch rejected for another reason raises. Returns (written, rejection records)."""
    try:
        target.upsert(entities, run_id=run_id, run_seq=run_seq)
        return len(entities), []
    except TargetRejected:
        problems = {e["identifier"]: p for e in entities if (p := target.unstorable(e))}
        if not problems:
            raise
    kept = [e for e in entities if e["identifier"] not in problems]
    target.upsert(kept, run_id=run_id, run_seq=run_seq)
    return len(kept), [rejection(seq, index_of[i], items[index_of[i]], f"unstorable: {p}")
                       for i, p in problems.items()]


@app.task(bind=True, name="sluice.ingest_batch", max_retries=None)
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
        mapping = integration.mapping(kind)
        typed = mapping if mapping is not None and isinstance(target, Typed) else None
        skipped = 0
        tombstones = integration.tombstones(kind)
        split = None if tombstones is None else without_tombstones(
            tombstones, typed.identifier if typed is not None else
            lambda item: integration.identifier(kind, item), seq, decoded)
        if split is not None:
            decoded = split.items
        if typed is not None and isinstance(target, Typed):
            written, rejected, skipped, rows = write_mapped(
                target, typed, source, seq, decoded, run_id=run_id, run_seq=run_seq,
                text=items if isinstance(items, str) and split is None else None)
            unstorable: list[dict[str, Any]] = []
            landed = [r["raw"] for r in rows.values()] if fans_out(integration, kind) else []
        else:
            entities, index_of, rejected = to_entities(integration, source, kind, seq, decoded)
            written, unstorable = write(target, entities, index_of, run_id=run_id,
                                        run_seq=run_seq, seq=seq, items=decoded)
            landed = [e["data"] for e in entities]
        deleted = 0
        if split is not None:
            rejected += unstorable
            unstorable = []
            deleted = split.apply(target, source, kind, rejected,
                                  table=typed.table(source) if typed is not None else None)
        if root is None:  # children of children are not fetched (a kind's parent is a root)
            fanout(rt, run_id, source, kind, seq, landed, run_seq=run_seq)
        rejected += unstorable
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


@dataclass
class Split:
    """A batch without its tombstones: the ``items`` to write (``origin``: each one's index in
    the batch), the identifiers to ``delete``, and the tombstones ``rejected`` (no
    identifier; the target cannot delete)."""

    seq: int
    items: list[Any]
    origin: list[int]
    delete: list[str]
    tombstones: dict[str, tuple[int, Any]]  # identifier -> (index, its tombstone)
    rejected: list[dict[str, Any]]

    def apply(self, target: Target, source: str, kind: str, rejected: list[dict[str, Any]], *,
              table: str | None) -> int:
        """Delete the tombstones' rows (after the batch's upserts were written); put the
        ``rejected`` records of the written items back at their places in the batch, and add
        the tombstones'. Returns the rows deleted."""
        for record in rejected:
            record["index"] = self.origin[record["index"]]
        rejected += self.rejected
        if not self.delete:
            return 0
        if isinstance(target, Ordered):
            return target.delete(source, kind, self.delete, table=table)
        rejected += [rejection(self.seq, index, item, "deleted: this target does not delete")
                     for index, item in self.tombstones.values()]
        return 0


def without_tombstones(tombstones: Tombstones, identify: Callable[[Any], str | None], seq: int,
                       items: list[Any]) -> Split | None:
    """The batch split into what is written and what is deleted (None: no item of it is a
    tombstone). An identifier's later item wins: its earlier ones are dropped. A tombstone
    without an identifier is rejected."""
    marks = tombstones.marks(items)
    if not any(marks):
        return None
    ids: list[str | None] = []
    last: dict[str, int] = {}
    rejected = []
    for index, (item, mark) in enumerate(zip(items, marks, strict=True)):
        try:
            identifier = identify(item)
        except Exception:  # an id str() refuses: the write path rejects it with why
            identifier = None
        ids.append(identifier)
        if identifier is not None:
            last[identifier] = index
        elif mark:
            rejected.append(rejection(seq, index, item, "deleted: no identifier"))
    gone = {i: (index, items[index]) for i, index in last.items() if marks[index]}
    origin = [index for index, (mark, identifier) in enumerate(zip(marks, ids, strict=True))
              if not mark and identifier not in gone]
    return Split(seq, [items[i] for i in origin], origin, sorted(gone), gone, rejected)


def columns_for(mapping: Mapping, existing: dict[str, ColumnType],
                rows: list[tuple[int, str, dict[str, Any], Any]]) -> dict[str, ColumnType]:
    """Each column's type: the table's, else the mapping's, else inferred from the values (a
    column without a value yet waits for one)."""
    columns: dict[str, ColumnType] = {}
    for name, declared in mapping.settings.declared().items():
        kind = existing.get(name) or declared or infer([values.get(name)
                                                       for _, _, values, _ in rows])
        if kind is not None:
            columns[name] = kind
    return columns


def write_mapped(target: Typed, mapping: Mapping, source: str, seq: int, items: list[Any], *,
                 run_id: str, run_seq: int, text: str | None = None
                 ) -> tuple[int, list[dict[str, Any]], int, dict[str, Row]]:
    """Map the batch and upsert it into the kind's typed table. An item whose expression
    fails, or whose value does not fit its column, is rejected with why; the rest lands.
    Returns (written, rejection records, skipped by the selector, the rows written by
    identifier: their ``raw`` items fan out)."""
    table = mapping.table(source)
    mapped = mapping.map(items, text=text)
    rejected = [rejection(seq, index, items[index], why) for index, _, why in mapped.rejected]
    wanted = mapping.settings.declared().keys()
    for attempt in range(2):
        # The columns this target saw last, when they are all the mapping's (nothing can
        # be missing then); else read now. A type changed meanwhile is read again below.
        known = target.known_columns(table) if not attempt else None
        existing = (known if known is not None and wanted <= known.keys() else
                    target.table_columns(table) or {})
        columns = columns_for(mapping, existing, mapped.rows)
        misfits, rows, index_of = fitted_rows(mapping, columns, mapped.rows)
        spec = Table(table, columns, mapping.settings.schema_mode)
        try:
            target.upsert_rows(spec, list(rows.values()), run_id=run_id, run_seq=run_seq)
            break
        except ColumnTypeChanged:
            # Another batch created an inferred column from other values meanwhile: its type
            # stands, and this batch's values are fitted to it again (misfits rejected alone).
            if attempt:
                raise
        except SchemaFrozen:
            raise
        except TargetRejected as exc:
            unstorable_again(target, spec, rows, index_of, rejected, seq, items, exc,
                             run_id=run_id, run_seq=run_seq)
            break
    rejected += [rejection(seq, index, items[index], why) for index, why in misfits]
    return len(rows), rejected, mapped.skipped, rows


def fitted_rows(mapping: Mapping, columns: dict[str, ColumnType],
                mapped: list[tuple[int, str, dict[str, Any], Any]]
                ) -> tuple[list[tuple[int, str]], dict[str, Row], dict[str, int]]:
    """The rows with their values made to fit their columns, and (index, why) of the items
    whose values do not."""
    misfits: list[tuple[int, str]] = []
    rows: dict[str, Row] = {}
    index_of: dict[str, int] = {}
    # A value of its column's type as it is fits without a call (most do); number is left to
    # fit(), which refuses NaN and the infinities.
    as_is = [(name, kind, AS_IS.get(kind) if kind != "number" else None)
             for name, kind in columns.items()]
    for index, identifier, values, raw in mapped:
        fitted = dict(values)  # (the mapped values stay as they were: a retry fits again)
        try:
            for name, kind, same in as_is:
                value = fitted.get(name)
                if value is not None and type(value) is not same:
                    fitted[name] = fit(value, kind)
        except ValueError as exc:
            misfits.append((index, f"{mapping.kind} {identifier}: {exc}"))
            continue
        rows[identifier] = {"identifier": identifier, "values": fitted, "raw": raw}
        index_of[identifier] = index
    return misfits, rows, index_of


def unstorable_again(target: Typed, spec: Table, rows: dict[str, Row], index_of: dict[str, int],
                     rejected: list[dict[str, Any]], seq: int, items: list[Any],
                     refused: TargetRejected, *, run_id: str, run_seq: int) -> None:
    """The target refused the batch: the rows it cannot store (``unstorable_row``) are
    rejected and the rest written again; refused for another reason, that is raised."""
    problems = {i: p for i, row in rows.items() if (p := target.unstorable_row(row))}
    if not problems:
        raise refused
    for identifier, problem in problems.items():
        rejected.append(rejection(seq, index_of[identifier], items[index_of[identifier]],
                                  f"unstorable: {problem}"))
        del rows[identifier]
    target.upsert_rows(spec, list(rows.values()), run_id=run_id, run_seq=run_seq)


def fans_out(integration: Integration, kind: str) -> bool:
    """``kind`` has child kinds (its items written are their parents)."""
    return any(integration.parent(k) == kind for k in integration.kinds())


def child_kinds(integration: Integration, kind: str) -> list[str]:
    """The kinds that hang off ``kind``, in a fixed order (it numbers their tasks)."""
    return sorted(k for k in integration.kinds() if integration.parent(k) == kind)


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
