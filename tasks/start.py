"""Starting runs: a run record per kind and its producer task (``sluice run``, beat's
``resync_source``, ``sluice standalone``), and ``sluice run``'s start request, which a worker
answers.

Apart from ``tasks.schedule`` (beat's scheduler, RedBeat) so that ``sluice run`` imports only
what sending needs before its producer task is out: the time from the command to the first
item is mostly imports.
"""

from __future__ import annotations

import json
from typing import Any

from kombu.exceptions import OperationalError
from kombu.utils.url import maybe_sanitize_url

from integrations.errors import ConfigError
from tasks import messages, traces
from tasks.app import app
from tasks.runs import keys
from tasks.runs.progress import Progress, Run, RunState

# How long an answer waits for its `sluice run` (which waits for it already, or is gone).
REPLY_TTL = 60


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


@app.task(name=messages.START)
def start_request(source: str, kinds: list[str] | None = None, full: bool = False,
                  digest: str = "", request: str = "") -> str:
    """``sluice run SOURCE``'s request (tasks/operator/thin.py): start the runs, if the
    request is still unclaimed, and answer with their records. The claim (GET and DEL in one
    transaction) makes it run once: the command deletes it itself when it stops waiting, and
    then starts the runs its own way. Answers an error (``fallback``: the command goes its
    own way, which says what is wrong as it always did) when this worker's sluice.toml is not
    the command's or does not have the source or kinds."""
    from tasks.worker import runtime

    rt = runtime.current()
    claim = keys.start_claim(request)
    with rt.redis.pipeline(transaction=True) as pipe:
        pipe.get(claim)
        pipe.delete(claim)
        taken, _ = pipe.execute()
    if taken is None:
        return "not claimed: the command started the runs itself, or gave up"
    try:
        rt.refresh()
        config = rt.config
        if digest != config.digest:
            raise ConfigError(f"this worker runs {config.path} of digest {config.digest}, not "
                              f"the command's ({digest})")
        wanted = config.kinds_to_run(source, kinds or None)
    except ConfigError as exc:  # nothing started: the command goes its own way
        _answer(rt.redis, request, {"error": str(exc), "fallback": True})
        return "answered: an error"
    try:
        runs = start_runs(rt.progress, source, wanted, config_digest=config.digest, full=full)
    except Exception as exc:  # some may have started: the command says so, and stops
        _answer(rt.redis, request, {"error": f"{type(exc).__name__}: {exc}", "fallback": False})
        raise
    _answer(rt.redis, request, {"runs": [run.as_json() for run in runs]})
    return f"answered: {', '.join(run.run_id for run in runs)}"


def _answer(r: Any, request: str, answer: dict[str, Any]) -> None:
    reply = keys.start_reply(request)
    with r.pipeline(transaction=False) as pipe:
        pipe.lpush(reply, json.dumps(answer))
        pipe.expire(reply, REPLY_TTL)
        pipe.execute()
