"""The declarative REST integration: pages a JSON API as sluice.toml describes it."""

from __future__ import annotations

from typing import Any

import httpx

from integrations.errors import MalformedPage
from integrations.http.auth import (
    Credentials,
    OAuth2ClientCredentials,
    OAuth2RefreshToken,
    simple_credentials,
)
from integrations.http.graphql import nodes
from integrations.http.oauth import LocalTokenStore, OAuth2, TokenSource, TokenStore
from integrations.http.origin import origin
from integrations.http.paginators import Paginator
from integrations.incremental import Incremental
from integrations.jsonpath import dig
from integrations.mapping import MappingSettings
from integrations.parents import fill, fill_json
from integrations.registry import register
from integrations.rest.settings import GraphqlPagination, KindSettings, RestSettings
from integrations.rest.webhooks import RestWebhooks
from integrations.secrets import Redactor
from integrations.slices import Slices


def paginator_for(kind: KindSettings) -> Paginator:
    """Build the paginator a kind's settings describe."""
    return kind.paginator.build(kind.path, kind.params)


@register("rest")
class RestIntegration(RestWebhooks):
    """Kinds, paths, items, ids and paginators all come from the source's settings."""

    def __init__(self, settings: RestSettings) -> None:
        super().__init__(settings)
        self._paginators = {kind: paginator_for(spec) for kind, spec in settings.kinds.items()}

    def headers(self) -> dict[str, str]:
        return self.settings.headers

    def credentials(self, tokens: TokenStore | None, secret_key: str | None) -> Credentials:
        auth = self.settings.auth
        if auth is None:
            return Credentials()
        if isinstance(auth, (OAuth2ClientCredentials, OAuth2RefreshToken)):
            source = TokenSource(auth, tokens or LocalTokenStore(), secret_key=secret_key,
                                 http=self.settings.http)
            return Credentials(auth=OAuth2(source))
        return simple_credentials(auth)

    def home(self) -> set[str]:
        # Kind paths written as full URLs are origins the user chose: credentials go there.
        return {origin(k.path) for k in self.settings.kinds.values() if "://" in k.path}

    def secret_params(self, redactor: Redactor | None) -> dict[str, str]:
        return {name: str(value) for k in self.settings.kinds.values()
                for name, value in k.params.items()
                if redactor is not None and redactor.hides(str(value))}

    def paginator(self, kind: str, key: Any, since: Any = None) -> Paginator:
        spec = self.settings.kinds[kind]
        if spec.parent is not None:  # the pages of one parent's children
            ref = key if isinstance(key, dict) else {}
            pager = spec.paginator
            return pager.build(
                fill(spec.path, ref, quoted=True),
                {k: fill(v, ref) if isinstance(v, str) else v for k, v in spec.params.items()},
                extra=fill_json(pager.variables, ref) if isinstance(pager, GraphqlPagination)
                else None)
        if spec.slices is not None and isinstance(key, dict) and "window" in key:
            # One window: its bounds as query parameters, or (graphql) variables.
            return spec.paginator.build(spec.path, spec.params,
                                        extra=spec.slices.params(key["window"]))
        incremental = spec.incremental
        if since is None or incremental is None or incremental.param is None:
            return self._paginators[kind]
        # A query parameter, or (graphql) a variable of the query.
        return spec.paginator.build(spec.path, spec.params, extra={incremental.param: since})

    def incremental(self, kind: str) -> Incremental | None:
        return self.settings.kinds[kind].incremental

    def slices(self, kind: str) -> Slices | None:
        return self.settings.kinds[kind].slices

    def parent(self, kind: str) -> str | None:
        return self.settings.kinds[kind].parent

    def mapping_settings(self, kind: str) -> MappingSettings | None:
        return self.settings.kinds[kind].mapping

    def deleted(self, kind: str) -> str | None:
        return self.settings.kinds[kind].deleted

    def parent_ref(self, kind: str, parent_item: Any) -> dict[str, Any]:
        """The parent fields each child kind of ``kind`` reads, from one of its items."""
        paths = {p for spec in self.settings.kinds.values() if spec.parent == kind
                 for p in spec.parent_fields()}
        return {path: dig(parent_item, path) for path in sorted(paths)}

    def with_parent(self, kind: str, ref: dict[str, Any], item: Any) -> Any:
        fields = self.settings.kinds[kind].include_from_parent
        if not fields or not isinstance(item, dict):
            return item
        return {**item, **{"_parent_" + path.replace(".", "_"): ref.get(path)
                           for path in fields}}

    def items(self, kind: str, response: httpx.Response, body: Any) -> list[Any]:
        spec = self.settings.kinds[kind]
        request = f"{response.request.method} {response.request.url.copy_with(query=None)}"
        if spec.items is None and isinstance(spec.paginator, GraphqlPagination):
            return nodes(request, body, spec.paginator.connection_path)
        items = dig(body, spec.items)
        if not isinstance(items, list):
            where = f"items path {spec.items!r}" if spec.items else "the body"
            raise MalformedPage(f"{request}: {where} is not a list (got {type(items).__name__})")
        return items

    def id_path(self, kind: str) -> str:
        return self.settings.kinds[kind].id
