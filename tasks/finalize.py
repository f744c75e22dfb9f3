"""``finalize(run_id)``: the one task that ends a run (the progress scripts elect it).

    Redis restarted or failed over since the run
    started (its run_id changed: the record may
    have lost writes)                                  -> failed, nothing deleted, and the
                                                          watermarks stay
    producer error, or a batch dead-lettered           -> failed, nothing deleted
    more than max_rejected of the items rejected       -> failed, nothing deleted
    paging may have missed items (a full last page
    without a next link, fewer items than the total)   -> partial, nothing deleted
    a kind moved to its typed table (a mapping added),
    but the table got too few rows (``move_guard``)    -> partial, nothing deleted, and the
                                                          watermarks stay (read all again)
    the deletion guard refuses                         -> partial, nothing deleted
    the target does not delete (http)                  -> succeeded, nothing deleted
    otherwise                                          -> succeeded, stale entities deleted

A finalize that cannot finish (the target stays down past the retries, a role without DELETE,
a bug) ends the run failed with the reason and releases its lock: a run never stays
'finalizing'. Redis changing while finalize works (after its check, before the run's end is
recorded) fails the run all the same; what finalize did meanwhile was decided from the record
as it stood before the change, and the run's ``deleted`` and ``watermark`` say what it was.
"""

from __future__ import annotations

import json
from typing import Any

from celery import Task

from integrations.errors import RetryableError, describe
from integrations.http.retry import backoff
from integrations.incremental import newest
from tasks.app import app
from tasks.ingest import child_kinds
from tasks.runs.progress import Run, RunState
from tasks.targets.base import Deletion, Typed
from tasks.worker import runtime

RETRIES = 5


def outcome(rt: runtime.Runtime, run: Run) -> tuple[RunState, dict[str, Any]]:
    """How the run ends, and the fields to record; deletes stale entities when it may."""
    run_id = run.run_id
    if run.error:
        return RunState.FAILED, {"reason": f"producer: {run.error}"}
    if run.batches_failed:
        return RunState.FAILED, {"reason": (
            f"{run.batches_failed} batch(es) dead-lettered; no stale entity was deleted;"
            f" see `sluice failed list {run_id}`")}
    source = rt.config.source(run.source)
    rejected, fetched = run.items_rejected, run.items_fetched
    if rejected and rejected > source.max_rejected * fetched:
        return RunState.FAILED, {"reason": (
            f"{rejected} of {fetched} items rejected ({rejected / fetched:.1%}), more than "
            f"max_rejected {source.max_rejected:.1%}; no stale entity was deleted; see "
            f"`sluice failed list {run_id}`")}
    doubt, own = run.incomplete, run.own("items_fetched")  # the total counts no children
    if not doubt and run.items_expected and own < run.items_expected:
        doubt = f"the API said there are {run.items_expected} items, but {own} were read"
    if doubt:  # and the watermarks stay: the next run reads this window again
        return RunState.PARTIAL, {"deletion_refused": f"paging may be incomplete: {doubt}"}
    # Every batch was written and the paging is whole: the watermarks may advance.
    marks, fields = watermarks(rt, run)
    target = rt.target()
    if run.incremental or not target.supports_delete:
        rt.watermarks().save(run.source, run.kind, marks)
        why = ("an incremental run reads only what changed: it deletes nothing"
               if run.incremental else
               f"the {rt.config.target.type} target does not delete stale entities")
        return RunState.SUCCEEDED, {**fields, "deletion_skipped": why}
    # The run read everything: a kind with a mapping now has all of its rows in its table,
    # and the rows it left in entities before the mapping go (first: refused, the watermarks
    # are not saved, so the next run reads everything again).
    moved = 0
    for kind in (run.kind, *child_kinds(rt.integration(run.source), run.kind)):
        gone = delete_moved(rt, run.source, kind, run_seq=run.run_seq,
                            threshold=source.delete_threshold)
        if gone.refused:
            return RunState.PARTIAL, {
                **fields, "moved": moved or None, "deletion_refused": gone.refused,
                "watermark": "not saved: the next run reads everything again" if marks else None}
        moved += gone.deleted
    if moved:
        fields["moved"] = moved
    deletion = delete_stale(rt, run.source, run.kind, run_seq=run.run_seq,
                            threshold=source.delete_threshold, watermarks=marks)
    if deletion.refused:
        return RunState.PARTIAL, {**fields, "deletion_refused": deletion.refused}
    deleted = deletion.deleted
    # A full run read every parent, and every parent fanned out: a child kind's rows that no
    # parent gave again are stale (each kind within its own guard).
    for child in child_kinds(rt.integration(run.source), run.kind):
        gone = delete_stale(rt, run.source, child, run_seq=run.run_seq,
                            threshold=source.delete_threshold)
        if gone.refused:
            return RunState.PARTIAL, {**fields, "deleted": deleted,
                                      "deletion_refused": f"{child}: {gone.refused}"}
        deleted += gone.deleted
    return RunState.SUCCEEDED, {**fields, "deleted": deleted}


def delete_stale(rt: runtime.Runtime, source: str, kind: str, *, run_seq: int,
                 threshold: float, watermarks: dict[str, str] | None = None) -> Deletion:
    """Stale entities of a kind deleted within the guard: from its typed table when it has a
    mapping (and the target has tables), else from ``entities``."""
    target, mapping = rt.target(), rt.integration(source).mapping(kind)
    if mapping is not None and isinstance(target, Typed):
        return target.delete_stale_rows(mapping.table(source), source, kind,
                                        run_seq=run_seq, threshold=threshold,
                                        watermarks=watermarks)
    return target.delete_stale(source, kind, run_seq=run_seq, threshold=threshold,
                               watermarks=watermarks)


def delete_moved(rt: runtime.Runtime, source: str, kind: str, *, run_seq: int,
                 threshold: float) -> Deletion:
    """A kind with a mapping (on a target with tables): its rows left in ``entities`` from
    before the mapping, deleted once its table holds it (``Typed.delete_moved``). A kind
    whose mapping was removed keeps its table as it is: Sluice never empties nor drops a
    table it no longer writes (views and queries may read it; ``sluice entities`` lists it)."""
    target, mapping = rt.target(), rt.integration(source).mapping(kind)
    if mapping is None or not isinstance(target, Typed):
        return Deletion()
    return target.delete_moved(mapping.table(source), source, kind, run_seq=run_seq,
                               threshold=threshold)


def watermarks(rt: runtime.Runtime, run: Run) -> tuple[dict[str, str], dict[str, Any]]:
    """The watermarks a clean run leaves (JSON, by partition key, stamped with the mapping
    they were read with), and what the run record says of them."""
    integration = rt.integration(run.source)
    incremental = integration.incremental(run.kind)
    if incremental is None:
        return {}, {}
    store, mapping = rt.watermarks(), integration.mapping(run.kind)
    marks = store.advanced(run.source, run.kind, rt.progress.marks(run.run_id), mapping=mapping)
    stamped = store.stamped(run.source, run.kind, marks, mapping=mapping)
    if not marks:
        return stamped, {"watermark": "unchanged (no item read had a time or a number at "
                                      f"cursor_path); {store.where}"}
    # An epoch's number with its time beside it (``cursor_type``): 1704067200000 (2024-...Z).
    shown = ", ".join(incremental.shown(json.loads(v)) if k == "null" else
                      f"{k}: {incremental.shown(json.loads(v))}" for k, v in sorted(marks.items()))
    if len(shown) > 200:
        top = newest([json.loads(v) for v in marks.values()])
        shown = f"{len(marks)} partitions, newest {incremental.shown(top)}"
    return stamped, {"watermark": f"{shown}; {store.where}"}


@app.task(bind=True, name="sluice.finalize", max_retries=RETRIES)
def finalize(self: Task, run_id: str) -> dict[str, Any]:
    rt = runtime.current()
    run = rt.progress.get(run_id)
    if (run is None or run.state != RunState.FINALIZING
            or rt.progress.moved(run_id, run.source, run.kind)):
        ended = rt.progress.get(run_id)
        return {"run_id": run_id, "state": str(ended.state if ended else RunState.LOST)}
    try:
        state, fields = outcome(rt, run)
    except RetryableError as exc:
        if self.request.retries < RETRIES:
            raise self.retry(exc=exc, countdown=backoff(self.request.retries, base=2.0,
                                                        cap=30.0)) from exc
        state, fields = RunState.FAILED, {
            "reason": f"finalize gave up after {RETRIES} retries: {describe(exc)}"}
    except Exception as exc:
        state, fields = RunState.FAILED, {"reason": f"finalize: {describe(exc)}"}
    if state == RunState.PARTIAL:
        fields["reason"] = f"stale entities were not deleted: {fields['deletion_refused']}"
    rt.progress.finish(run, state, expect=RunState.FINALIZING, **fields)
    ended = rt.progress.get(run_id)
    return {"run_id": run_id, "state": str(ended.state if ended else RunState.LOST)}
