"""What Celery beat runs.

Beat's schedule is built from sluice.toml when beat's scheduler starts: one entry per source
with ``schedule`` (cron) or ``every``, plus the stall watch. The scheduler is RedBeat, which
keeps the schedule in Redis behind a lock, so a second beat waits as a standby instead of
sending every task twice.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from celery.schedules import schedule
from redbeat import RedBeatScheduler
from redbeat.schedulers import RedBeatSchedulerEntry

from tasks.app import app
from tasks.config import SluiceConfig, get_config
from tasks.start import start_runs
from tasks.worker import runtime

WATCH_SECONDS = 30.0


def beat_schedule(config: SluiceConfig) -> dict[str, dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {
        "sluice-watch": {"task": "sluice.watch", "schedule": WATCH_SECONDS},
    }
    for name, schedules in config.schedules.items():
        for when, full in schedules:
            entries[f"resync-{'full-' if full else ''}{name}"] = {
                "task": "sluice.resync_source", "schedule": when, "args": (name,),
                "kwargs": {"full": full}}
    return entries


class Entry(RedBeatSchedulerEntry):
    """A schedule entry whose ``every`` runs are due on a fixed grid. Celery's entry takes the
    moment beat sent a run as the start of the next interval, so each run's lateness (beat's
    tick, sending the other entries due at once) was added to every later one: a source due
    every 30 s drifted a little each time. Here the next run is due ``every`` after the one
    just sent was due; a beat that was down resumes on the grid with one run, not a burst.
    Cron entries are unchanged (celery computes the next fire time from the clock)."""

    def _next_instance(self, last_run_at: datetime | None = None,
                       only_update_last_run_at: bool = False) -> Entry:
        if last_run_at is None:
            last_run_at = self.due_on_grid()
        return cast(Entry, super()._next_instance(
            last_run_at=last_run_at, only_update_last_run_at=only_update_last_run_at))

    __next__ = next = _next_instance

    def due_on_grid(self) -> datetime | None:
        """When the run being sent was due: the last point of its grid not after now (None
        for a cron entry, or one never run: celery's default, now)."""
        when = self.schedule
        if not isinstance(when, schedule) or self.last_run_at is None:
            return None
        every: timedelta = when.run_every
        now: datetime = when.maybe_make_aware(self.default_now())
        due: datetime = when.maybe_make_aware(self.last_run_at) + every
        if due > now:  # sent early (a clock step back): celery's default
            return None
        return due + every * ((now - due) // every)


class Scheduler(RedBeatScheduler):
    """RedBeat with the schedule of sluice.toml (``beat_scheduler`` in tasks/app.py)."""

    Entry = Entry

    def setup_schedule(self) -> None:
        self.app.conf.beat_schedule = beat_schedule(get_config())
        super().setup_schedule()


@app.task(name="sluice.resync_source")
def resync_source(source: str, full: bool = False) -> list[dict[str, Any]]:
    """Start a run of every kind of ``source`` (what a schedule entry sends)."""
    rt = runtime.current()
    kinds = rt.config.run_kinds(source)
    return [{"run_id": r.run_id, "kind": r.kind, "state": r.state}
            for r in start_runs(rt.progress, source, kinds, config_digest=rt.config.digest,
                                full=full)]


@app.task(name="sluice.watch")
def watch() -> list[str]:
    """End the runs that cannot end well: failed when Redis restarted or failed over since
    they started, stalled when they made no progress for ``stall_seconds``."""
    rt = runtime.current()
    return [r.run_id for r in rt.progress.watch(stall_after=rt.settings.stall_seconds)]
