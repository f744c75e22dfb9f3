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
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import httpx

from integrations.github import webhooks
from integrations.github.settings import GithubSettings, Kind
from integrations.http.paginators import LinkPaginator
from integrations.incremental import Incremental
from integrations.mapping import MappingSettings
from integrations.paged import PagedIntegration
from integrations.parents import fill
from integrations.registry import register
from integrations.webhooks import Event

API_VERSION = "2022-11-28"
COMMENTS = "/repos/{parent.repository}/issues/{parent.number}/comments"
# owner/repo as GitHub allows them; nothing else reaches a path (no '..', no '/', no '?').
_NAME = r"[A-Za-z0-9_.-]*[A-Za-z0-9_-][A-Za-z0-9_.-]*"
_REPOSITORY = re.compile(rf"/repos/({_NAME}/{_NAME})/?$")


def repository_of(issue: Any) -> str | None:
    """``owner/repo`` of an issue, from its ``repository_url`` (None when it has none)."""
    url = issue.get("repository_url") if isinstance(issue, dict) else None
    try:
        found = _REPOSITORY.search(httpx.URL(url).path) if isinstance(url, str) else None
    except (httpx.InvalidURL, ValueError):
        return None
    return found[1] if found else None


@register("github")
class GithubIntegration(PagedIntegration[GithubSettings]):
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION}

    def paginator(self, kind: str, partition: Any, since: Any = None) -> LinkPaginator:
        s = self.settings
        if kind == Kind.issue_comment:  # the comments of one issue: partition is its ref
            ref = partition if isinstance(partition, dict) else {}
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
        return LinkPaginator(path=f"/repos/{partition}/{endpoint}", params=params,
                             limit_param="per_page", limit=s.per_page)

    def incremental(self, kind: str) -> Incremental | None:
        s = self.settings
        if not s.incremental or kind not in (Kind.issue, Kind.pull_request):
            return None  # repositories are read whole; comments follow their issues
        if kind == Kind.issue:
            return Incremental(cursor_path="updated_at", param="since", lookback=s.lookback)
        return Incremental(cursor_path="updated_at", stop_when_older=True, lookback=s.lookback)

    async def partitions(self, kind: str, client: httpx.AsyncClient) -> list[str] | None:
        """Issues and pull requests: one partition per repository of the organisation."""
        if kind not in (Kind.issue, Kind.pull_request):
            return None
        return [r["full_name"] for r in await self.every_item(Kind.repository, client)]

    def parent(self, kind: str) -> str | None:
        return Kind.issue.value if kind == Kind.issue_comment else None

    def mapping_settings(self, kind: str) -> MappingSettings | None:
        """The kind's default mapping with the source's ``mappings`` merged over it."""
        return self.settings.mappings.of(kind)

    def mapping_key(self, kind: str) -> str:
        return f"mappings.{kind}"

    def parent_ref(self, kind: str, parent_item: Any) -> dict[str, Any]:
        """What an issue gives its comments: its id, its number and its repository (a value
        that cannot go into the path is None: the children task rejects that issue)."""
        if kind != Kind.issue or not isinstance(parent_item, dict):
            return {}
        number = parent_item.get("number")
        return {"id": parent_item.get("id"),
                "number": number if isinstance(number, int) and not isinstance(number, bool)
                else None,
                "repository": repository_of(parent_item)}

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

    # -- webhooks (integrations.github.webhooks)

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        webhooks.verify(self, headers, body)

    def delivery(self, headers: Mapping[str, str], payload: Any) -> str | None:
        return webhooks.delivery(headers)

    def events(self, headers: Mapping[str, str], payload: Any) -> list[Event]:
        return webhooks.events(self, headers, payload)

    def cursor_path(self, kind: str) -> str | None:
        return webhooks.CURSOR

    async def fetch_item(self, kind: str, client: httpx.AsyncClient, item: Any) -> Any | None:
        return await webhooks.fetch_item(self, kind, client, item)
