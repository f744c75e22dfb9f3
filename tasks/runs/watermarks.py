"""Where the watermarks of incremental kinds live, and how a clean run advances them.

A target with a state table (SQLite, PostgreSQL) keeps them beside the data, written in the
transaction that ends the run, so that losing Redis never turns the next run into a full read
or, worse, makes it skip what changed. The http target has no such table: its watermarks are
kept in Redis, and ``sluice status`` says so.

A watermark belongs to the mapping it was read with. Where a kind lands (its typed table, or
``entities``) and what its rows hold change with the mapping, and the items older than the
watermark would never be read again into the new place: a kind whose mapping was added,
changed or removed must read everything once. So the watermarks of a kind with a mapping (on
a target with typed tables) are saved with the mapping's digest, under the part ``MAPPING``,
and watermarks saved under another digest, or under none while there is a mapping now, or
under one while there is none, are absent; the run that saves new ones forgets them first.
"""

from __future__ import annotations

import json
from typing import Any, cast

import redis

from integrations.incremental import newest
from integrations.mapping import Mapping
from tasks.runs import keys
from tasks.targets import Target
from tasks.targets.base import Stateful, Typed

# The part that holds the digest of the mapping the watermarks were read with: not JSON, so
# no partition key (a JSON text) is spelt so.
MAPPING = "mapping"


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

    def digest(self, mapping: Mapping | None) -> str | None:
        """The digest the kind's watermarks are saved with: its mapping's, when this target
        lands the kind in a typed table; None when the kind lands in ``entities``."""
        return mapping.digest if mapping is not None and isinstance(self.target, Typed) else None

    def _raw(self, source: str, kind: str) -> dict[str, str]:
        if isinstance(self.target, Stateful):
            return self.target.watermarks(source, kind)
        got = cast(dict[bytes, bytes], self.r.hgetall(keys.watermarks(source, kind)))
        return {k.decode(): v.decode() for k, v in got.items()}

    def _belong(self, raw: dict[str, str], mapping: Mapping | None) -> bool:
        """Whether watermarks (as stored) were read with ``mapping``."""
        digest = self.digest(mapping)
        return raw.get(MAPPING) == (None if digest is None else json.dumps(digest))

    def get(self, source: str, kind: str, *, mapping: Mapping | None) -> dict[str, Any]:
        """Partition key (JSON text) -> watermark; none when they were read with another
        mapping than ``mapping`` (the kind's now; None: it has none)."""
        raw = self._raw(source, kind)
        if not self._belong(raw, mapping):
            return {}
        return {k: json.loads(v) for k, v in raw.items() if k != MAPPING}

    def advanced(self, source: str, kind: str, seen: dict[str, list[Any]], *,
                 mapping: Mapping | None) -> dict[str, str]:
        """The watermarks a clean run leaves: per partition key, the newest of what is kept
        and what the run saw (JSON texts, for ``stamped``)."""
        kept = self.get(source, kind, mapping=mapping)
        marks = {}
        for part, values in seen.items():
            value = newest([*values, *([kept[part]] if part in kept else [])])
            if value is not None:
                marks[part] = json.dumps(value)
        return marks

    def stamped(self, source: str, kind: str, marks: dict[str, str], *,
                mapping: Mapping | None) -> dict[str, str]:
        """``marks`` as a clean run read with ``mapping`` saves them (``save``, or
        ``Target.delete_stale``): with the mapping's digest. Watermarks kept from another
        mapping are forgotten first (a partition this run did not see must not keep one)."""
        if not self._belong(self._raw(source, kind), mapping):
            if isinstance(self.target, Stateful):
                self.target.clear_watermarks(source, kind)
            else:
                self.r.delete(keys.watermarks(source, kind))
        digest = self.digest(mapping)
        return marks if digest is None else {**marks, MAPPING: json.dumps(digest)}

    def save(self, source: str, kind: str, marks: dict[str, str]) -> None:
        """Save ``stamped`` marks (others of the kind are kept)."""
        if not marks:
            return
        if isinstance(self.target, Stateful):
            self.target.save_watermarks(source, kind, marks)
        else:
            self.r.hset(keys.watermarks(source, kind), mapping=cast(Any, marks))
