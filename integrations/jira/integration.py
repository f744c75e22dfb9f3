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

from integrations.base import Fetched, State
from integrations.errors import MalformedPage
from integrations.http.client import get_json, make_client
from integrations.http.paginators import OffsetPaginator, fetched
from integrations.http.ratelimit import RateLimiter
from integrations.jira.settings import JiraSettings
from integrations.secrets import Redactor

PROJECTS = "/rest/api/3/project/search"
SEARCH = "/rest/api/3/search/jql"


class JiraIntegration:
    def __init__(self, settings: JiraSettings) -> None:
        self.settings = settings
        self._projects = OffsetPaginator(path=PROJECTS, offset_param="startAt",
                                         limit_param="maxResults", limit=50,
                                         total_path="total")

    def kinds(self) -> list[str]:
        return self.settings.kind_names()

    def client(self, *, limiter: RateLimiter | None = None,
               redactor: Redactor | None = None) -> httpx.AsyncClient:
        s = self.settings
        return make_client(base_url=s.base_url, auth=(s.email, s.api_token), settings=s.http,
                           headers={"Accept": "application/json"}, limiter=limiter,
                           allow_origins=s.allow_origins,
                           max_connections=max(32, s.max_concurrency))

    async def partitions(self, kind: str, client: httpx.AsyncClient) -> None:
        return None

    async def fetch(self, kind: str, client: httpx.AsyncClient, state: State | None, *,
                    partition: Any = None) -> Fetched:
        if kind == "project":
            current = self._projects.first() if state is None else state
            url, params = self._projects.request(current)
            response, body = await get_json(client, url, params=params)
            items = body.get("values") if isinstance(body, dict) else None
            if not isinstance(items, list):
                raise MalformedPage(f"GET {PROJECTS}: no 'values' list in the answer")
            page = fetched(self._projects, current, response, body, items, first=state is None)
            if body.get("isLast"):
                return Fetched(items=items, next=None, total=page.total)
            return page
        s = self.settings
        params: dict[str, Any] = {"jql": s.jql, "maxResults": s.page_size,
                                  "fields": ",".join(s.fields)}
        if state is not None:
            params["nextPageToken"] = state["token"]
        _, body = await get_json(client, SEARCH, params=params)
        issues = body.get("issues") if isinstance(body, dict) else None
        if not isinstance(issues, list):
            raise MalformedPage(f"GET {SEARCH}: no 'issues' list in the answer")
        token = body.get("nextPageToken")
        last = body.get("isLast", token is None) or not token
        return Fetched(items=issues, next=None if last else {"token": token})

    def planned(self, kind: str, plan: State, index: int) -> State:
        return self._projects.planned(plan, index)

    def identifier(self, kind: str, item: Any) -> str | None:
        value = item.get("id") if isinstance(item, dict) else None
        return str(value) if isinstance(value, (str, int)) and value != "" else None
