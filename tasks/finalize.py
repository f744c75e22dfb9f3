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
    the target does not delete (http), or a sliced
    kind has no field to tell what its windows hold   -> succeeded, nothing deleted
    a sliced kind                                      -> succeeded, the stale entities within
                                                          its windows deleted
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

from integrations.incremental import newest
from tasks.app import app
from tasks.boundary import Guard
from tasks.runs.progress import Run, RunState
from tasks.targets.base import Deletion, Target, Within
from tasks.worker import runtime
from tasks.write.landing import child_kinds, landing


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
    within, why = scope(rt, run, target)
    if why:
        rt.watermarks().save(run.source, run.kind, marks)
        return RunState.SUCCEEDED, {**fields, "deletion_skipped": why}
    # The run read everything: a kind with a mapping now has all of its rows in its table,
    # and the rows it left in entities before the mapping go (first: refused, the watermarks
    # are not saved, so the next run reads everything again). A sliced run read only its
    # windows: only the rows it wrote into the table go.
    moved = 0
    for kind in (run.kind, *child_kinds(rt.integration(run.source), run.kind)):
        gone = delete_moved(rt, run.source, kind, run_seq=run.run_seq,
                            threshold=source.delete_threshold,
                            written_only=within is not None)
        if gone.refused:
            return RunState.PARTIAL, {
                **fields, "moved": moved or None, "deletion_refused": gone.refused,
                "watermark": "not saved: the next run reads everything again" if marks else None}
        moved += gone.deleted
    if moved:
        fields["moved"] = moved
    deletion = delete_stale(rt, run.source, run.kind, run_seq=run.run_seq,
                            threshold=source.delete_threshold, watermarks=marks, within=within)
    if deletion.refused:
        return RunState.PARTIAL, {**fields, "deletion_refused": deletion.refused}
    children, said = delete_children(rt, run, threshold=source.delete_threshold,
                                     sliced=within is not None)
    state = RunState.PARTIAL if "deletion_refused" in said else RunState.SUCCEEDED
    return state, {**fields, "deleted": deletion.deleted + children, **said}


def delete_children(rt: runtime.Runtime, run: Run, *, threshold: float, sliced: bool
                    ) -> tuple[int, dict[str, str]]:
    """A full run read every parent, and every parent fanned out: a child kind's rows that no
    parent gave again are stale (each kind within its own guard). Not after a sliced run: the
    parents outside its windows were not read. The rows deleted, and what the record says."""
    children = child_kinds(rt.integration(run.source), run.kind)
    if sliced and children:
        return 0, {"deletion_skipped": f"child kinds ({', '.join(children)}) of a sliced "
                   "run: it read only the parents within its windows"}
    deleted = 0
    for child in children:
        gone = delete_stale(rt, run.source, child, run_seq=run.run_seq, threshold=threshold)
        if gone.refused:
            return deleted, {"deletion_refused": f"{child}: {gone.refused}"}
        deleted += gone.deleted
    return deleted, {}


def scope(rt: runtime.Runtime, run: Run, target: Target) -> tuple[Within | None, str | None]:
    """Why a clean run deletes nothing; or, for a full run of a sliced kind, what it may
    delete: the stale entities whose ``slices.field`` (else ``incremental.cursor_path``) falls
    in its windows. (None, None): every stale entity may go."""
    if run.incremental:
        return None, "an incremental run reads only what changed: it deletes nothing"
    if not target.supports_delete:
        return None, f"the {rt.config.target.type} target does not delete stale entities"
    integration = rt.integration(run.source)
    slices = integration.slices(run.kind)
    if slices is None:
        return None, None
    incremental = integration.incremental(run.kind)
    field = slices.field or (incremental.cursor_path if incremental else None)
    if field is None:
        return None, ("a sliced run reads only its windows, and without slices.field (the "
                      "item's value they filter by) it cannot tell which entities they hold")
    span = rt.windows.span(run.run_id)
    if span is None:
        return None, "the run's span held no window: it read nothing, so it deletes nothing"
    return Within(field, slices.within(*span)), None


def delete_stale(rt: runtime.Runtime, source: str, kind: str, *, run_seq: int,
                 threshold: float, watermarks: dict[str, str] | None = None,
                 within: Within | None = None) -> Deletion:
    """Stale entities of a kind deleted within the guard, where the kind lands (its typed
    table, else ``entities``: ``tasks.write.landing``)."""
    return landing(rt.integration(source), rt.target(), source, kind).delete_stale(
        run_seq=run_seq, threshold=threshold, watermarks=watermarks, within=within)


def delete_moved(rt: runtime.Runtime, source: str, kind: str, *, run_seq: int,
                 threshold: float, written_only: bool = False) -> Deletion:
    """A kind that lands in its typed table: its rows left in ``entities`` from before the
    mapping, deleted once the table holds it (``Landing.delete_moved``)."""
    return landing(rt.integration(source), rt.target(), source, kind).delete_moved(
        run_seq=run_seq, threshold=threshold, written_only=written_only)


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


@app.task(bind=True, name="sluice.finalize", max_retries=None)
def finalize(self: Task, run_id: str) -> dict[str, Any]:
    rt = runtime.current()
    run = rt.progress.get(run_id)
    if (run is None or run.state != RunState.FINALIZING
            or rt.progress.moved(run_id, run.source, run.kind)):
        ended = rt.progress.get(run_id)
        return {"run_id": run_id, "state": str(ended.state if ended else RunState.LOST)}
    with Guard(self, rt.settings, retries=rt.settings.finalize_retries) as guard:
        state, fields = outcome(rt, run)
    if guard.error is not None:
        state, fields = RunState.FAILED, {"reason": (
            f"finalize gave up after {guard.attempt} retries: {guard.why}" if guard.exhausted
            else f"finalize: {guard.why}")}
    if state == RunState.PARTIAL:
        fields["reason"] = f"stale entities were not deleted: {fields['deletion_refused']}"
    rt.progress.finish(run, state, expect=RunState.FINALIZING, **fields)
    ended = rt.progress.get(run_id)
    return {"run_id": run_id, "state": str(ended.state if ended else RunState.LOST)}
