"""Settings of the declarative REST integration: one section ``[sources.NAME]`` of sluice.toml."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from integrations.base import SourceSettings, StrictModel

Scalar = str | int | float | bool


class CursorPagination(StrictModel):
    type: Literal["cursor"]
    cursor_path: str = Field(description="dot path to the next cursor in the body")
    cursor_param: str = "cursor"
    limit_param: str | None = "limit"
    limit: int = Field(100, ge=1)


class LinkPagination(StrictModel):
    type: Literal["link"]
    limit_param: str | None = "per_page"
    limit: int = Field(100, ge=1)


class OffsetPagination(StrictModel):
    type: Literal["offset"]
    offset_param: str = "offset"
    limit_param: str | None = "limit"
    limit: int = Field(100, ge=1)
    total_path: str | None = Field(None, description="dot path to the total in the body")
    total_header: str | None = Field(None, description="a header holding the total: X-Total-Count")


class PagePagination(StrictModel):
    type: Literal["page"]
    page_param: str = "page"
    first_page: int = 1
    limit_param: str | None = "per_page"
    limit: int = Field(100, ge=1)
    total_path: str | None = Field(None, description="dot path to the total in the body")
    total_header: str | None = Field(None, description="a header holding the total: X-Total-Count")


class SinglePagination(StrictModel):
    type: Literal["single"]


Pagination = Annotated[
    CursorPagination | LinkPagination | OffsetPagination | PagePagination | SinglePagination,
    Field(discriminator="type"),
]


class KindSettings(StrictModel):
    path: str = Field(description="path under base_url, or a full URL")
    items: str | None = Field(None, description="dot path to the list; None: the body is the list")
    id: str = Field("id", description="dot path to each item's identifier")
    params: dict[str, Scalar] = Field(default_factory=dict, description="query parameters sent")
    paginator: Pagination = SinglePagination(type="single")


class RestSettings(SourceSettings):
    integration: Literal["rest"]
    base_url: str
    headers: dict[str, str] = Field(default_factory=dict)
    kinds: dict[str, KindSettings] = Field(min_length=1)

    def kind_names(self) -> list[str]:
        return list(self.kinds)
