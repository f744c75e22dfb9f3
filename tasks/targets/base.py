"""The Target protocol: where entities land, idempotently.

An entity is ``{"identifier", "kind", "source", "data"}``; (source, kind, identifier) is its key.
``upsert`` writes one batch in one transaction (a redelivered batch writes the same rows again)
and stamps each row with the run that saw it, which is how ``delete_stale`` knows what a run
did not see. Errors are translated into the tree: TargetUnavailable (retry) or TargetRejected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, TypedDict, runtime_checkable


class Entity(TypedDict):
    identifier: str
    kind: str
    source: str
    data: Any


@dataclass(frozen=True)
class Deletion:
    """What ``delete_stale`` did: rows deleted, or why it refused (``refused`` is then set)."""

    deleted: int = 0
    refused: str | None = None


class Target(Protocol):
    supports_delete: bool
    # True: one instance serves every thread of a process (else one per thread, as SQLite
    # and psycopg connections must not be shared between threads).
    thread_safe: bool

    def upsert(self, entities: list[Entity], *, run_id: str) -> None:
        """Insert or update every entity in one transaction."""
        ...

    def delete_stale(self, source: str, kind: str, *, run_id: str, threshold: float) -> Deletion:
        """Delete entities of (source, kind) that ``run_id`` did not write, within the guard."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Readable(Protocol):
    """Targets that can show what they hold (``sluice entities``)."""

    def counts(self) -> list[tuple[str, str, int]]:
        """(source, kind, number of entities), sorted."""
        ...

    def read(self, source: str, kind: str | None, *, limit: int) -> list[Entity]:
        """Up to ``limit`` entities of a source (and kind), ordered by kind and identifier."""
        ...


def deletion_guard(stale: int, existing: int, threshold: float) -> str | None:
    """Why deleting ``stale`` of ``existing`` entities is refused, or None when it is allowed."""
    if existing and stale / existing > threshold:
        return (f"refused to delete {stale} of {existing} entities ({stale / existing:.0%}): "
                f"more than delete_threshold {threshold:.0%}")
    return None
