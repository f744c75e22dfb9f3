"""Where the watermarks of incremental kinds live, and how a clean run advances them.

A target with a state table (SQLite, PostgreSQL) keeps them beside the data, written in the
transaction that ends the run, so that losing Redis never turns the next run into a full read
or, worse, makes it skip what changed. The http target has no such table: its watermarks are
kept in Redis, and ``sluice status`` says so.
"""

from __future__ import annotations

import json
from typing import Any, cast

import redis

from integrations.incremental import newest
from tasks.runs import keys
from tasks.targets import Target
from tasks.targets.base import Stateful


class Watermarks:
    """The watermarks of one target (or of Redis, for a target without state)."""

    def __init__(self, target: Target, client: redis.Redis) -> None:
        self.target = target
        self.r = client

    @property
    def where(self) -> str:
        if isinstance(self.target, Stateful):
            return "kept in the target's state table"
        return "kept in Redis: the http target has no state table"

    def get(self, source: str, kind: str) -> dict[str, Any]:
        """Partition key (JSON text) -> watermark."""
        if isinstance(self.target, Stateful):
            raw = self.target.watermarks(source, kind)
        else:
            got = cast(dict[bytes, bytes], self.r.hgetall(keys.watermarks(source, kind)))
            raw = {k.decode(): v.decode() for k, v in got.items()}
        return {k: json.loads(v) for k, v in raw.items()}

    def advanced(self, source: str, kind: str, seen: dict[str, list[Any]]) -> dict[str, str]:
        """The watermarks a clean run leaves: per partition key, the newest of what is kept
        and what the run saw (JSON texts, for ``save`` or ``Target.delete_stale``)."""
        kept = self.get(source, kind)
        marks = {}
        for part, values in seen.items():
            value = newest([*values, *([kept[part]] if part in kept else [])])
            if value is not None:
                marks[part] = json.dumps(value)
        return marks

    def save(self, source: str, kind: str, marks: dict[str, str]) -> None:
        if not marks:
            return
        if isinstance(self.target, Stateful):
            self.target.save_watermarks(source, kind, marks)
        else:
            self.r.hset(keys.watermarks(source, kind), mapping=cast(Any, marks))
