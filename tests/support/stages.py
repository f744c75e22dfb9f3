"""A stage's logic without processes: a worker ``Runtime`` whose run records live in fakeredis,
and a Celery app whose messages stay in this process (kombu's memory transport), where a test
reads them."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import fakeredis
from celery import Celery

from tasks import messages
from tasks.config import parse_config
from tasks.settings import Settings
from tasks.worker.runtime import Runtime


def fake_runtime(tmp: Path, *, base_url: str = "http://127.0.0.1:9",
                 target: dict[str, Any] | None = None, kinds: dict[str, Any] | None = None,
                 source: dict[str, Any] | None = None, **settings: Any) -> Runtime:
    """A Runtime of one REST source ``api`` (``kinds``, default: a cursor-paged ``item``;
    ``source``: more keys of it) writing into ``target`` (default: SQLite in ``tmp``), with
    its run records in fakeredis; ``settings``: SLUICE_* settings by field name."""
    kinds = kinds or {"item": {"path": "/cursor/item", "items": "data", "paginator": {
        "type": "cursor", "cursor_path": "next_cursor", "limit": 10}}}
    config = parse_config({
        "target": target or {"type": "sqlite", "path": str(tmp / "db.sqlite")},
        "sources": {"api": {"integration": "rest", "base_url": base_url, "kinds": kinds,
                            **(source or {})}}}, tmp / "sluice.toml")
    return Runtime(Settings(redis_url="redis://127.0.0.1:9/0", **settings), config,
                   redis_client=fakeredis.FakeRedis())


class Outbox:
    """A Celery app that keeps what is sent to it in this process (a queue of its own)."""

    def __init__(self) -> None:
        self.queue = f"outbox-{uuid.uuid4().hex[:8]}"
        self.app = Celery("outbox", broker="memory://")
        self.app.conf.update(task_default_queue=self.queue, task_serializer="json",
                             accept_content=["json"])

    def take(self) -> list[tuple[str, list[Any], dict[str, Any]]]:
        """The messages sent since the last take: (task name, args, kwargs), oldest first."""
        out = []
        with self.app.connection_for_read() as conn:
            channel = conn.default_channel
            for queue in (self.queue, *messages.QUEUES):  # messages.py names each task's queue
                while (message := channel.basic_get(queue, no_ack=True)) is not None:
                    args, kwargs, _ = message.decode()
                    out.append((message.headers["task"], args, kwargs))
        return out
