"""The Celery app: ``celery -A tasks worker`` / ``beat`` / ``flower``.

Settings that matter and why:
- JSON only: pickle over a shared Redis lets anyone who can write to Redis run code here.
- acks_late + reject_on_worker_lost + prefetch 1: a batch whose worker dies runs again
  (at-least-once; writes are idempotent upserts, counts are sets).
- visibility_timeout: a message not acked in time is handed out again, so it stays far above
  the longest task (tasks are short by design), and the restore sweep runs often.
- events on, so Flower sees every task; no result backend: progress lives in Redis records.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_process_shutdown

from tasks import runtime
from tasks.settings import get_settings

QUEUE = "sluice"

_settings = get_settings()

app = Celery("sluice", broker=_settings.redis_url,
             include=["tasks.resync", "tasks.ingest", "tasks.finalize", "tasks.schedule"])
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_accept_content=["json"],
    event_serializer="json",
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    task_default_queue=QUEUE,
    broker_transport_options={
        "visibility_timeout": _settings.visibility_timeout,
        "unacked_restore_interval": _settings.unacked_restore_interval,
        "unacked_restore_throttle": 1,
    },
    broker_connection_retry_on_startup=True,
    worker_send_task_events=True,
    task_send_sent_event=True,
    # Beat: RedBeat keeps the schedule in Redis behind a lock; a second beat is a standby.
    beat_scheduler="redbeat.RedBeatScheduler",
    redbeat_redis_url=_settings.redis_url,
    redbeat_key_prefix="sluice:beat:",
    redbeat_lock_timeout=60,
    beat_max_loop_interval=5,
)


@worker_init.connect
def _check_config(**_: Any) -> None:
    """A worker with a broken sluice.toml does not start (the error names file and key)."""
    from tasks.config import cached_config

    cached_config(str(_settings.config))


@worker_process_init.connect
def _init_process(**_: Any) -> None:
    runtime.current()


@worker_process_shutdown.connect
def _shutdown_process(**_: Any) -> None:
    runtime.shutdown()
