"""GitHub's REST API (https://docs.github.com/en/rest).

    repository    GET /orgs/{org}/repos                     one sequence of pages
    issue         GET /repos/{owner}/{repo}/issues          one partition per repository
    pull_request  GET /repos/{owner}/{repo}/pulls           one partition per repository

Pages follow the Link header; its rel="last" lets the pager fetch the rest concurrently. The
issues endpoint also returns pull requests (items with a ``pull_request`` key): they are dropped
there, and land as pull requests from their own endpoint. Rate limits: ``x-ratelimit-remaining:
0`` with ``x-ratelimit-reset`` (epoch seconds) pauses every caller until the reset; the
secondary limit answers 403 or 429 with ``retry-after``, which is waited for and retried.
"""

from __future__ import annotations

from typing import Any

import httpx

from integrations.base import Fetched, State
from integrations.github.settings import GithubSettings
from integrations.http.client import get_json, make_client
from integrations.http.paginators import LinkPaginator, fetched
from integrations.http.ratelimit import RateLimiter
from integrations.secrets import Redactor

API_VERSION = "2022-11-28"


class GithubIntegration:
    def __init__(self, settings: GithubSettings) -> None:
        self.settings = settings

    def kinds(self) -> list[str]:
        return self.settings.kind_names()

    def client(self, *, limiter: RateLimiter | None = None,
               redactor: Redactor | None = None) -> httpx.AsyncClient:
        return make_client(
            base_url=self.settings.base_url, settings=self.settings.http, limiter=limiter,
            allow_origins=self.settings.allow_origins,
            headers={"Authorization": f"Bearer {self.settings.token}",
                     "Accept": "application/vnd.github+json",
                     "X-GitHub-Api-Version": API_VERSION},
            max_connections=max(32, self.settings.max_concurrency))

    def _paginator(self, kind: str, repo: str | None) -> LinkPaginator:
        s = self.settings
        if kind == "repository":
            return LinkPaginator(path=f"/orgs/{s.org}/repos", params={"type": "all"},
                                 limit_param="per_page", limit=s.per_page)
        path = f"/repos/{repo}/{'issues' if kind == 'issue' else 'pulls'}"
        return LinkPaginator(path=path, params={"state": s.state}, limit_param="per_page",
                             limit=s.per_page)

    async def partitions(self, kind: str, client: httpx.AsyncClient) -> list[str] | None:
        """Issues and pull requests: one partition per repository of the organisation."""
        if kind == "repository":
            return None
        paginator, repos = self._paginator("repository", None), []
        state: State | None = paginator.first()
        while state is not None:
            url, params = paginator.request(state)
            response, body = await get_json(client, url, params=params)
            repos += [r["full_name"] for r in body]
            state = paginator.advance(state, response, body, body)
        return repos

    async def fetch(self, kind: str, client: httpx.AsyncClient, state: State | None, *,
                    partition: Any = None) -> Fetched:
        paginator = self._paginator(kind, partition)
        current = paginator.first() if state is None else state
        url, params = paginator.request(current)
        response, body = await get_json(client, url, params=params)
        kept = body
        if kind == "issue":  # the issues endpoint lists pull requests too
            kept = [i for i in body if "pull_request" not in i]
        return fetched(paginator, current, response, body, body, first=state is None, kept=kept)

    def planned(self, kind: str, plan: State, index: int) -> State:
        return self._paginator(kind, None).planned(plan, index)

    def identifier(self, kind: str, item: Any) -> str | None:
        value = item.get("id") if isinstance(item, dict) else None
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else None
