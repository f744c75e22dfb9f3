"""Where a (source, kind) lands, decided in one place: its typed table when it has a mapping
and the target has tables (``Typed``), else ``entities``. The batch task, webhook batches and
finalize's deletions each used to decide this for themselves; a kind that wrote to its table
and deleted from ``entities`` (or the other way round) would lose rows, so they now share one
``Landing`` and cannot disagree."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from integrations.base import Integration
from integrations.mapping import Mapping
from tasks.targets import Target
from tasks.targets.base import Deletion, Typed, Within
from tasks.write.entities import to_entities, write_entities
from tasks.write.mapped import write_mapped


class Written(NamedTuple):
    written: int
    rejected: list[dict[str, Any]]  # rejection records, by index in the items written
    skipped: int  # left out by the mapping's selector
    landed: dict[str, Any]  # identifier -> its item, of the items sent to the target


@dataclass(frozen=True)
class Landing:
    """A kind's place in the target. ``mapping`` is set only when the kind lands in its
    typed table (never on a target without tables, whatever the configuration says)."""

    integration: Integration
    target: Target
    source: str
    kind: str
    mapping: Mapping | None

    @property
    def table(self) -> str | None:
        """The typed table, or None: ``entities``."""
        return self.mapping.table(self.source) if self.mapping is not None else None

    def identifier(self, item: Any) -> str | None:
        """The item's identifier as the write will see it (the mapping's, else the
        integration's)."""
        if self.mapping is not None:
            return self.mapping.identifier(item)
        return self.integration.identifier(self.kind, item)

    def write(self, items: list[Any], *, seq: int, run_id: str, run_seq: int,
              text: str | None = None) -> Written:
        """Upsert the items, stamped with ``run_seq``; each item that cannot land is rejected
        with why and the rest is written. ``text``: the items as the JSON they came in (a
        mapping may read it faster than the decoded items)."""
        if self.mapping is not None and isinstance(self.target, Typed):
            written, rejected, skipped, rows = write_mapped(
                self.target, self.mapping, self.source, seq, items, run_id=run_id,
                run_seq=run_seq, text=text)
            return Written(written, rejected, skipped, {i: r["raw"] for i, r in rows.items()})
        entities, index_of, rejected = to_entities(self.integration, self.source, self.kind,
                                                   seq, items)
        written, unstorable = write_entities(self.target, entities, index_of, run_id=run_id,
                                             run_seq=run_seq, seq=seq, items=items)
        # (an entity refused as unstorable still fans out: its children are read as before)
        return Written(written, rejected + unstorable, 0,
                       {e["identifier"]: e["data"] for e in entities})

    def delete_stale(self, *, run_seq: int, threshold: float,
                     watermarks: dict[str, str] | None = None,
                     within: Within | None = None) -> Deletion:
        """The kind's stale rows (stamped before ``run_seq``) deleted within the guard."""
        if self.mapping is not None and isinstance(self.target, Typed):
            return self.target.delete_stale_rows(
                self.mapping.table(self.source), self.source, self.kind, run_seq=run_seq,
                threshold=threshold, watermarks=watermarks, within=within)
        return self.target.delete_stale(self.source, self.kind, run_seq=run_seq,
                                        threshold=threshold, watermarks=watermarks,
                                        within=within)

    def delete_moved(self, *, run_seq: int, threshold: float, written_only: bool = False
                     ) -> Deletion:
        """A kind that lands in its table: its rows left in ``entities`` from before the
        mapping, deleted once the table holds it (``Typed.delete_moved``). A kind whose
        mapping was removed keeps its table as it is: Sluice never empties nor drops a table
        it no longer writes (views and queries may read it; ``sluice entities`` lists it)."""
        if self.mapping is None or not isinstance(self.target, Typed):
            return Deletion()
        return self.target.delete_moved(self.mapping.table(self.source), self.source,
                                        self.kind, run_seq=run_seq, threshold=threshold,
                                        written_only=written_only)


def landing(integration: Integration, target: Target, source: str, kind: str) -> Landing:
    """The one decision: the typed table, or ``entities``."""
    mapping = integration.mapping(kind)
    return Landing(integration, target, source, kind,
                   mapping if mapping is not None and isinstance(target, Typed) else None)


def child_kinds(integration: Integration, kind: str) -> list[str]:
    """The kinds that hang off ``kind``, in a fixed order (it numbers their tasks): what it
    writes fans out to them, and a full run of it deletes their stale rows."""
    return sorted(k for k in integration.kinds() if integration.parent(k) == kind)
