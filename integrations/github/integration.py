"""GitHub's REST API (https://docs.github.com/en/rest).

    repository    GET /orgs/{org}/repos                     one sequence of pages
    issue         GET /repos/{owner}/{repo}/issues          one partition per repository
    pull_request  GET /repos/{owner}/{repo}/pulls           one partition per repository

With ``incremental = true`` a repository's issues are asked ``since`` its watermark (minus the
lookback; GitHub lists the issues updated at or after it), and its pull requests are listed
``sort=updated&direction=desc``, read until the first one older (the endpoint has no
``since``). The cursor is ``updated_at`` for both; repositories are always read whole.

Pages follow the Link header; its rel="last" lets the pager fetch the rest concurrently. The
issues endpoint also returns pull requests (items with a ``pull_request`` key): they are dropped
there, and land as pull requests from their own endpoint. Rate limits: ``x-ratelimit-remaining:
0`` with ``x-ratelimit-reset`` (epoch seconds) pauses every caller until the reset; the
secondary limit answers 403 or 429 with ``retry-after``, which is waited for and retried.
"""

from __future__ import annotations

from typing import Any

import httpx

from integrations.github.settings import GithubSettings, Kind
from integrations.http.paginators import LinkPaginator
from integrations.incremental import Incremental
from integrations.paged import PagedIntegration
from integrations.registry import register

API_VERSION = "2022-11-28"


@register("github")
class GithubIntegration(PagedIntegration[GithubSettings]):
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION}

    def paginator(self, kind: str, partition: Any, since: Any = None) -> LinkPaginator:
        s = self.settings
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
        return LinkPaginator(path=f"/repos/{partition}/{endpoint}", params=params,
                             limit_param="per_page", limit=s.per_page)

    def incremental(self, kind: str) -> Incremental | None:
        s = self.settings
        if not s.incremental or kind == Kind.repository:
            return None
        if kind == Kind.issue:
            return Incremental(cursor_path="updated_at", param="since", lookback=s.lookback)
        return Incremental(cursor_path="updated_at", stop_when_older=True, lookback=s.lookback)

    async def partitions(self, kind: str, client: httpx.AsyncClient) -> list[str] | None:
        """Issues and pull requests: one partition per repository of the organisation."""
        if kind == Kind.repository:
            return None
        return [r["full_name"] for r in await self.every_item(Kind.repository, client)]

    def kept(self, kind: str, items: list[Any]) -> list[Any]:
        if kind == Kind.issue:  # the issues endpoint lists pull requests too
            return [i for i in items if "pull_request" not in i]
        return items

    def id_text(self, value: Any) -> str | None:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else None
