"""A batch's tombstones (``deleted = ...``, ``integrations.tombstones``) split out before it is
written: their identifiers' rows are deleted after its upserts, never written. Within a batch
the later item of an identifier wins: a tombstone after an upsert deletes it, an upsert after a
tombstone is written. A target that does not delete (http) rejects a tombstone with why, as
it does a webhook's delete."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from integrations.tombstones import Tombstones
from tasks.targets import Target
from tasks.targets.base import Ordered
from tasks.write.rejections import rejection


@dataclass
class Split:
    """A batch without its tombstones: the ``items`` to write (``origin``: each one's index in
    the batch), the identifiers to ``delete``, and the tombstones ``rejected`` (no
    identifier; the target cannot delete)."""

    seq: int
    items: list[Any]
    origin: list[int]
    delete: list[str]
    tombstones: dict[str, tuple[int, Any]]  # identifier -> (index, its tombstone)
    rejected: list[dict[str, Any]]

    def apply(self, target: Target, source: str, kind: str, rejected: list[dict[str, Any]], *,
              table: str | None) -> int:
        """Delete the tombstones' rows (after the batch's upserts were written); put the
        ``rejected`` records of the written items back at their places in the batch, and add
        the tombstones'. Returns the rows deleted."""
        for record in rejected:
            record["index"] = self.origin[record["index"]]
        rejected += self.rejected
        if not self.delete:
            return 0
        if isinstance(target, Ordered):
            return target.delete(source, kind, self.delete, table=table)
        rejected += [rejection(self.seq, index, item, "deleted: this target does not delete")
                     for index, item in self.tombstones.values()]
        return 0


def without_tombstones(tombstones: Tombstones, identify: Callable[[Any], str | None], seq: int,
                       items: list[Any]) -> Split | None:
    """The batch split into what is written and what is deleted (None: no item of it is a
    tombstone). An identifier's later item wins: its earlier ones are dropped. A tombstone
    without an identifier is rejected."""
    marks = tombstones.marks(items)
    if not any(marks):
        return None
    ids: list[str | None] = []
    last: dict[str, int] = {}
    rejected = []
    for index, (item, mark) in enumerate(zip(items, marks, strict=True)):
        try:
            identifier = identify(item)
        except Exception:  # an id str() refuses: the write path rejects it with why
            identifier = None
        ids.append(identifier)
        if identifier is not None:
            last[identifier] = index
        elif mark:
            rejected.append(rejection(seq, index, item, "deleted: no identifier"))
    gone = {i: (index, items[index]) for i, index in last.items() if marks[index]}
    origin = [index for index, (mark, identifier) in enumerate(zip(marks, ids, strict=True))
              if not mark and identifier not in gone]
    return Split(seq, [items[i] for i in origin], origin, sorted(gone), gone, rejected)
