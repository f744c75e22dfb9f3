"""Items as typed rows: the kind's mapping makes each item a row of its table, the values
fitted to the columns' types (the table's, else the mapping's, else inferred). A kind lands
here when it has a mapping and its target has typed tables (``landing``); ``sluice preview``
maps and fits a page the same way (``fitted``) and writes nothing."""

from __future__ import annotations

from typing import Any, NamedTuple

from integrations.errors import TargetRejected
from integrations.mapping import AS_IS, ColumnType, Mapping, fit, infer
from tasks.targets.base import ColumnTypeChanged, Row, SchemaFrozen, Table, Typed
from tasks.write.rejections import rejection

Mapped = list[tuple[int, str, dict[str, Any], Any]]  # (index, identifier, values, raw item)


class Fitted(NamedTuple):
    columns: dict[str, ColumnType]
    misfits: list[tuple[int, str]]  # (index, why) of the items whose values do not fit
    rows: dict[str, Row]  # by identifier
    index_of: dict[str, int]  # each row's item in the batch


def write_mapped(target: Typed, mapping: Mapping, source: str, seq: int, items: list[Any], *,
                 run_id: str, run_seq: int, text: str | None = None
                 ) -> tuple[int, list[dict[str, Any]], int, dict[str, Row]]:
    """Map the batch and upsert it into the kind's typed table. An item whose expression
    fails, or whose value does not fit its column, is rejected with why; the rest lands.
    Returns (written, rejection records, skipped by the selector, the rows written by
    identifier: their ``raw`` items fan out)."""
    table = mapping.table(source)
    mapped = mapping.map(items, text=text)
    rejected = [rejection(seq, index, items[index], why) for index, _, why in mapped.rejected]
    wanted = mapping.settings.declared().keys()
    for attempt in range(2):
        # The columns this target saw last, when they are all the mapping's (nothing can
        # be missing then); else read now. A type changed meanwhile is read again below.
        known = target.known_columns(table) if not attempt else None
        existing = (known if known is not None and wanted <= known.keys() else
                    target.table_columns(table) or {})
        columns, misfits, rows, index_of = fitted(mapping, existing, mapped.rows)
        spec = Table(table, columns, mapping.settings.schema_mode)
        try:
            target.upsert_rows(spec, list(rows.values()), run_id=run_id, run_seq=run_seq)
            break
        except ColumnTypeChanged:
            # Another batch created an inferred column from other values meanwhile: its type
            # stands, and this batch's values are fitted to it again (misfits rejected alone).
            if attempt:
                raise
        except SchemaFrozen:
            raise
        except TargetRejected as exc:
            unstorable_again(target, spec, rows, index_of, rejected, seq, items, exc,
                             run_id=run_id, run_seq=run_seq)
            break
    rejected += [rejection(seq, index, items[index], why) for index, why in misfits]
    return len(rows), rejected, mapped.skipped, rows


def fitted(mapping: Mapping, existing: dict[str, ColumnType], mapped: Mapped) -> Fitted:
    """The columns (``existing``: the table's, ``{}`` before it exists) and the rows fitted
    to them: what a batch upserts, and what ``sluice preview`` prints."""
    columns = columns_for(mapping, existing, mapped)
    return Fitted(columns, *fitted_rows(mapping, columns, mapped))


def columns_for(mapping: Mapping, existing: dict[str, ColumnType], rows: Mapped
                ) -> dict[str, ColumnType]:
    """Each column's type: the table's, else the mapping's, else inferred from the values (a
    column without a value yet waits for one)."""
    columns: dict[str, ColumnType] = {}
    for name, declared in mapping.settings.declared().items():
        column_type = existing.get(name) or declared or infer([values.get(name)
                                                              for _, _, values, _ in rows])
        if column_type is not None:
            columns[name] = column_type
    return columns


def fitted_rows(mapping: Mapping, columns: dict[str, ColumnType], mapped: Mapped
                ) -> tuple[list[tuple[int, str]], dict[str, Row], dict[str, int]]:
    """The rows with their values made to fit their columns, and (index, why) of the items
    whose values do not."""
    misfits: list[tuple[int, str]] = []
    rows: dict[str, Row] = {}
    index_of: dict[str, int] = {}
    # A value of its column's type as it is fits without a call (most do); number is left to
    # fit(), which refuses NaN and the infinities.
    as_is = [(name, column_type, AS_IS.get(column_type) if column_type != "number" else None)
             for name, column_type in columns.items()]
    for index, identifier, values, raw in mapped:
        fitted = dict(values)  # (the mapped values stay as they were: a retry fits again)
        try:
            for name, column_type, same in as_is:
                value = fitted.get(name)
                if value is not None and type(value) is not same:
                    fitted[name] = fit(value, column_type)
        except ValueError as exc:
            misfits.append((index, f"{mapping.kind} {identifier}: {exc}"))
            continue
        rows[identifier] = {"identifier": identifier, "values": fitted, "raw": raw}
        index_of[identifier] = index
    return misfits, rows, index_of


def unstorable_again(target: Typed, spec: Table, rows: dict[str, Row], index_of: dict[str, int],
                     rejected: list[dict[str, Any]], seq: int, items: list[Any],
                     refused: TargetRejected, *, run_id: str, run_seq: int) -> None:
    """The target refused the batch: the rows it cannot store (``unstorable_row``) are
    rejected and the rest written again; refused for another reason, that is raised."""
    problems = {i: p for i, row in rows.items() if (p := target.unstorable_row(row))}
    if not problems:
        raise refused
    for identifier, problem in problems.items():
        rejected.append(rejection(seq, index_of[identifier], items[index_of[identifier]],
                                  f"unstorable: {problem}"))
        del rows[identifier]
    target.upsert_rows(spec, list(rows.values()), run_id=run_id, run_seq=run_seq)
