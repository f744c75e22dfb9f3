"""Jira Cloud's REST API v3 (https://developer.atlassian.com/cloud/jira/platform/rest/v3/).

    project  GET /rest/api/3/project/search  startAt / maxResults, with total and isLast: the
                                             pages are known after the first, fetched at once
    issue    GET /rest/api/3/search/jql      a nextPageToken cursor until isLast, no total;
                                             the fields are asked for explicitly (else only ids
                                             come back) and the JQL must be bounded
    comment  GET /rest/api/3/issue/{key}/comment     a child of issue: the comments of each
                                                     issue a run writes, startAt / maxResults
                                                     with total, oldest first

A comment lands with ``_parent_key`` and ``_parent_id``, those of its issue.

The classic ``/rest/api/3/search`` answers 410 Gone; it is never used. Auth: basic, with the
account's email and an API token.

With ``incremental = true`` issues are read since the watermark (the newest ``fields.updated``)
minus the lookback: ``updated >= "yyyy-MM-dd HH:mm" AND (the jql without its ORDER BY) ORDER
BY updated DESC`` (``since_jql``). Newest first: an issue updated while a run pages moves to
the pages already read, and is newer than the watermark that run leaves, so the next run has
it; an ascending order would instead shift an unchanged issue past the page being read.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import httpx

from integrations.errors import MalformedPage
from integrations.fetched import State
from integrations.http.paginators import BasePaginator, OffsetPaginator
from integrations.incremental import Incremental
from integrations.jira.settings import JiraSettings, Kind
from integrations.jira.webhooks import JiraWebhooks
from integrations.parents import fill
from integrations.registry import register

PROJECTS = "/rest/api/3/project/search"
SEARCH = "/rest/api/3/search/jql"
COMMENTS = "/rest/api/3/issue/{parent.key}/comment"
COMMENT_PAGE = 100  # the most the comments endpoint is known to serve in a page

_ORDER_BY = re.compile(r"order\s+by\b", re.IGNORECASE)


def where(jql: str) -> str:
    """The JQL without its ORDER BY clause (the first one outside a quoted string)."""
    quote: str | None = None
    i = 0
    while i < len(jql):
        c = jql[i]
        if quote is not None:
            if c == "\\":
                i += 1  # an escaped character, a quote among them
            elif c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif (_ORDER_BY.match(jql, i) and (i == 0 or jql[i - 1].isspace()
                                           or jql[i - 1] == ")")):
            return jql[:i].strip()
        i += 1
    return jql.strip()


def jql_time(since: str) -> str:
    """An ISO-8601 time as a JQL date, ``yyyy-MM-dd HH:mm``: its wall-clock time in its own
    offset (Jira writes ``updated`` in the account's time zone, and reads JQL dates in it),
    rounded down to the minute."""
    return datetime.fromisoformat(since).strftime("%Y-%m-%d %H:%M")


def since_jql(jql: str, since: str) -> str:
    """``jql`` narrowed to the issues updated at or after ``since``, newest first."""
    clause = f'updated >= "{jql_time(since)}"'
    if rest := where(jql):
        clause += f" AND ({rest})"
    return clause + " ORDER BY updated DESC"


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
class JiraIntegration(JiraWebhooks):
    def __init__(self, settings: JiraSettings) -> None:
        super().__init__(settings)
        self._paginators: dict[str, BasePaginator] = {
            Kind.project: ProjectPages(path=PROJECTS, offset_param="startAt",
                                       limit_param="maxResults", limit=50, total_path="total"),
            Kind.issue: self._search(settings.jql),
        }

    def _search(self, jql: str) -> SearchPages:
        s = self.settings
        return SearchPages(path=SEARCH, params={
            "jql": jql, "maxResults": s.page_size, "fields": ",".join(s.fields)},
            limit_param=None, limit=s.page_size)

    def headers(self) -> dict[str, str]:
        return {"Accept": "application/json"}

    def auth(self) -> tuple[str, str]:
        return self.settings.email, self.settings.api_token

    def paginator(self, kind: str, key: Any, since: Any = None) -> BasePaginator:
        if kind == Kind.comment:  # the comments of one issue: key is its ref
            ref = key if isinstance(key, dict) else {}
            # Oldest first: a comment added while the pages are read comes last, and moves
            # none across the offsets.
            return OffsetPaginator(path=fill(COMMENTS, ref, quoted=True),
                                   params={"orderBy": "created"}, offset_param="startAt",
                                   limit_param="maxResults",
                                   limit=min(self.settings.page_size, COMMENT_PAGE),
                                   total_path="total")
        if kind == Kind.issue and since is not None:
            return self._search(since_jql(self.settings.jql, str(since)))
        return self._paginators[kind]

    def incremental(self, kind: str) -> Incremental | None:
        s = self.settings
        if not s.incremental or kind != Kind.issue:
            return None
        # ``param``: the value goes into the jql parameter (see ``paginator``).
        return Incremental(cursor_path="fields.updated", param="jql", lookback=s.lookback)

    def parent(self, kind: str) -> str | None:
        return Kind.issue.value if kind == Kind.comment else None

    def parent_ref(self, kind: str, parent_item: Any) -> dict[str, Any]:
        """What an issue gives its comments: its key (in the path) and its id."""
        if kind != Kind.issue or not isinstance(parent_item, dict):
            return {}
        return {"id": parent_item.get("id"), "key": parent_item.get("key")}

    def with_parent(self, kind: str, ref: dict[str, Any], item: Any) -> Any:
        if kind != Kind.comment or not isinstance(item, dict):
            return item
        return {**item, "_parent_key": ref.get("key"), "_parent_id": ref.get("id")}

    def items(self, kind: str, response: httpx.Response, body: Any) -> list[Any]:
        if kind == Kind.project:
            key, path = "values", PROJECTS
        elif kind == Kind.issue:
            key, path = "issues", SEARCH
        else:
            key, path = "comments", response.request.url.path
        items = body.get(key) if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise MalformedPage(f"GET {path}: no {key!r} list in the answer")
        return items

    def id_text(self, value: Any) -> str | None:
        return str(value) if isinstance(value, (str, int)) and value != "" else None
