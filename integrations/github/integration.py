"""GitHub's REST API (https://docs.github.com/en/rest).

    repository    GET /orgs/{org}/repos                     one sequence of pages
    issue         GET /repos/{owner}/{repo}/issues          one partition per repository
    pull_request  GET /repos/{owner}/{repo}/pulls           one partition per repository
    issue_comment GET /repos/{owner}/{repo}/issues/{number}/comments
                                                            a child of issue: the comments of
                                                            each issue a run writes

An issue comment lands with ``_parent_id`` (its issue's id), ``_parent_number`` and
``_parent_repository`` (``owner/repo``). The repository is read from the issue's
``repository_url`` (``…/repos/OWNER/REPO``) but only its name is kept: the request goes to
``base_url`` like every other, never to a URL the API gave, so the token stays on its origin.

With ``incremental = true`` a repository's issues are asked ``since`` its watermark (minus the
lookback; GitHub lists the issues updated at or after it), and its pull requests are listed
``sort=updated&direction=desc``, read until the first one older (the endpoint has no
``since``). The cursor is ``updated_at`` for both; repositories are always read whole.

Pages follow the Link header; its rel="last" lets the pager fetch the rest concurrently. The
issues endpoint also returns pull requests (items with a ``pull_request`` key): they are dropped
there, and land as pull requests from their own endpoint. Rate limits: ``x-ratelimit-remaining:
0`` with ``x-ratelimit-reset`` (epoch seconds) pauses every caller until the reset; the
secondary limit answers 403 or 429 with ``retry-after``, which is waited for and retried.

With ``graphql = true``, issues and issue comments come from GitHub's GraphQL API (POST
``/graphql``; ``/api/graphql`` beside a GitHub Enterprise ``…/api/v3``), queries and shapes in
``integrations.github.v4``: a page of issues brings each one's first comments, which its
``issue_comment`` children take without a request; only an issue with more comments pages
the nested connection (``repository.issue(number).comments(after:)``). GraphQL's budget is in
points: an answer whose ``rateLimit`` leaves less than its own ``cost`` pauses every caller
of the source until ``resetAt`` (as ``x-ratelimit-remaining: 0`` does), and a RATE_LIMITED
answer is waited for (its headers' reset, at most ``http.max_retry_after``) and asked again,
up to ``http.retries`` times; a longer wait fails the run with the reason.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from integrations.errors import MalformedPage, RateLimited
from integrations.fetched import Fetched, State
from integrations.github import v4
from integrations.github.names import repository_of
from integrations.github.settings import Kind
from integrations.github.webhooks import GithubWebhooks
from integrations.http.graphql import GraphqlPaginator, nodes
from integrations.http.oauth import TokenStore
from integrations.http.paginators import LinkPaginator, Paginator
from integrations.http.ratelimit import RateLimiter
from integrations.incremental import Incremental
from integrations.jsonpath import dig
from integrations.parents import fill
from integrations.registry import register
from integrations.secrets import Redactor

API_VERSION = "2022-11-28"
COMMENTS = "/repos/{parent.repository}/issues/{parent.number}/comments"


def graphql_path(base_url: str) -> str:
    """Where GraphQL is served: ``/graphql`` beside api.github.com's REST API, ``/api/graphql``
    on the origin of a GitHub Enterprise Server's ``…/api/v3``."""
    url = httpx.URL(base_url)
    if url.path.rstrip("/").endswith("/api/v3"):
        return str(url.copy_with(path=url.path.rstrip("/")[:-len("/v3")] + "/graphql",
                                 query=None))
    return "/graphql"


@register("github")
class GithubIntegration(GithubWebhooks):
    # The source's shared limit, which GraphQL's rateLimit in a body pauses (every client of
    # the source pauses both its buckets, so whichever client set it last will do).
    limiter: RateLimiter | None = None

    def client(self, *, limiter: RateLimiter | None = None, redactor: Redactor | None = None,
               tokens: TokenStore | None = None, secret_key: str | None = None
               ) -> httpx.AsyncClient:
        self.limiter = limiter or self.limiter
        return super().client(limiter=limiter, redactor=redactor, tokens=tokens,
                              secret_key=secret_key)

    def graphql(self, kind: str) -> bool:
        return self.settings.graphql and kind in (Kind.issue, Kind.issue_comment)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION}

    def paginator(self, kind: str, key: Any, since: Any = None) -> Paginator:
        s = self.settings
        if self.graphql(kind):
            return self._graphql_paginator(kind, key, since)
        if kind == Kind.issue_comment:  # the comments of one issue: key is its ref
            ref = key if isinstance(key, dict) else {}
            return LinkPaginator(path=fill(COMMENTS, ref), limit_param="per_page",
                                 limit=s.per_page)
        if kind == Kind.repository:
            return LinkPaginator(path=f"/orgs/{s.org}/repos", params={"type": "all"},
                                 limit_param="per_page", limit=s.per_page)
        params: dict[str, Any] = {"state": s.state}
        if kind == Kind.issue:
            endpoint = "issues"
            if since is not None:
                params["since"] = since
        else:
            endpoint = "pulls"
            if s.incremental:  # newest first, so a run can stop at its watermark
                params.update(sort="updated", direction="desc")
        return LinkPaginator(path=f"/repos/{key}/{endpoint}", params=params,
                             limit_param="per_page", limit=s.per_page)

    def _graphql_paginator(self, kind: str, key: Any, since: Any) -> GraphqlPaginator:
        s = self.settings
        if kind == Kind.issue_comment:  # past the comments the issue brought
            ref = key if isinstance(key, dict) else {}
            owner, _, name = fill("{parent.repository}", ref).partition("/")
            return GraphqlPaginator(
                path=graphql_path(s.base_url), query=v4.COMMENTS,
                connection_path=v4.COMMENTS_PATH,
                variables={"owner": owner, "name": name, "first": s.per_page,
                           "number": int(fill("{parent.number}", ref))})
        owner, _, name = str(key).partition("/")
        variables: dict[str, Any] = {"owner": owner, "name": name, "first": s.per_page}
        if s.state != "all":
            variables["states"] = [s.state.upper()]
        if since is not None:
            variables["since"] = since
        return GraphqlPaginator(
            path=graphql_path(s.base_url), variables=variables, connection_path=v4.ISSUES_PATH,
            query=v4.ISSUES if Kind.issue_comment in s.kinds else v4.ISSUES_ONLY)

    async def fetch(self, kind: str, client: httpx.AsyncClient, state: State | None, *,
                    key: Any = None, since: Any = None) -> Fetched:
        """GraphQL's comments of an issue start with those the issue brought (no request);
        a RATE_LIMITED answer is waited for and asked again (see the module's docstring)."""
        if not self.graphql(kind):
            return await super().fetch(kind, client, state, key=key, since=since)
        embedded = key.get(v4.COMMENTS_KEY) if isinstance(key, dict) else None
        if state is None and kind == Kind.issue_comment and isinstance(embedded, dict):
            after = embedded.get("next")
            return Fetched(items=list(embedded.get("nodes") or []),
                           next={"after": after} if after else None)
        http, attempt = self.settings.http, 0
        while True:
            try:
                return await super().fetch(kind, client, state, key=key,
                                           since=since)
            except RateLimited as exc:
                wait = exc.retry_after
                if attempt >= http.retries or wait is None or wait > http.max_retry_after:
                    raise
            attempt += 1
            if self.limiter is not None:  # every caller waits, this one in its next acquire
                self.limiter.pause(wait)
            else:
                await asyncio.sleep(wait)

    def items(self, kind: str, response: httpx.Response, body: Any) -> list[Any]:
        if not self.graphql(kind):
            return super().items(kind, response, body)
        where = f"POST {response.request.url.copy_with(query=None)}"
        wait = v4.budget(body)
        if wait and self.limiter is not None:
            self.limiter.pause(wait)
        if kind == Kind.issue_comment:
            return [v4.comment(n, where) for n in nodes(where, body, v4.COMMENTS_PATH)]
        repository = dig(body, "data.repository.nameWithOwner")
        if not isinstance(repository, str):
            raise MalformedPage(f"{where}: data.repository.nameWithOwner is not text")
        return [v4.issue(n, repository, base_url=self.settings.base_url, where=where)
                for n in nodes(where, body, v4.ISSUES_PATH)]

    def incremental(self, kind: str) -> Incremental | None:
        s = self.settings
        if not s.incremental or kind not in (Kind.issue, Kind.pull_request):
            return None  # repositories are read whole; comments follow their issues
        if kind == Kind.issue:
            return Incremental(cursor_path="updated_at", param="since", lookback=s.lookback)
        return Incremental(cursor_path="updated_at", stop_when_older=True, lookback=s.lookback)

    async def partition_keys(self, kind: str, client: httpx.AsyncClient) -> list[str] | None:
        """Issues and pull requests: one partition per repository of the organisation."""
        if kind not in (Kind.issue, Kind.pull_request):
            return None
        return [r["full_name"] for r in await self.every_item(Kind.repository, client)]

    def parent(self, kind: str) -> str | None:
        return Kind.issue.value if kind == Kind.issue_comment else None

    def parent_ref(self, kind: str, parent_item: Any) -> dict[str, Any]:
        """What an issue gives its comments: its id, its number and its repository (a value
        that cannot go into the path is None: the children task rejects that issue)."""
        if kind != Kind.issue or not isinstance(parent_item, dict):
            return {}
        number = parent_item.get("number")
        ref = {"id": parent_item.get("id"),
               "number": number if isinstance(number, int) and not isinstance(number, bool)
               else None,
               "repository": repository_of(parent_item)}
        if v4.COMMENTS_KEY in parent_item:  # GraphQL: the first comments came with the issue
            ref[v4.COMMENTS_KEY] = parent_item[v4.COMMENTS_KEY]
        return ref

    def with_parent(self, kind: str, ref: dict[str, Any], item: Any) -> Any:
        if kind != Kind.issue_comment or not isinstance(item, dict):
            return item
        return {**item, "_parent_id": ref.get("id"), "_parent_number": ref.get("number"),
                "_parent_repository": ref.get("repository")}

    def kept(self, kind: str, items: list[Any]) -> list[Any]:
        if kind == Kind.issue:  # the issues endpoint lists pull requests too
            return [i for i in items if "pull_request" not in i]
        return items

    def id_text(self, value: Any) -> str | None:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else None
