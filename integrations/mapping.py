"""jq mappings: what a kind's items become as rows of a typed table.

    [sources.tracker.kinds.issue.mapping]
    identifier = ".id"                        # default: the kind's id path
    selector = '.state != "deleted"'          # false: the item is skipped (and counted)
    properties = { title = ".title", number = { jq = ".number", type = "integer" } }
    relations = { project = ".fields.project.key" }   # a column holding another kind's id
    items_to_parse = ".comments"              # one item becomes many (``.item`` is each)

Expressions are compiled once per process, and run as one jq program per item (every
expression's first output, or null). Nothing is silent: an expression that fails for an item
rejects that item with the kind, its identifier when known, the property and jq's message;
a value that does not fit its column's type rejects the item likewise; the rest of the batch
lands. A property without a type takes its column's, or one inferred from the values.

An integration may ship a default mapping per kind (GitHub, Jira: ``DefaultMappings``); a
source's ``mappings`` section overrides it key by key (``MappingOverride``):

    mappings = { issue = { properties = { title = ".title | ascii_downcase", labels = false } } }
    mappings = { issue_comment = false }      # this kind's items land whole in entities
    mappings = false                          # every kind's do
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

import jq
from pydantic import Field, field_validator, model_validator

from integrations.jqsubset import NotHere, compile_subset
from integrations.settings import StrictModel

ColumnType = Literal["text", "integer", "number", "boolean", "timestamp", "json"]
COLUMN_TYPES: tuple[ColumnType, ...] = ("text", "integer", "number", "boolean", "timestamp",
                                        "json")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED = frozenset({"identifier", "_raw", "_synced_at", "_run_id", "_run_seq", "_first_seq"})


def column_names(value: dict[str, Any]) -> dict[str, Any]:
    for name in value:
        if not _NAME.match(name) or name.lower() in RESERVED:
            raise ValueError(f"{name!r} cannot be a column name (letters, digits and '_', "
                             f"not one of {', '.join(sorted(RESERVED))})")
    return value


def table_name(value: str | None) -> str | None:
    if value is not None and not _NAME.match(value):
        raise ValueError(f"{value!r} is not a table name (letters, digits and '_')")
    if value is not None and (value.lower() == "entities" or value.lower().startswith("sluice_")):
        raise ValueError(f"{value!r} is one of Sluice's own tables (entities, sluice_*)")
    return value


class TypedProperty(StrictModel):
    jq: str = Field(description="the jq expression")
    type: ColumnType | None = Field(None, description="the column's type (else inferred)")


class MappingSettings(StrictModel):
    """A kind's ``mapping`` section."""

    identifier: str | None = Field(None, description="jq; default: the kind's id path")
    selector: str | None = Field(None, description="jq; items for which it is false are skipped")
    properties: dict[str, str | TypedProperty] = Field(default_factory=dict)
    relations: dict[str, str] = Field(
        default_factory=dict, description="jq; a column holding another kind's identifier")
    items_to_parse: str | None = Field(
        None, description="jq of a list: each element becomes an entity (as .item)")
    table: str | None = Field(None, description="the table (default: {source}_{kind})")
    schema_mode: Literal["evolve", "freeze"] = Field(
        "evolve", alias="schema", description="freeze: a new column is an error")

    @field_validator("properties", "relations")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        return column_names(value)

    @field_validator("table")
    @classmethod
    def _table(cls, value: str | None) -> str | None:
        return table_name(value)

    @model_validator(mode="after")
    def _whole(self) -> MappingSettings:
        both = sorted(set(self.properties) & set(self.relations))
        if both:
            raise ValueError(f"{', '.join(both)}: both a property and a relation (one column "
                             "each: rename one)")
        if self.items_to_parse is not None and self.identifier is None:
            raise ValueError("items_to_parse needs an identifier (the default, the item's id, "
                             "is the same for every element: they would overwrite each other)")
        return self

    def expressions(self) -> dict[str, str]:
        """Every expression by its key path in the section (for error messages)."""
        found = {f"properties.{k}": v if isinstance(v, str) else v.jq
                 for k, v in self.properties.items()}
        found.update({f"relations.{k}": v for k, v in self.relations.items()})
        for key in ("identifier", "selector", "items_to_parse"):
            if getattr(self, key) is not None:
                found[key] = getattr(self, key)
        return found

    def declared(self) -> dict[str, ColumnType | None]:
        """Every column the mapping writes, with its declared type (None: inferred)."""
        cols: dict[str, ColumnType | None] = {
            k: None if isinstance(v, str) else v.type for k, v in self.properties.items()}
        cols.update(dict.fromkeys(self.relations, "text"))
        return cols


class MappingOverride(StrictModel):
    """A source's section over one kind's default mapping (GitHub's and Jira's kinds have
    one): each key given replaces the default's, the others stay. ``properties`` and
    ``relations`` merge by name: a name given replaces that column's expression whole (its
    type too: write ``{ jq, type }`` to declare one), a new name adds a column, ``false``
    removes a default column. The section ``false`` turns the kind's mapping off: its items
    land whole in ``entities``; ``true`` keeps the default (``enabled`` is the same switch,
    spelt as a key)."""

    enabled: bool = True
    identifier: str | None = None
    selector: str | None = None
    properties: dict[str, str | TypedProperty | Literal[False]] = Field(default_factory=dict)
    relations: dict[str, str | Literal[False]] = Field(default_factory=dict)
    items_to_parse: str | None = None
    table: str | None = None
    schema_mode: Literal["evolve", "freeze"] | None = Field(None, alias="schema")

    @model_validator(mode="before")
    @classmethod
    def _switch(cls, value: Any) -> Any:
        return {"enabled": value} if isinstance(value, bool) else value

    @field_validator("properties", "relations")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name, given in value.items():
            text = given.jq if isinstance(given, TypedProperty) else given
            if isinstance(text, str) and not text.strip():
                raise ValueError(f"{name}: an empty expression (false removes a default column)")
        return column_names(value)

    @field_validator("table")
    @classmethod
    def _table(cls, value: str | None) -> str | None:
        return table_name(value)

    def over(self, default: MappingSettings) -> MappingSettings | None:
        """The default with this section's keys merged over it (None: turned off). Raises
        ValueError naming the key of a ``false`` that removes no default column."""
        if not self.enabled:
            return None
        merged: dict[str, Any] = {}
        for key in ("properties", "relations"):
            columns = dict(getattr(default, key))
            for name, given in getattr(self, key).items():
                if given is not False:
                    columns[name] = given
                elif columns.pop(name, None) is None:
                    raise ValueError(f"{key}.{name}: false removes a default column, and there "
                                     f"is none named {name!r} (defaults: "
                                     f"{', '.join(getattr(default, key)) or 'none'})")
            merged[key] = columns
        for key in ("identifier", "selector", "items_to_parse", "table", "schema_mode"):
            if getattr(self, key) is not None:
                merged[key] = getattr(self, key)
        return default.model_copy(update=merged)


def typed(jq: str, column_type: str) -> dict[str, str]:
    """A default mapping's column: its jq expression and declared type (``TypedProperty``)."""
    return {"jq": jq, "type": column_type}


def text(jq: str) -> dict[str, str]:
    return typed(jq, "text")


def timestamp(jq: str) -> dict[str, str]:
    return typed(jq, "timestamp")


class DefaultMappings(StrictModel):
    """An integration's ``mappings`` section: one field per kind, a ``MappingOverride`` of
    that kind's default in ``DEFAULTS``. ``mappings = false`` turns every kind's off,
    ``true`` (the default) keeps them all."""

    DEFAULTS: ClassVar[dict[str, MappingSettings]] = {}

    @model_validator(mode="before")
    @classmethod
    def _switch(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return {} if value else dict.fromkeys(cls.DEFAULTS, False)
        return value

    @model_validator(mode="after")
    def _removals(self) -> DefaultMappings:
        for kind in self.DEFAULTS:
            try:
                self.of(kind)
            except ValueError as exc:
                raise ValueError(f"{kind}.{exc}") from None
        return self

    def of(self, kind: str) -> MappingSettings | None:
        """The kind's mapping: its default with the source's keys merged over it (None: off)."""
        override: MappingOverride = getattr(self, kind)
        return override.over(self.DEFAULTS[kind])


class MappingError(ValueError):
    """An expression jq does not compile: names its key (``properties.title``) and jq's
    message. ``str()`` is ``mapping.KEY: DETAIL``; ``key`` and ``detail`` let a caller name
    where the mapping is written (``PagedIntegration.mapping_key``)."""

    def __init__(self, key: str, detail: str) -> None:
        super().__init__(f"mapping.{key}: {detail}")
        self.key, self.detail = key, detail


def compile_jq(key: str, expression: str) -> Any:
    try:
        return jq.compile(expression)
    except ValueError as exc:
        message = " ".join(str(exc).split())
        raise MappingError(key, f"{expression!r} is not valid jq: {message}") from None


def id_expression(id_path: str) -> str:
    """The jq of a kind's dot-path id: ``fields.key`` -> ``.fields.key``."""
    return "." + ".".join(json.dumps(p) if not _NAME.match(p) else p for p in id_path.split("."))


@dataclass
class Mapped:
    """What a batch of items became: rows (the item's index, identifier, values, raw),
    rejected items (index, identifier or None, why) and how many the selector skipped."""

    rows: list[tuple[int, str, dict[str, Any], Any]] = field(default_factory=list)
    rejected: list[tuple[int, str | None, str]] = field(default_factory=list)
    skipped: int = 0


class Mapping:
    """A kind's mapping, compiled. An expression of the usual shapes (``.fields.summary``,
    ``.state == "open"``, ``.a // "none"``, ``"\\(.key)-\\(.n)"``) runs in Python as jq would
    run it (``integrations.jqsubset``); the other expressions run as one jq program over the
    whole batch. When
    that fails (an expression fails for some item), each item is mapped on its own, and the
    one that fails is rejected with jq's own message."""

    def __init__(self, settings: MappingSettings, *, kind: str, id_path: str) -> None:
        self.settings, self.kind = settings, kind
        # What a watermark read with this mapping belongs to (tasks/runs/watermarks.py): the
        # same settings give the same digest in every process and release.
        spelt = {"settings": settings.model_dump(mode="json", by_alias=True), "id_path": id_path}
        self.digest = hashlib.sha256(json.dumps(spelt, sort_keys=True).encode()).hexdigest()
        given = settings.expressions()
        # The identifier first (an error in another expression can then name the item), the
        # selector second (an item it leaves out is skipped, whatever the others make of it).
        exprs = {"identifier": given.pop("identifier", id_expression(id_path))}
        if "selector" in given:
            exprs["selector"] = given.pop("selector")
        exprs.update(given)
        for key, text in exprs.items():  # each checked on its own: the error names its key
            compile_jq(key, text)
        self.keys = [k for k in exprs if k != "items_to_parse"]
        # (key, column): properties.title -> title, relations.project -> project
        self.columns = [(k, k.split(".", 1)[1]) for k in self.keys if "." in k]
        self.each = {k: jq.compile(exprs[k]) for k in self.keys}
        # The usual shapes (paths, comparisons, //, interpolation) run in Python, exactly as
        # jq would run them (integrations/jqsubset.py); the rest in one jq call per batch.
        self.python = {k: fn for k in self.keys if (fn := compile_subset(exprs[k])) is not None}
        self.rest = [k for k in self.keys if k not in self.python]
        one = "[" + ", ".join(f"([{exprs[k]}] | .[0])" for k in self.rest) + "]"
        self.program = jq.compile(one)  # the other expressions of one item
        self.batch = jq.compile(f"[.[] | {one}]")  # ... of every item of a batch
        self.parse = (jq.compile(settings.items_to_parse)
                      if settings.items_to_parse is not None else None)
        # Every expression in Python and no items_to_parse (most mappings): one pass per item
        # (_fast), the general path only for an item it cannot take.
        self._fast_path = (not self.rest and self.parse is None) and (
            self.python["identifier"], self.python.get("selector"),
            [(name, self.python[key]) for key, name in self.columns])

    def identifier(self, item: Any) -> str | None:
        """The item's identifier by the mapping's ``identifier`` alone (no selector: a deleted
        item is deleted whatever the selector makes of it); None when it has none, or jq
        fails."""
        try:
            fn = self.python.get("identifier")
            try:
                if fn is None:
                    raise NotHere
                value = fn(item)
            except NotHere:
                got = self.each["identifier"].input_value(item).all()
                value = got[0] if got else None
        except ValueError:
            return None
        return _id_text(value)

    def table(self, source: str) -> str:
        """The kind's table: the mapping's ``table``, else ``{source}_{kind}``."""
        return self.settings.table or f"{source}_{self.kind}".replace("-", "_")

    def map(self, items: list[Any], *, text: str | None = None) -> Mapped:
        """Map a batch; ``text``: the same items as the JSON text they came in (saves jq
        encoding them again)."""
        out = Mapped()
        if self._fast_path:
            return self._fast(items, out)
        inputs: list[tuple[int, Any, Any]] = []  # (item index, jq's input, the raw item)
        for index, item in enumerate(items):
            try:
                inputs += [(index, one, item if self.parse is None else one["item"])
                           for one in self._inputs(item)]
            except ValueError as exc:
                out.rejected.append((index, None, f"{self.kind}: items_to_parse: {_msg(exc)}"))
        rest = self._batch([one for _, one, _ in inputs],
                           text if self.parse is None and not out.rejected else None)
        for k, (index, one, raw) in enumerate(inputs):
            self._one(index, one, raw, out, None if rest is None else rest[k])
        return out

    def _fast(self, items: list[Any], out: Mapped) -> Mapped:
        """``map`` when every expression runs in Python: the identifier, the selector, then
        the columns, in one pass; an item one of them steps aside for (NotHere), or without an
        identifier, goes the general way (jq, and its message)."""
        assert self._fast_path
        identify, select, columns = self._fast_path
        rows = out.rows
        for index, item in enumerate(items):
            try:
                identifier = _id_text(identify(item))
                if identifier is not None:
                    if select is not None and not _truthy(select(item)):
                        out.skipped += 1
                        continue
                    rows.append((index, identifier, {name: fn(item) for name, fn in columns},
                                 item))
                    continue
            except NotHere:
                pass
            self._one(index, item, item, out, None)
        return out

    def _batch(self, inputs: list[Any], text: str | None) -> list[list[Any]] | None:
        """The other expressions of every input, in one jq call (None: some input fails)."""
        if not self.rest or not inputs:
            return [[] for _ in inputs]
        try:
            program = self.batch.input_text(text) if text else self.batch.input_value(inputs)
            got: list[list[Any]] = program.first()
        except ValueError:
            return None
        return got

    def _inputs(self, item: Any) -> list[Any]:
        if self.parse is None:
            return [item]
        got = self.parse.input_value(item).all()
        elements = got[0] if len(got) == 1 and isinstance(got[0], list) else got
        base = item if isinstance(item, dict) else {}
        return [{**base, "item": element} for element in elements if element is not None]

    def _one(self, index: int, item: Any, raw: Any, out: Mapped,
             rest: list[Any] | None) -> None:
        try:
            if rest is None:
                rest = self.program.input_value(item).first()
            values: dict[str, Any] | None = {}
            assert values is not None
            for key, fn in self.python.items():
                try:
                    values[key] = fn(item)
                except NotHere:  # a case the subset leaves to jq (a jq error among them)
                    got = self.each[key].input_value(item).all()
                    values[key] = got[0] if got else None
            values.update(zip(self.rest, rest, strict=True))
        except ValueError:
            values = self._find_error(index, item, out)
        if values is None:
            return
        identifier = _id_text(values.pop("identifier"))
        if identifier is None:
            out.rejected.append((index, None, f"{self.kind}: identifier: no identifier"))
            return
        if "selector" in values and not _truthy(values.pop("selector")):
            out.skipped += 1
            return
        out.rows.append((index, identifier, {name: values[k] for k, name in self.columns}, raw))

    def _find_error(self, index: int, item: Any, out: Mapped) -> dict[str, Any] | None:
        """The whole program failed for this item: which expression, and why."""
        values: dict[str, Any] = {}
        for key in self.keys:
            try:
                got = self.each[key].input_value(item).all()
            except ValueError as exc:
                ident = values.get("identifier")
                who = f" {_id_text(ident)}" if key != "identifier" and ident is not None else ""
                out.rejected.append((index, _id_text(ident) if ident is not None else None,
                                     f"{self.kind}{who}: {key}: {_msg(exc)}"))
                return None
            values[key] = got[0] if got else None
            if key == "selector" and not _truthy(values[key]):
                out.skipped += 1  # left out: what the other expressions make of it is moot
                return None
        return values


def _msg(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _truthy(value: Any) -> bool:
    return value is not None and value is not False


def _id_text(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list, bool)) or value == "":
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


# -- types: inferred from values, and values made to fit their column

def infer(values: list[Any]) -> ColumnType | None:
    """The type of a column from the values it gets (None: no value yet)."""
    seen = {_kind_of(v) for v in values if v is not None}
    if not seen:
        return None
    if len(seen) == 1:
        return seen.pop()
    if seen <= {"integer", "number"}:
        return "number"
    return "json" if "json" in seen else "text"


def _kind_of(value: Any) -> ColumnType:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "timestamp" if _timestamp(value) is not None else "text"
    return "json"


def _timestamp(text: str) -> datetime | None:
    if len(text) < 16 or text[4:5] != "-" or text[10:11] not in ("T", " "):
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


# The values that fit their column as they are, by the exact type (bool is not an int here).
AS_IS: dict[ColumnType, type] = {"text": str, "integer": int, "number": float,
                                  "boolean": bool}


def fit(value: Any, column_type: ColumnType) -> Any:
    """``value`` as its column's Python type; ValueError says why it does not fit."""
    if value is None:
        return None
    # the usual case, checked first
    if type(value) is AS_IS.get(column_type) and column_type != "number":
        return value
    if column_type == "json":
        return value
    if column_type == "boolean" and isinstance(value, bool):
        return value
    if column_type == "integer" and not isinstance(value, bool):
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if column_type == "number" and number and math.isfinite(value):
        return float(value)
    if column_type == "text" and isinstance(value, (str, int, float, bool)):
        return value if isinstance(value, str) else json.dumps(value)
    if column_type == "timestamp" and isinstance(value, str):
        when = _timestamp(value)
        if when is not None:
            return when
    return _misfit(value, column_type)


def _misfit(value: Any, column_type: ColumnType) -> Any:
    shown = json.dumps(value, default=str)
    raise ValueError(f"{shown[:60]} does not fit {column_type}")
