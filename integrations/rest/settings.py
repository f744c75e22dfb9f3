"""Settings of the declarative REST integration: one section ``[sources.NAME]`` of sluice.toml."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import Field, model_validator

from integrations.base import ApiSettings, StrictModel
from integrations.http.paginators import PAGINATORS, BasePaginator
from integrations.incremental import Incremental
from integrations.mapping import MappingSettings
from integrations.parents import PARENT_FIELD

Scalar = str | int | float | bool


class Pagination(StrictModel):
    """A kind's ``paginator`` section: ``type`` names a class of ``PAGINATORS``, the other keys
    are its constructor's keywords."""

    type: str

    def build(self, path: str, params: Mapping[str, Scalar]) -> BasePaginator:
        """The paginator of ``path``, sending ``params`` with every request."""
        options = self.model_dump(exclude={"type"})
        return PAGINATORS[self.type](path=path, params=dict(params), **options)


class CursorPagination(Pagination):
    type: Literal["cursor"]
    cursor_path: str = Field(description="dot path to the next cursor in the body")
    cursor_param: str = "cursor"
    limit_param: str | None = "limit"
    limit: int = Field(100, ge=1)


class LinkPagination(Pagination):
    type: Literal["link"]
    limit_param: str | None = "per_page"
    limit: int = Field(100, ge=1)


class OffsetPagination(Pagination):
    type: Literal["offset"]
    offset_param: str = "offset"
    limit_param: str | None = "limit"
    limit: int = Field(100, ge=1)
    total_path: str | None = Field(None, description="dot path to the total in the body")
    total_header: str | None = Field(None, description="a header holding the total: X-Total-Count")


class PagePagination(Pagination):
    type: Literal["page"]
    page_param: str = "page"
    first_page: int = 1
    limit_param: str | None = "per_page"
    limit: int = Field(100, ge=1)
    total_path: str | None = Field(None, description="dot path to the total in the body")
    total_header: str | None = Field(None, description="a header holding the total: X-Total-Count")


class SinglePagination(Pagination):
    type: Literal["single"]


# One model per key of ``PAGINATORS``; pydantic picks it by ``type`` and names the types it
# knows when a section has another.
AnyPagination = Annotated[
    CursorPagination | LinkPagination | OffsetPagination | PagePagination | SinglePagination,
    Field(discriminator="type"),
]


class KindSettings(StrictModel):
    path: str = Field(description="path under base_url, or a full URL")
    items: str | None = Field(None, description="dot path to the list; None: the body is the list")
    id: str = Field("id", description="dot path to each item's identifier")
    params: dict[str, Scalar] = Field(default_factory=dict, description="query parameters sent")
    paginator: AnyPagination = SinglePagination(type="single")
    incremental: Incremental | None = Field(
        None, description="read only what changed since the last clean run")
    parent: str | None = Field(
        None, description="a kind of the same source: each of its items fans out to this one;"
        " {parent.<dot path>} in path and params are taken from it")
    include_from_parent: list[str] = Field(
        default_factory=list, description="parent fields put on each item as _parent_<name>")
    mapping: MappingSettings | None = Field(
        None, description="jq: the kind lands in a typed table of its own")

    def parent_fields(self) -> list[str]:
        """The parent's dot paths this kind reads: in its path, its params, and the fields
        it includes."""
        text = self.path + "".join(str(v) for v in self.params.values())
        return sorted({*PARENT_FIELD.findall(text), *self.include_from_parent})


class RestSettings(ApiSettings):
    integration: Literal["rest"]
    headers: dict[str, str] = Field(default_factory=dict)
    kinds: dict[str, KindSettings] = Field(min_length=1)

    @model_validator(mode="after")
    def _parents(self) -> RestSettings:
        for name, kind in self.kinds.items():
            text = kind.path + "".join(str(v) for v in kind.params.values())
            odd = [m for m in re.findall(r"\{parent[^}]*\}", text) if not PARENT_FIELD.match(m)]
            if odd:
                raise ValueError(f"kinds.{name}: {', '.join(odd)} names no parent field (write "
                                 "{parent.<dot path>}, e.g. {parent.id})")
            if kind.parent is None:
                if kind.parent_fields():
                    raise ValueError(f"kinds.{name}: {{parent.…}} and include_from_parent "
                                     "need a 'parent' kind")
                continue
            if kind.parent not in self.kinds or kind.parent == name:
                raise ValueError(f"kinds.{name}.parent: {kind.parent!r} is not another kind "
                                 f"of this source (kinds: {', '.join(self.kinds)})")
            if self.kinds[kind.parent].parent is not None:
                raise ValueError(f"kinds.{name}.parent: {kind.parent!r} is itself a child "
                                 "kind; children hang off a kind that is read on its own")
            if kind.incremental is not None:
                raise ValueError(f"kinds.{name}: a child kind follows its parent: only the "
                                 "parents that changed fan out; it has no 'incremental' of its "
                                 "own")
        return self

    def kind_names(self) -> list[str]:
        return list(self.kinds)
