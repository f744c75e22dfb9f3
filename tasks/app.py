"""The Celery app: ``celery -A tasks worker`` / ``beat`` / ``flower``.

Settings that matter and why:
- JSON only: pickle over a shared Redis lets anyone who can write to Redis run code here.
- acks_late + reject_on_worker_lost + prefetch 1: a batch whose worker dies runs again
  (at-least-once; writes are idempotent upserts, counts are sets).
- visibility_timeout: a message not acked in time is handed out again, so it stays far above
  the longest task (tasks are short by design), and the restore sweep runs often.
- four queues, consumed in turn (tasks/messages.py): a webhook, a producer or a small run
  never waits behind a backfill's batches.
- events on, so Flower sees every task; no result backend: progress lives in Redis records.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from celery import Celery
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)

from tasks import messages, traces
from tasks.runs.client import connect_redis
from tasks.settings import get_settings
from tasks.worker import broker, liveness, logs, packer, requests, runtime, siblings, wire

QUEUE = messages.BATCHES
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def flower_refusal(argv: Sequence[str], env: Mapping[str, str]) -> str | None:
    """Why a ``celery flower`` process must not start: it would listen beyond loopback
    without authentication (Flower shows task arguments and can revoke tasks). None: fine."""
    options = {k: v for k, v in (a.lstrip("-").split("=", 1) for a in argv if "=" in a)}
    address = options.get("address", env.get("FLOWER_ADDRESS", ""))
    if options.get("unix_socket") or options.get("unix-socket") or address in LOOPBACK:
        return None
    if any(options.get(k) or env.get(f"FLOWER_{k.upper().replace('-', '_')}")
           for k in ("basic_auth", "basic-auth", "auth")):
        return None
    where = address or "every interface"
    return (f"refusing to run Flower on {where} without authentication: set "
            "FLOWER_BASIC_AUTH=user:password (or --auth), or --address=127.0.0.1")


if "flower" in sys.argv[1:] and (_refusal := flower_refusal(sys.argv, os.environ)):
    raise SystemExit(_refusal)

_settings = get_settings()
broker.install()
wire.install()
packer.install()

app = Celery("sluice", broker=_settings.queue_url,
             include=["tasks.resync", "tasks.start", "tasks.ingest", "tasks.children",
                      "tasks.finalize", "tasks.schedule", "tasks.webhook"])
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_accept_content=["json"],
    event_serializer="json",
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    # The defaults of a plain `celery -A tasks worker` (tasks/settings.py says why).
    worker_pool=_settings.worker_pool,
    worker_concurrency=_settings.worker_concurrency,
    task_ignore_result=True,
    task_default_queue=QUEUE,
    # Every queue Sluice sends to (tasks/messages.py says what goes where): a worker started
    # without -Q consumes them all, in turn. Each declared as Celery declares a queue it meets
    # by name (a direct exchange of the same name), so a client that only names the queue
    # and a worker agree on RabbitMQ.
    task_queues={name: {"exchange": name, "routing_key": name} for name in messages.QUEUES},
    broker_transport_options={
        "visibility_timeout": _settings.visibility_timeout,
        "unacked_restore_interval": _settings.unacked_restore_interval,
        "unacked_restore_throttle": 1,
        # The body as it is, not base64: a batch's message is smaller (496 KB instead of 541
        # for a 500-item page) and costs a third of the CPU to write and read. A message keeps
        # its encoding in its properties, so ones already queued still decode.
        "body_encoding": "utf-8",
    },
    broker_connection_retry_on_startup=True,
    broker_connection_max_retries=None,  # a worker waits for Redis to come back, however long
    # Publishing (the producer's pages) rides out a Redis restart of about half a minute.
    task_publish_retry_policy={"max_retries": 15, "interval_start": 0.2, "interval_step": 0.5,
                               "interval_max": 3},
    worker_send_task_events=True,
    task_send_sent_event=True,
    # Beat: RedBeat keeps the schedule in Redis behind a lock; a second beat is a standby.
    beat_scheduler="tasks.schedule:Scheduler",
    redbeat_redis_url=_settings.redis_url,
    redbeat_key_prefix="sluice:beat:",
    redbeat_lock_timeout=60,
    beat_max_loop_interval=5,
)


@worker_init.connect
def _check_config(**_: Any) -> None:
    """A worker with a broken sluice.toml does not start (the error names file and key).
    SystemExit, not the ConfigError: Celery logs an Exception from a signal handler and
    goes on."""
    from integrations.errors import ConfigError
    from tasks.config import get_config

    siblings.die_with_parent()
    try:
        config = get_config(_settings.config)
    except ConfigError as exc:
        raise SystemExit(f"sluice: {exc}") from None
    if why := traces.problem(os.environ):
        raise SystemExit(f"sluice: {why}")
    logs.install(config.redactor)
    if app.connection_for_read().transport.driver_type == "redis":
        global _liveness
        liveness.NODE = liveness.node_name()
        _liveness = liveness.Liveness(app, connect_redis(_settings.redis_url, role="liveness"),
                                      liveness.NODE, timeout=_settings.node_timeout).start()


_liveness: liveness.Liveness | None = None


@worker_shutdown.connect
def _stop_liveness(**_: Any) -> None:
    if _siblings is not None:
        _siblings.wait(timeout=60)
    if _liveness is not None:
        _liveness.stop()
    traces.shutdown()  # the threads pool's spans (a prefork child's go at its own end)


@after_setup_logger.connect
@after_setup_task_logger.connect
def _redact_logs(**_: Any) -> None:
    logs.install(logs.FILTER.redactor)


@worker_process_init.connect
def _init_process(**_: Any) -> None:
    traces.setup("worker")  # after the fork: the export thread is the child's own
    runtime.current().warm()


@worker_ready.connect
def _init_threads(sender: Any = None, **_: Any) -> None:
    """The threads (and solo) pool runs tasks in this process: warm its runtime now, not in
    the first task. A prefork parent does not (its children do, after the fork)."""
    from celery.concurrency.prefork import TaskPool
    from celery.concurrency.thread import TaskPool as ThreadPool

    pool = getattr(sender, "pool", None)
    if sender is not None and not isinstance(pool, TaskPool):
        traces.setup("worker")
        runtime.current().warm()
        requests.IN_PROCESS = True  # its tasks get the payload the consumer decoded
    if isinstance(pool, ThreadPool):
        global _siblings
        _siblings = siblings.start(sender.hostname, siblings.count(_settings.worker_processes))


_siblings: siblings.Siblings | None = None


# Celery sends this signal from its SIGTERM/SIGINT/SIGQUIT handler under a plain Lock; a second
# signal that arrives while the first one's dispatch holds it (a group signal plus the one the
# first node passes on to its siblings, Ctrl-C twice) waited on that lock forever and the
# node never stopped. Reentrant, the second dispatch goes through.
worker_shutting_down.lock = threading.RLock()


@worker_shutting_down.connect
def _stop_producing(how: str = "Warm", **_: Any) -> None:
    """Warm shutdown: a producer slice running in this process (the threads pool) stops after
    the page in hand and hands on, rather than holding the shutdown for its whole slice. The
    node's siblings get the same shutdown."""
    runtime.STOPPING.set()
    if _siblings is not None:
        _siblings.signal(signal.SIGQUIT if how == "Cold" else signal.SIGTERM)


@worker_process_shutdown.connect
def _shutdown_process(**_: Any) -> None:
    runtime.shutdown()
    traces.shutdown()
