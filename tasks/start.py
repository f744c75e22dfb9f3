"""Starting runs: a run record per kind and its producer task (``sluice run``, beat's
``resync_source``, ``sluice standalone``).

Apart from ``tasks.schedule`` (beat's scheduler, RedBeat) so that ``sluice run`` imports only
what sending needs before its producer task is out: the time from the command to the first
item is mostly imports.
"""

from __future__ import annotations

from kombu.exceptions import OperationalError
from kombu.utils.url import maybe_sanitize_url

from tasks import messages, traces
from tasks.app import app
from tasks.runs.progress import Progress, Run, RunState


def start_runs(progress: Progress, source: str, kinds: list[str], *,
               config_digest: str = "", full: bool = False) -> list[Run]:
    """Create a run per kind and enqueue its producer. A kind whose previous run is still
    running gets a 'skipped' run record and nothing is enqueued. ``config_digest``: the
    sluice.toml the runs are started from (workers must have the same). ``full``: incremental
    kinds read everything (and may delete). Raises kombu's OperationalError when the broker
    cannot be reached (the run it was for is failed, so it holds no lock)."""
    runs = []
    for kind in kinds:
        with traces.run_started(source, kind, full=full) as trace:
            run = progress.create_run(source, kind, config_digest=config_digest, full=full,
                                      traceparent=trace.traceparent)
            trace.record(run)
            if run.state == RunState.RUNNING:
                try:
                    messages.resync(app, source, kind, run.run_id, trace=run.traceparent)
                except OperationalError as exc:  # the broker is unreachable: nothing runs it
                    where = maybe_sanitize_url(app.conf.broker_url)  # without its password
                    progress.finish(run, RunState.FAILED, expect=RunState.RUNNING, reason=(
                        f"its producer task could not be sent to the broker at {where}: "
                        f"{exc}"))
                    raise
        runs.append(run)
    return runs
