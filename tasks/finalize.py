"""``finalize(run_id)``: the one task that ends a run (the progress scripts elect it).

A clean run (every page fetched, every batch written, no producer error) deletes the
entities of its source and kind that it did not see, within the deletion guard; any other run
ends failed and deletes nothing.
"""

from __future__ import annotations

from typing import Any

from tasks import runtime
from tasks.app import app
from tasks.progress import RunState


@app.task(name="sluice.finalize", autoretry_for=(Exception,), retry_backoff=True, max_retries=5)
def finalize(run_id: str) -> dict[str, Any]:
    rt = runtime.current()
    run = rt.progress.get(run_id)
    if run.get("state") != RunState.FINALIZING:
        return {"run_id": run_id, "state": run.get("state")}
    if run.get("error"):
        rt.progress.finish(run, RunState.FAILED, expect=RunState.FINALIZING,
                           reason=f"producer: {run['error']}")
    elif run["batches_failed"]:
        rt.progress.finish(run, RunState.FAILED, expect=RunState.FINALIZING, reason=(
            f"{run['batches_failed']} batch(es) dead-lettered; no stale entity was deleted;"
            f" see `sluice failed list {run_id}`"))
    else:
        threshold = rt.config.source(run["source"]).delete_threshold
        deletion = rt.target().delete_stale(run["source"], run["kind"], run_id=run_id,
                                            threshold=threshold)
        rt.progress.finish(run, RunState.SUCCEEDED, expect=RunState.FINALIZING,
                           deleted=deletion.deleted,
                           deletion_refused=deletion.refused)
    return {"run_id": run_id, "state": rt.progress.get(run_id).get("state")}
