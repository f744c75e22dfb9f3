"""The GitHub and Jira integrations against their local fakes (documented shapes and errors)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from integrations import pager
from integrations.errors import PermanentHTTPError
from integrations.github.fake import FakeGithub
from integrations.github.integration import GithubIntegration
from integrations.github.settings import GithubSettings
from integrations.jira.fake import FakeJira
from integrations.jira.integration import JiraIntegration
from integrations.jira.settings import JiraSettings


@pytest.fixture
def github() -> Iterator[FakeGithub]:
    with FakeGithub(repos=3) as fake:
        fake.sizes[1] = (0, 0)  # an empty repository
        fake.sizes[2] = (230, 5)  # three pages of issues (pull requests mixed in)
        yield fake


@pytest.fixture
def jira() -> Iterator[FakeJira]:
    with FakeJira(projects=120, issues=430) as fake:
        yield fake


def gh(fake: FakeGithub, **kw: Any) -> GithubIntegration:
    return GithubIntegration(GithubSettings.model_validate(
        {"integration": "github", "org": fake.org, "token": fake.token, "base_url": fake.url,
         "http": {"retries": 2, "backoff": 0.01}, **kw}))


def jr(fake: FakeJira, **kw: Any) -> JiraIntegration:
    return JiraIntegration(JiraSettings.model_validate(
        {"integration": "jira", "base_url": fake.url, "email": fake.email,
         "api_token": fake.token, "http": {"retries": 1, "backoff": 0.01}, **kw}))


def sync_kind(integ: Any, kind: str, *, concurrency: int = 4) -> list[dict[str, Any]]:
    """Every item of a kind, over every partition, the way the producer pages them."""
    async def go() -> list[dict[str, Any]]:
        client = integ.client()
        keys = await integ.partitions(kind, client)
        items: list[dict[str, Any]] = []
        for p, key in enumerate(keys if keys is not None else [None]):
            async for page in pager.pages(integ, kind, client, checkpoint=None, partition=key,
                                          base=p * pager.PARTITION_SPAN, concurrency=concurrency):
                items += page.items
        await client.aclose()
        return items
    return asyncio.run(go())


def test_github_kinds_with_one_partition_per_repository(github: FakeGithub):
    integ = gh(github)
    for kind in ("repository", "issue", "pull_request"):
        items = sync_kind(integ, kind)
        ids = [integ.identifier(kind, i) for i in items]
        assert len(ids) == len(set(ids))
        assert set(ids) == github.expected(kind)
    issues = sync_kind(integ, "issue")
    assert not any("pull_request" in i for i in issues)  # PRs never land as issues
    assert len(issues) == 150 + 230


def test_github_pages_follow_link_and_go_concurrent_after_rel_last(github: FakeGithub):
    sync_kind(gh(github), "issue")
    paths = [p for _, _, p, _ in github.requests("/repos/acme/repo2/issues")]
    assert paths[0] == "/repos/acme/repo2/issues?state=all&per_page=100"
    # rel="last" said page=3: pages 2 and 3 were asked at once, on the URL the API gave.
    assert sorted(paths[1:]) == ["/repos/acme/repo2/issues?state=all&page=2&per_page=100",
                                 "/repos/acme/repo2/issues?state=all&page=3&per_page=100"]


def test_github_token_and_headers(github: FakeGithub):
    with pytest.raises(PermanentHTTPError, match="401"):
        sync_kind(gh(github, token="wrong"), "repository")


def test_github_secondary_limit_403_with_retry_after_is_waited_for(github: FakeGithub):
    github.fail("/orgs/acme/repos", 403, headers={"retry-after": "1"},
                body='{"message": "You have exceeded a secondary rate limit."}')
    items = sync_kind(gh(github), "repository")
    assert len(items) == 3
    log = github.requests("/orgs/acme/repos")
    assert [r[3] for r in log] == [403, 200], log
    assert log[1][0] - log[0][0] >= 0.95, log


def test_github_primary_limit_exhausted_waits_until_the_reset(github: FakeGithub):
    import time

    reset = int(time.time()) + 2
    github.fail("/orgs/acme/repos", 403, headers={
        "x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)},
        body='{"message": "API rate limit exceeded"}')
    sync_kind(gh(github), "repository")
    log = github.requests("/orgs/acme/repos")
    assert [r[3] for r in log] == [403, 200] and log[1][0] >= reset - 0.05


def test_jira_projects_are_offset_pages_fetched_concurrently(jira: FakeJira):
    integ = jr(jira)
    items = sync_kind(integ, "project")
    assert sorted(integ.identifier("project", p) for p in items) == [
        str(10000 + i) for i in range(120)]
    paths = [p for _, _, p, _ in jira.requests("/rest/api/3/project/search")]
    assert len(paths) == 3  # 50 + 50 + 20 (maxResults is capped at 50)


def test_jira_issues_follow_next_page_token_with_explicit_fields(jira: FakeJira):
    integ = jr(jira, page_size=100)
    items = sync_kind(integ, "issue")
    assert len(items) == 430 and len({i["id"] for i in items}) == 430
    assert items[0]["fields"]["summary"] == "Issue 0" and "description" not in items[0]["fields"]
    assert jira.jqls[0] == "updated >= -30d ORDER BY updated DESC"
    assert not jira.requests("/rest/api/3/search?")  # the removed endpoint is never called
    assert len(jira.requests("/rest/api/3/search/jql")) == 5


def test_jira_unbounded_jql_and_bad_credentials_are_permanent(jira: FakeJira):
    with pytest.raises(PermanentHTTPError, match=r"400.*Unbounded JQL"):
        sync_kind(jr(jira, jql="ORDER BY created"), "issue")
    with pytest.raises(PermanentHTTPError, match="401"):
        sync_kind(jr(jira, api_token="nope"), "project")


def test_jira_classic_search_is_gone(jira: FakeJira):
    import httpx

    answer = httpx.get(f"{jira.url}/rest/api/3/search", params={"jql": "project = P1"},
                       auth=(jira.email, jira.token))
    assert answer.status_code == 410
