"""The GitHub and Jira integrations against their local fakes (documented shapes and errors)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from integrations import pager
from integrations.errors import MalformedPage, PermanentHTTPError
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
        keys = await integ.partition_keys(kind, client)
        items: list[dict[str, Any]] = []
        for p, key in enumerate(keys if keys is not None else [None]):
            async for page in pager.pages(integ, kind, client, checkpoint=None, key=key,
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


# -- incremental

def first_request(integ: Any, kind: str, partition: Any = None, since: Any = None
                  ) -> tuple[str, dict[str, Any]]:
    paginator = integ.paginator(kind, partition, since)
    path, params = paginator.request(paginator.first())
    return path, dict(params or {})


def read(integ: Any, kind: str, partition: Any = None, since: Any = None
         ) -> list[dict[str, Any]]:
    """Every item of one partition, page after page, as the producer asks with ``since``."""
    async def go() -> list[dict[str, Any]]:
        client = integ.client()
        items: list[dict[str, Any]] = []
        state = None
        while True:
            page = await integ.fetch(kind, client, state, key=partition, since=since)
            items += page.items
            if (state := page.next) is None:
                await client.aclose()
                return items
    return asyncio.run(go())


def test_github_is_not_incremental_unless_turned_on(github: FakeGithub):
    integ = gh(github)
    assert [integ.incremental(k) for k in ("repository", "issue", "pull_request")] == [None] * 3
    # The requests are those of before: no since, no sort.
    assert first_request(integ, "issue", "acme/repo0") == (
        "/repos/acme/repo0/issues", {"state": "all", "per_page": 100})
    assert first_request(integ, "pull_request", "acme/repo0") == (
        "/repos/acme/repo0/pulls", {"state": "all", "per_page": 100})


def test_github_incremental_kinds_and_their_requests(github: FakeGithub):
    integ = gh(github, incremental=True)
    assert integ.incremental("repository") is None
    issues, pulls = integ.incremental("issue"), integ.incremental("pull_request")
    assert issues is not None and pulls is not None
    assert (issues.cursor_path, issues.param, issues.stop_when_older, issues.lookback) == (
        "updated_at", "since", False, "2m")
    assert (pulls.cursor_path, pulls.param, pulls.stop_when_older) == ("updated_at", None, True)
    assert issues.since("2024-01-01T10:00:00Z") == "2024-01-01T09:58:00Z"  # GitHub's spelling
    assert gh(github, incremental=True, lookback="1h").incremental("issue").since(
        "2024-01-01T10:00:00Z") == "2024-01-01T09:00:00Z"
    # No watermark yet: everything, as before; then GitHub's `since`.
    assert first_request(integ, "issue", "acme/repo0")[1] == {"state": "all", "per_page": 100}
    assert first_request(integ, "issue", "acme/repo0", "2024-01-01T09:58:00Z")[1] == {
        "state": "all", "since": "2024-01-01T09:58:00Z", "per_page": 100}
    # Pull requests: newest first, always; the pulls endpoint has no `since`.
    for since in (None, "2024-01-01T09:58:00Z"):
        assert first_request(integ, "pull_request", "acme/repo0", since)[1] == {
            "state": "all", "sort": "updated", "direction": "desc", "per_page": 100}
    with pytest.raises(ValueError, match="duration"):
        gh(github, incremental=True, lookback="2 minutes")


def test_github_issues_since_and_pulls_stop_at_the_first_older_one(github: FakeGithub):
    from integrations.fakeapi import at
    from integrations.incremental import older

    integ = gh(github, incremental=True, per_page=10)
    # repo2: issues 1..230 at at(n * 60), pull requests 231..235.
    github.change_issues(2, [4, 9], when=100_000)
    github.change_issues(2, [232], when=100_500)
    since = at(220 * 60)
    issues = read(integ, "issue", "acme/repo2", since)
    # Issues updated at or after `since` (the pull requests among them are dropped).
    assert sorted(i["number"] for i in issues) == [4, 9, *range(220, 231)]
    assert all("since=" in p for _, _, p, _ in github.requests("/repos/acme/repo2/issues"))
    # Pulls ignore `since` (as GitHub does) but list the newest first: the producer stops at
    # the first one older than what it compares with.
    pulls = read(integ, "pull_request", "acme/repo2", since)
    assert [p["number"] for p in pulls] == [232, 235, 234, 233, 231]
    inc = integ.incremental("pull_request")
    assert inc is not None
    threshold = inc.since(at(234 * 60))
    kept = []
    for p in pulls:
        if older(inc.value(p), threshold):
            break
        kept.append(p["number"])
    # 233 is within the 2m lookback of 234's time; 231 is older: the paging stops there.
    assert kept == [232, 235, 234, 233]


def test_github_fake_adds_issues_and_pulls(github: FakeGithub):
    from integrations.fakeapi import at

    before = github.expected("pull_request")
    new = github.add_issues(0, 2, when=5_000, pull=True)
    assert [n["number"] for n in new] == [191, 192]
    assert github.expected("pull_request") == before | {str(n["id"]) for n in new}
    integ = gh(github, incremental=True)
    assert {i["number"] for i in read(integ, "pull_request", "acme/repo0")} >= {191, 192}
    github.add_issues(0, 1, when=50_000)
    assert [i["number"] for i in read(integ, "issue", "acme/repo0", at(40_000))] == [193]


def test_jira_is_not_incremental_unless_turned_on(jira: FakeJira):
    integ = jr(jira)
    assert integ.incremental("issue") is None and integ.incremental("project") is None
    assert first_request(integ, "issue")[1]["jql"] == "updated >= -30d ORDER BY updated DESC"


def test_jira_incremental_issues_narrow_the_jql(jira: FakeJira):
    integ = jr(jira, incremental=True, jql="project in (P1, P2) ORDER BY created ASC")
    assert integ.incremental("project") is None
    inc = integ.incremental("issue")
    assert inc is not None
    assert (inc.cursor_path, inc.param, inc.lookback) == ("fields.updated", "jql", "5m")
    since = inc.since("2026-11-20T10:03:27.451+0000")
    assert first_request(integ, "issue", None, None)[1]["jql"] == (
        "project in (P1, P2) ORDER BY created ASC")  # no watermark yet: the jql as it is
    path, params = first_request(integ, "issue", None, since)
    assert path == "/rest/api/3/search/jql"
    assert params == {"jql": 'updated >= "2026-11-20 09:58" AND (project in (P1, P2)) '
                             "ORDER BY updated DESC",
                      "maxResults": 100, "fields": ",".join(integ.settings.fields)}


def test_jira_jql_composition():
    from integrations.jira.integration import jql_time, since_jql, where

    assert where("project = A ORDER BY updated DESC") == "project = A"
    assert where("project = A order\n by key") == "project = A"
    assert where('summary ~ "order by" AND project = A') == 'summary ~ "order by" AND project = A'
    assert where("summary ~ 'it\\'s order by' ORDER BY key") == "summary ~ 'it\\'s order by'"
    assert where("(project = A)ORDER BY key") == "(project = A)"
    assert where("reorder by = 1") == "reorder by = 1"  # not a keyword inside a word
    assert where("ORDER BY created") == ""
    # An OR keeps its meaning inside the parentheses.
    assert since_jql("project = A OR project = B", "2026-11-20T10:00:00+00:00") == (
        'updated >= "2026-11-20 10:00" AND (project = A OR project = B) ORDER BY updated DESC')
    assert since_jql("ORDER BY created", "2026-11-20T10:00:00+00:00") == (
        'updated >= "2026-11-20 10:00" ORDER BY updated DESC')
    # The minute, rounded down; the wall-clock time of the value's own offset (the account's
    # time zone, in which Jira writes `updated` and reads JQL dates).
    assert jql_time("2026-11-20T10:00:59.999+0000") == "2026-11-20 10:00"
    assert jql_time("2026-11-20T23:58:00.000+0100") == "2026-11-20 23:58"
    assert jql_time("2026-11-20T00:01:00-05:00") == "2026-11-20 00:01"


def test_jira_updated_is_comparable_across_offsets():
    from integrations.incremental import comparable, minus, newest, older

    a = "2026-11-20T10:00:00.000+0000"
    assert comparable(a) == comparable("2026-11-20T11:00:00.000+0100") == comparable(
        "2026-11-20T10:00:00Z")
    assert older("2026-11-20T10:00:00.000+0100", a)  # 09:00 UTC
    assert newest([a, "2026-11-20T10:30:00.000+0100", "2026-11-20T10:00:00.001+0000"]) == (
        "2026-11-20T10:00:00.001+0000")
    assert minus(a, 300) == "2026-11-20T09:55:00+0000"  # in the API's own spelling


def test_jira_incremental_needs_updated_among_the_fields(jira: FakeJira):
    with pytest.raises(ValueError, match="'updated' in fields"):
        jr(jira, incremental=True, fields=["summary"])
    jr(jira, fields=["summary"])  # not incremental: any fields


def test_jira_fake_honours_updated_in_the_jql(jira: FakeJira):
    from integrations.jira.fake import updated

    integ = jr(jira, incremental=True)
    jira.change_issues([300, 400], when=3_600)
    new = jira.add_issues(2, when=3_700)
    inc = integ.incremental("issue")
    assert inc is not None
    items = read(integ, "issue", None, inc.since(updated(0)))
    # Newest first: the new, the changed, then issues 0..5 (updated within the lookback).
    assert [i["id"] for i in items] == [n["id"] for n in new] + ["20300", "20400"] + [
        str(20000 + i) for i in range(6)]
    assert jira.jqls[-1] == ('updated >= "2026-11-20 09:55" AND (updated >= -30d) '
                             "ORDER BY updated DESC")


# -- comments: child kinds of issues

def children(integ: Any, kind: str, parent_item: dict[str, Any]) -> list[dict[str, Any]]:
    """Every child of one parent item, as the children task fetches and lands them."""
    parent = integ.parent(kind)
    ref = integ.parent_ref(parent, parent_item)

    async def go() -> list[dict[str, Any]]:
        client = integ.client()
        items: list[dict[str, Any]] = []
        async for page in pager.pages(integ, kind, client, checkpoint=None, key=ref,
                                      concurrency=4):
            items += [integ.with_parent(kind, ref, i) for i in page.items]
        await client.aclose()
        return items
    return asyncio.run(go())


def test_github_issue_comments_are_a_child_kind_not_synced_by_default(github: FakeGithub):
    assert gh(github).kinds() == ["repository", "issue", "pull_request"]
    integ = gh(github, kinds=["issue", "issue_comment"], incremental=True)
    assert integ.kinds() == ["issue", "issue_comment"]
    assert [integ.parent(k) for k in ("repository", "issue", "pull_request",
                                      "issue_comment")] == [None, None, None, "issue"]
    assert integ.incremental("issue_comment") is None  # it follows its issues
    assert asyncio.run(integ.partition_keys("issue_comment", integ.client())) is None
    with pytest.raises(ValueError, match="issue_comment needs issue"):
        gh(github, kinds=["repository", "issue_comment"])


def test_github_issue_comments_request_and_parent_fields(github: FakeGithub):
    integ = gh(github, kinds=["issue", "issue_comment"], per_page=50)
    issue = {"id": 5_000_007, "number": 7, "title": "Issue 7",
             "repository_url": "https://api.github.com/repos/acme/repo0"}
    ref = integ.parent_ref("issue", issue)
    assert ref == {"id": 5_000_007, "number": 7, "repository": "acme/repo0"}
    # Under base_url (GitHub Enterprise's /api/v3 too), never at the repository_url's host.
    assert first_request(integ, "issue_comment", ref) == (
        "/repos/acme/repo0/issues/7/comments", {"per_page": 50})
    ghes = {**issue, "repository_url": "https://ghe.example.com/api/v3/repos/acme/repo0"}
    assert integ.parent_ref("issue", ghes)["repository"] == "acme/repo0"
    comment = {"id": 1, "body": "hi"}
    assert integ.with_parent("issue_comment", ref, comment) == {
        "id": 1, "body": "hi", "_parent_id": 5_000_007, "_parent_number": 7,
        "_parent_repository": "acme/repo0"}
    assert integ.with_parent("issue", ref, comment) == comment
    # What cannot go into the path is no value: the children task rejects that issue.
    for bad in ("https://api.github.com/repos/acme/..", "https://api.github.com/repos/a/b/c",
                "https://api.github.com/users/acme", "http://[", None):
        broken = integ.parent_ref("issue", {**issue, "repository_url": bad})
        assert broken["repository"] is None
        with pytest.raises(MalformedPage, match="the parent item has no value at 'repository'"):
            integ.paginator("issue_comment", broken)
    with pytest.raises(MalformedPage, match="no value at 'number'"):
        integ.paginator("issue_comment", integ.parent_ref("issue", {**issue, "number": "7"}))


def test_github_issue_comments_are_paged(github: FakeGithub):
    integ = gh(github, kinds=["issue", "issue_comment"], per_page=10)
    github.comment_counts[(2, 5)] = 35
    issue = next(i for i in sync_kind(integ, "issue") if i["id"] == 5_020_005)
    got = children(integ, "issue_comment", issue)
    # (planned pages arrive in any order)
    assert sorted(c["id"] for c in got) == [c["id"] for c in github.comments(2, 5) or []]
    assert len(got) == 35 and {c["_parent_number"] for c in got} == {5}
    assert {(c["_parent_id"], c["_parent_repository"]) for c in got} == {
        (5_020_005, "acme/repo2")}
    paths = [p for _, _, p, _ in github.requests("/repos/acme/repo2/issues/5/comments")]
    assert paths[0] == "/repos/acme/repo2/issues/5/comments?per_page=10"
    assert len(paths) == 4  # rel="last": pages 2..4 planned, from the issue's own ref
    assert len(children(integ, "issue_comment", {**issue, "number": 6, "id": 5_020_006})) == 2


def test_jira_comments_are_a_child_kind_not_synced_by_default(jira: FakeJira):
    assert jr(jira).kinds() == ["project", "issue"]
    integ = jr(jira, kinds=["issue", "comment"], incremental=True)
    assert [integ.parent(k) for k in ("project", "issue", "comment")] == [None, None, "issue"]
    assert integ.incremental("comment") is None
    with pytest.raises(ValueError, match="comment needs issue"):
        jr(jira, kinds=["project", "comment"])


def test_jira_comments_request_paging_and_parent_fields(jira: FakeJira):
    integ = jr(jira, kinds=["issue", "comment"], page_size=1000)
    issue = {"id": "20012", "key": "P5-12", "fields": {"summary": "Issue 12"}}
    ref = integ.parent_ref("issue", issue)
    assert ref == {"id": "20012", "key": "P5-12"}
    assert first_request(integ, "comment", ref) == (
        "/rest/api/3/issue/P5-12/comment",
        {"orderBy": "created", "maxResults": 100, "startAt": 0})
    assert first_request(jr(jira, page_size=20), "comment", ref)[1]["maxResults"] == 20
    assert integ.paginator("comment", {"id": "1", "key": "A/B?x"}).path == (
        "/rest/api/3/issue/A%2FB%3Fx/comment")  # a key is one path segment
    with pytest.raises(MalformedPage, match="no value at 'key'"):
        integ.paginator("comment", integ.parent_ref("issue", {"id": "20012"}))

    jira.comment_counts["P5-12"] = 230
    got = children(integ, "comment", issue)
    assert sorted(c["id"] for c in got) == [str(1_000_000 + 12_000 + k) for k in range(230)]
    assert {(c["_parent_key"], c["_parent_id"]) for c in got} == {("P5-12", "20012")}
    starts = sorted(int(dict(parse_qsl(urlsplit(p).query))["startAt"])
                    for _, _, p, _ in jira.requests("/rest/api/3/issue/P5-12/comment"))
    assert starts == [0, 100, 200]  # the total planned pages 2 and 3
    assert len(children(integ, "comment", {"id": "20013", "key": "P6-13"})) == 2
    with pytest.raises(PermanentHTTPError, match="404"):
        children(integ, "comment", {"id": "1", "key": "NOPE-1"})
