"""Items as entities: ``{identifier, kind, source, data}``, the whole item in ``data``. A kind
lands here when it has no mapping, or its target has no typed tables (``landing``)."""

from __future__ import annotations

from typing import Any

from integrations.base import Integration
from integrations.errors import TargetRejected, describe
from tasks.targets import Entity, Target
from tasks.targets.base import bad_text
from tasks.write.rejections import rejection


def to_entities(
    integration: Integration, source: str, kind: str, seq: int, items: list[Any]
) -> tuple[list[Entity], dict[str, int], list[dict[str, Any]]]:
    """Entities (one per identifier, the last item wins), the index of each entity's item, and
    rejection records for items without a usable identifier."""
    entities: dict[str, Entity] = {}
    index_of: dict[str, int] = {}
    rejected: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        try:
            identifier = integration.identifier(kind, item)
            problem = None if identifier is None else bad_text(identifier)
        except Exception as exc:  # e.g. an id of 5,000 digits: str() refuses it
            identifier, problem = None, describe(exc)
        if identifier is None or problem:
            rejected.append(rejection(seq, index, item, (problem and f"identifier: {problem}")
                                      or "no identifier"))
            continue
        entities[identifier] = {"identifier": identifier, "kind": kind, "source": source,
                                "data": item}
        index_of[identifier] = index
    return list(entities.values()), index_of, rejected


def write_entities(target: Target, entities: list[Entity], index_of: dict[str, int], *,
                   run_id: str, run_seq: int, seq: int, items: list[Any]
                   ) -> tuple[int, list[dict[str, Any]]]:
    """Upsert the batch. When the target rejects it, the items it cannot store (``unstorable``:
    a NUL in PostgreSQL text, a lone surrogate) are rejected and the rest written again; a
    batch rejected for another reason raises. Returns (written, rejection records)."""
    try:
        target.upsert(entities, run_id=run_id, run_seq=run_seq)
        return len(entities), []
    except TargetRejected:
        problems = {e["identifier"]: p for e in entities if (p := target.unstorable(e))}
        if not problems:
            raise
    kept = [e for e in entities if e["identifier"] not in problems]
    target.upsert(kept, run_id=run_id, run_seq=run_seq)
    return len(kept), [rejection(seq, index_of[i], items[index_of[i]], f"unstorable: {p}")
                       for i, p in problems.items()]
