"""Settings of the declarative REST integration: one section ``[sources.NAME]`` of sluice.toml."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, JsonValue, model_validator

from integrations.http.auth import AuthSettings
from integrations.http.graphql import GraphqlPaginator, declares
from integrations.http.paginators import PAGINATORS, BasePaginator
from integrations.incremental import Incremental
from integrations.mapping import MappingSettings
from integrations.parents import ITEM_FIELD, PARENT_FIELD
from integrations.settings import ApiSettings, StrictModel
from integrations.slices import Slices
from integrations.tombstones import checked

Scalar = str | int | float | bool


class Pagination(StrictModel):
    """A kind's ``paginator`` section: ``type`` names a class of ``PAGINATORS``, the other keys
    are its constructor's keywords."""

    type: str

    def build(self, path: str, params: Mapping[str, Scalar], *,
              extra: Mapping[str, Any] | None = None) -> BasePaginator:
        """The paginator of ``path``, sending ``params`` with every request (next_url: with
        the first; the API's next URLs carry them on). ``extra``: what one run or one parent
        adds (an incremental kind's ``since``): more query parameters here, variables of a
        graphql paginator."""
        options = self.model_dump(exclude={"type"})
        return PAGINATORS[self.type](path=path, params={**params, **(extra or {})}, **options)


HAS_MORE = ("dot path to a boolean in the body (Stripe's has_more): false ends the paging, "
            "true where paging ends marks it truncated (the run deletes nothing)")


class CursorPagination(Pagination):
    type: Literal["cursor"]
    cursor_path: str = Field(description="dot path to the next cursor in the body")
    cursor_param: str = "cursor"
    limit_param: str | None = "limit"
    limit: int = Field(100, ge=1)
    has_more_path: str | None = Field(
        None, description=HAS_MORE + "; for APIs that send a cursor on their last page too")
    total_path: str | None = Field(None, description="dot path to the total in the body (a "
                                   "run that reads fewer items deletes nothing)")
    total_header: str | None = Field(None, description="a header holding the total")


class LinkPagination(Pagination):
    type: Literal["link"]
    limit_param: str | None = "per_page"
    limit: int = Field(100, ge=1)


class NextUrlPagination(Pagination):
    type: Literal["next_url"]
    # ``path`` in sluice.toml; ``next_path`` here, beside the kind's own ``path``.
    next_path: str | None = Field(
        None, alias="path", description="dot path to the next page's URL in the body "
        "(absolute or relative; a key may hold dots: '@odata.nextLink')")
    header: str | None = Field(
        None, min_length=1, description="a response header holding the next page's URL "
        "(Kinto's Next-Page); exactly one of path and header")
    limit_param: str | None = Field(
        None, description="the page size parameter, sent on the first request only (the next "
        "URLs carry it); None: the API's default size")
    limit: int = Field(100, ge=1)
    has_more_path: str | None = Field(None, description=HAS_MORE)

    @model_validator(mode="after")
    def _one_source(self) -> NextUrlPagination:
        if (self.next_path is None) == (self.header is None):
            raise ValueError("a next_url paginator takes exactly one of 'path' (a dot path to "
                             "the next URL in the body) and 'header' (a response header)")
        if "limit" in self.model_fields_set and not self.limit_param:
            raise ValueError("'limit' needs 'limit_param': the query parameter that sets the "
                             "page size (next_url sends none by default)")
        return self


class KeysetPagination(Pagination):
    type: Literal["keyset"]
    param: str = Field(min_length=1, description="the query parameter that takes the last "
                       "item's field (starting_after)")
    field: str = Field(min_length=1, description="dot path to that field in an item (id)")
    has_more_path: str | None = Field(
        None, description=HAS_MORE + "; without it, a page shorter than limit (or empty) ends "
        "the paging, so limit must not exceed the API's largest page size")
    limit_param: str | None = "limit"
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


class GraphqlPagination(Pagination):
    """A GraphQL connection (``integrations.http.graphql``): the query is POSTed to the kind's
    path; the kind's ``params`` stay query parameters of that URL."""

    type: Literal["graphql"]
    query: str = Field(min_length=1, description="the GraphQL query; it declares $after and "
                       "asks for the connection's pageInfo { hasNextPage endCursor }")
    variables: dict[str, JsonValue] = Field(
        default_factory=dict, description="the query's variables ({parent.<dot path>} in a "
        "child kind's: a value that is only that keeps the parent's JSON type)")
    connection_path: str = Field(min_length=1, description="dot path to the connection in "
                                 "the answer (data.repository.issues)")
    cursor_variable: str = Field("after", min_length=1,
                                 description="the variable that takes pageInfo.endCursor")
    total_path: str | None = Field(
        None, description="dot path to the connection's totalCount in the answer "
        "(data.repository.issues.totalCount): a run that reads fewer deletes nothing, and "
        "a time window holding more than slices.max_window_items is split")

    @model_validator(mode="after")
    def _declared(self) -> GraphqlPagination:
        if not declares(self.query, self.cursor_variable):
            raise ValueError(f"query: it does not declare ${self.cursor_variable}, which takes "
                             "the connection's pageInfo.endCursor (write e.g. "
                             f"query(${self.cursor_variable}: String) and "
                             f"issues(first: 100, after: ${self.cursor_variable}))")
        if self.cursor_variable in self.variables:
            raise ValueError(f"variables.{self.cursor_variable}: the paginator sets it (the "
                             "previous page's endCursor)")
        return self

    def build(self, path: str, params: Mapping[str, Scalar], *,
              extra: Mapping[str, Any] | None = None) -> BasePaginator:
        return GraphqlPaginator(path=path, params=dict(params), query=self.query,
                                variables={**self.variables, **(extra or {})},
                                connection_path=self.connection_path,
                                cursor_variable=self.cursor_variable,
                                total_path=self.total_path)


def strings(value: Any) -> Iterator[str]:
    """Every string in a JSON value (the templates a graphql kind's variables may hold)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


# One model per key of ``PAGINATORS``; pydantic picks it by ``type`` and names the types it
# knows when a section has another.
AnyPagination = Annotated[
    CursorPagination | GraphqlPagination | KeysetPagination | LinkPagination | NextUrlPagination
    | OffsetPagination | PagePagination | SinglePagination,
    Field(discriminator="type"),
]


class KindSettings(StrictModel):
    path: str = Field(description="path under base_url, or a full URL")
    items: str | None = Field(None, description="dot path to the list; None: the body is the "
                              "list (graphql: the connection's nodes, or its edges' node)")
    id: str = Field("id", description="dot path to each item's identifier")
    params: dict[str, Scalar] = Field(default_factory=dict, description="query parameters sent")
    paginator: AnyPagination = SinglePagination(type="single")
    incremental: Incremental | None = Field(
        None, description="read only what changed since the last clean run")
    slices: Slices | None = Field(
        None, description="read as time windows, many at once (integrations.slices)")
    parent: str | None = Field(
        None, description="a kind of the same source: each of its items fans out to this one;"
        " {parent.<dot path>} in path and params are taken from it")
    include_from_parent: list[str] = Field(
        default_factory=list, description="parent fields put on each item as _parent_<name>")
    mapping: MappingSettings | None = Field(
        None, description="jq: the kind lands in a typed table of its own")
    cursor_path: str | None = Field(
        None, description="dot path to what orders an item's versions (updated_at): an older "
        "webhook event does not overwrite a newer row (default: incremental.cursor_path)")
    deleted: Annotated[str, AfterValidator(checked)] | None = Field(
        None, description="jq on the raw item, true for the API's deletion tombstone "
        "('.deleted == true'): the identifier's row is deleted, the item never stored")

    @model_validator(mode="after")
    def _graphql_since(self) -> KindSettings:
        """A graphql kind's incremental ``param`` names a variable of its query."""
        pager, incremental = self.paginator, self.incremental
        if not isinstance(pager, GraphqlPagination) or incremental is None \
                or incremental.param is None:
            return self
        if not declares(pager.query, incremental.param):
            raise ValueError(f"incremental.param: with a graphql paginator it names a variable "
                             f"of the query, which does not declare ${incremental.param}")
        if incremental.param in (pager.cursor_variable, *pager.variables):
            raise ValueError(f"incremental.param: {incremental.param!r} is set by the "
                             "paginator or its variables already")
        return self

    @model_validator(mode="after")
    def _slices(self) -> KindSettings:
        """Windows go with what the kind's other keys send."""
        slices, incremental, pager = self.slices, self.incremental, self.paginator
        if slices is None:
            return self
        if self.parent is not None:
            raise ValueError("slices: a child kind is read per parent item; only a kind read "
                             "on its own is sliced")
        if isinstance(pager, GraphqlPagination):
            for name in ("param_from", "param_to"):
                if not declares(pager.query, getattr(slices, name)):
                    raise ValueError(f"slices.{name}: with a graphql paginator it names a "
                                     "variable of the query, which does not declare "
                                     f"${getattr(slices, name)}")
        if incremental is None:
            return self
        if incremental.stop_when_older or incremental.param != slices.param_from:
            raise ValueError(f"incremental: a sliced kind reads what changed through its "
                             f"windows: write param = {slices.param_from!r} (slices.param_from)"
                             ", not stop_when_older")
        if incremental.cursor_type not in (None, slices.cursor_type):
            raise ValueError(f"slices.cursor_type: {slices.cursor_type!r}, but "
                             f"incremental.cursor_type is {incremental.cursor_type!r}")
        return self

    def templated(self) -> str:
        """The text that may hold ``{parent.…}``: the path, the params and (graphql) the
        variables' strings."""
        text = self.path + "".join(str(v) for v in self.params.values())
        if isinstance(self.paginator, GraphqlPagination):
            text += "".join(strings(self.paginator.variables))
        return text

    def parent_fields(self) -> list[str]:
        """The parent's dot paths this kind reads: in its path, its params (and graphql
        variables), and the fields it includes."""
        return sorted({*PARENT_FIELD.findall(self.templated()), *self.include_from_parent})


class WebhookSettings(StrictModel):
    """A REST source's ``webhook`` section: how its API signs a delivery and where an event's
    kind, action and item are (``sluice serve``; the source needs ``webhook_secret`` too).

    The signature is ``signature_prefix`` + the HMAC (``algorithm``) of the raw body under
    the secret, written in ``encoding``, in header ``signature_header``. The event's kind is
    the value at ``kind_path`` in the body (or of header ``kind_header``), looked up in
    ``kinds`` (an event kind not there is ignored; without ``kinds``, the value itself must
    name a kind of the source); its item is at ``item_path``; its action at ``action_path``
    is a delete when it is one of ``delete_actions``, else an upsert. ``fetch``: kinds whose
    events carry too little: a worker GETs the path (``{item.<dot path>}`` filled from the
    event's item) under the source's rate limit."""

    signature_header: str = Field("X-Signature", min_length=1,
                                  description="the header carrying the signature")
    signature_prefix: str = Field("sha256=", description="text before the digest ('' for none)")
    algorithm: Literal["sha1", "sha256", "sha512"] = Field(
        "sha256", description="the HMAC's hash")
    encoding: Literal["hex", "base64"] = Field("hex", description="how the digest is written")
    delivery_header: str = Field(
        "X-Delivery-Id", description="the header with the delivery's id (redeliveries applied "
        "once); '': the API sends none, every delivery is applied")
    kind_path: str = Field("kind", min_length=1,
                           description="dot path to the event's kind in the body")
    kind_header: str | None = Field(
        None, description="a header naming the event's kind instead (as X-GitHub-Event)")
    action_path: str = Field("action", min_length=1,
                             description="dot path to the event's action in the body")
    item_path: str = Field("item", min_length=1,
                           description="dot path to the item in the body")
    delete_actions: list[str] = Field(
        default_factory=lambda: ["deleted"], description="actions that delete the item")
    kinds: dict[str, str] = Field(
        default_factory=dict, description="event kind value -> kind of this source (empty: "
        "the value is the kind)")
    fetch: dict[str, str] = Field(
        default_factory=dict, description="kind -> path of the full item, with "
        "{item.<dot path>}: its events are fetched before they are written")


class RestSettings(ApiSettings):
    integration: Literal["rest"]
    headers: dict[str, str] = Field(default_factory=dict)
    auth: AuthSettings | None = Field(
        None, description="bearer, basic, api_key, oauth2_client_credentials or "
        "oauth2_refresh_token (integrations.http.auth)")
    kinds: dict[str, KindSettings] = Field(min_length=1)
    webhook: WebhookSettings = Field(
        default_factory=WebhookSettings, description="how deliveries are signed and read "
        "(sluice serve, with webhook_secret)")

    @model_validator(mode="after")
    def _one_authorization(self) -> RestSettings:
        """A header that ``auth`` sets may not be in ``headers`` too."""
        if self.auth is None or (self.auth.type == "api_key" and self.auth.location == "query"):
            return self
        sent = self.auth.name if self.auth.type == "api_key" else "Authorization"
        both = [name for name in self.headers if name.lower() == sent.lower()]
        if both:
            raise ValueError(f"headers.{both[0]}: auth sets it too; keep one of them")
        return self

    @model_validator(mode="after")
    def _webhook(self) -> RestSettings:
        hook = self.webhook
        for event, kind in hook.kinds.items():
            if kind not in self.kinds:
                raise ValueError(f"webhook.kinds.{event}: {kind!r} is not a kind of this "
                                 f"source (kinds: {', '.join(self.kinds)})")
        for kind, path in hook.fetch.items():
            if kind not in self.kinds:
                raise ValueError(f"webhook.fetch.{kind}: not a kind of this source (kinds: "
                                 f"{', '.join(self.kinds)})")
            odd = [m for m in re.findall(r"\{[^}]*\}", path) if not ITEM_FIELD.match(m)]
            if odd:
                raise ValueError(f"webhook.fetch.{kind}: {', '.join(odd)} names no item field "
                                 "(write {item.<dot path>}, e.g. {item.id})")
        return self

    @model_validator(mode="after")
    def _parents(self) -> RestSettings:
        for name, kind in self.kinds.items():
            text = kind.templated()
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

    def keeps_secrets(self) -> bool:
        return self.auth is not None and self.auth.type == "oauth2_refresh_token"
