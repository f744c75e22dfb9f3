"""``sluice entities [SOURCE [KIND]]``: what a SQLite or PostgreSQL target holds.

Without arguments: a count per source and kind in ``entities``, then one per typed table
(``SOURCE/KIND: N in table T`` for a table a kind of the config maps to; ``table T: N`` for
another, such as the table of a mapping since removed, which Sluice leaves as it was). With
SOURCE: its rows, as JSON lines; a kind with a mapping is read from its table (each row as
its columns, with ``_raw``), the others from ``entities``. Without a config (``--db FILE``)
a kind is read from the table ``{SOURCE}_{KIND}`` when ``entities`` holds none of it.
"""

from __future__ import annotations

import json
from typing import Any

from integrations.registry import load
from tasks.config import SluiceConfig
from tasks.targets.base import Readable, Typed


def tables_of(config: SluiceConfig | None, target: Any) -> dict[tuple[str, str], str]:
    """(source, kind) -> its typed table, for every kind of the config with a mapping (none
    without a config, or on a target without tables). Raises MappingError for a mapping jq
    does not compile."""
    if config is None or not isinstance(target, Typed):
        return {}
    found = {}
    for source, settings in config.sources.items():
        integration = load(settings)
        for kind in settings.kind_names():
            mapping = integration.mapping(kind)
            if mapping is not None:
                found[(source, kind)] = mapping.table(source)
    return found


def counts(target: Readable, tables: dict[tuple[str, str], str]) -> list[str]:
    """The lines of ``sluice entities`` without arguments."""
    lines = [f"{source}/{kind}: {count}" for source, kind, count in target.counts()]
    if not isinstance(target, Typed):
        return lines
    owners: dict[str, list[str]] = {}
    for (source, kind), table in sorted(tables.items()):
        owners.setdefault(table, []).append(f"{source}/{kind}")
    for table, count in target.table_counts():
        if table in owners:
            lines.append(f"{', '.join(owners[table])}: {count} in table {table}")
        else:
            lines.append(f"table {table}: {count}")
    return lines


def rows(target: Readable, source: str, kind: str | None, tables: dict[tuple[str, str], str],
         *, limit: int, guess: bool) -> list[str]:
    """The JSON lines of ``sluice entities SOURCE [KIND]``: up to ``limit`` rows of the
    source (or KIND) in ``entities`` (a mapped kind has none there once its table holds it),
    then up to ``limit`` of each of its mapped kinds' tables, as ``{"source", "kind",
    "table", "row"}``. ``guess``: without a config, a kind ``entities`` holds none of is
    read from ``{SOURCE}_{KIND}``."""
    lines = [json.dumps(e) for e in target.read(source, kind, limit=limit)]
    if not isinstance(target, Typed):
        return lines
    mapped = {k: t for (s, k), t in sorted(tables.items()) if s == source and kind in (None, k)}
    if guess and kind is not None and not lines:
        table = f"{source}_{kind}".replace("-", "_")
        if any(name == table for name, _ in target.table_counts()):
            mapped[kind] = table
    for name, table in mapped.items():
        lines.extend(json.dumps({"source": source, "kind": name, "table": table, "row": row},
                                default=_text) for row in target.read_rows(table, limit=limit))
    return lines


def _text(value: Any) -> str:
    """A value JSON has no spelling of (a timestamp) as ISO text."""
    return value.isoformat() if hasattr(value, "isoformat") else str(value)
