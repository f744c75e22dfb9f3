"""Jira Cloud's REST API v3 (https://developer.atlassian.com/cloud/jira/platform/rest/v3/).

    project  GET /rest/api/3/project/search  startAt / maxResults, with total and isLast: the
                                             pages are known after the first, fetched at once
    issue    GET /rest/api/3/search/jql      a nextPageToken cursor until isLast, no total;
                                             the fields are asked for explicitly (else only ids
                                             come back) and the JQL must be bounded

The classic ``/rest/api/3/search`` answers 410 Gone; it is never used. Auth: basic, with the
account's email and an API token.
"""

from __future__ import annotations

from typing import Any

import httpx

from integrations.base import State
from integrations.errors import MalformedPage
from integrations.http.paginators import BasePaginator, OffsetPaginator
from integrations.jira.settings import JiraSettings, Kind
from integrations.paged import PagedIntegration
from integrations.registry import register

PROJECTS = "/rest/api/3/project/search"
SEARCH = "/rest/api/3/search/jql"


class ProjectPages(OffsetPaginator):
    """Offset pages with a total, where ``isLast: true`` ends the paging and says nothing is
    missing, whatever the total says."""

    def advance(self, state: State, response: httpx.Response, body: Any, items: list[Any]
                ) -> State | None:
        nxt = super().advance(state, response, body, items)
        return None if body.get("isLast") else nxt

    def truncated(self, state: State, response: httpx.Response, body: Any, items: list[Any]
                  ) -> str | None:
        why = super().truncated(state, response, body, items)
        return None if body.get("isLast") else why


class SearchPages(BasePaginator):
    """A ``nextPageToken`` cursor until ``isLast`` (or no token); the JQL, page size and
    fields go with every request."""

    def first(self) -> State:
        return {"token": None}

    def request(self, state: State) -> tuple[str, dict[str, Any] | None]:
        params = dict(self.params)
        if state["token"] is not None:
            params["nextPageToken"] = state["token"]
        return self.path, params

    def advance(self, state: State, response: httpx.Response, body: Any, items: list[Any]
                ) -> State | None:
        token = body.get("nextPageToken")
        last = body.get("isLast", token is None) or not token
        return None if last else {"token": token}


@register("jira")
class JiraIntegration(PagedIntegration[JiraSettings]):
    def __init__(self, settings: JiraSettings) -> None:
        super().__init__(settings)
        s = settings
        self._paginators: dict[str, BasePaginator] = {
            Kind.project: ProjectPages(path=PROJECTS, offset_param="startAt",
                                       limit_param="maxResults", limit=50, total_path="total"),
            Kind.issue: SearchPages(path=SEARCH, params={
                "jql": s.jql, "maxResults": s.page_size, "fields": ",".join(s.fields)},
                limit_param=None, limit=s.page_size),
        }

    def headers(self) -> dict[str, str]:
        return {"Accept": "application/json"}

    def auth(self) -> tuple[str, str]:
        return self.settings.email, self.settings.api_token

    def paginator(self, kind: str, partition: Any, since: Any = None) -> BasePaginator:
        return self._paginators[kind]

    def items(self, kind: str, response: httpx.Response, body: Any) -> list[Any]:
        key, path = ("values", PROJECTS) if kind == Kind.project else ("issues", SEARCH)
        items = body.get(key) if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise MalformedPage(f"GET {path}: no {key!r} list in the answer")
        return items

    def id_text(self, value: Any) -> str | None:
        return str(value) if isinstance(value, (str, int)) and value != "" else None
