"""Settings of the declarative REST integration: one section ``[sources.NAME]`` of sluice.toml."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import Field

from integrations.base import ApiSettings, StrictModel
from integrations.http.paginators import PAGINATORS, BasePaginator
from integrations.incremental import Incremental

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


class RestSettings(ApiSettings):
    integration: Literal["rest"]
    headers: dict[str, str] = Field(default_factory=dict)
    kinds: dict[str, KindSettings] = Field(min_length=1)

    def kind_names(self) -> list[str]:
        return list(self.kinds)
