"""GitHub through GraphQL, piece by piece: GraphQL's shapes turned into REST's items
(integrations/github/v4.py), the integration's paging of them (comments that came with their
issue cost no request; a RATE_LIMITED answer is waited for; a spent budget pauses the limit),
the settings that refuse what makes no sense, and the fake's point costs."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from graphql import OperationDefinitionNode, parse
from pydantic import ValidationError

from integrations import pager
from integrations.errors import MalformedPage, RateLimited
from integrations.fakeapi import at
from integrations.fetched import Fetched
from integrations.github import fakegraphql, v4
from integrations.github.fake import FakeGithub
from integrations.github.integration import GithubIntegration, graphql_path
from integrations.github.settings import GithubSettings

NODE = {"fullDatabaseId": "2800000123", "number": 7, "title": "Crash", "state": "CLOSED",
        "createdAt": "2024-01-01T00:00:00Z", "updatedAt": "2024-01-02T00:00:00Z",
        "closedAt": "2024-01-02T00:00:00Z", "author": {"__typename": "Bot", "login": "renovate"},
        "assignees": {"nodes": [{"login": "monalisa"}, {"login": "hubot"}]},
        "labels": {"nodes": [{"name": "bug"}, {"name": "p1"}]}}
COMMENT = {"fullDatabaseId": "7000000001", "body": "hi", "createdAt": "2024-01-01T00:00:00Z",
           "updatedAt": "2024-01-01T00:00:00Z", "author": {"__typename": "User", "login": "x"}}


def settings(**kw: Any) -> GithubSettings:
    return GithubSettings.model_validate(
        {"integration": "github", "org": "acme", "token": "ghp_x", "base_url": "https://api.test",
         "kinds": ["issue", "issue_comment"], "graphql": True, **kw})


def test_an_issue_node_becomes_the_item_rest_lists() -> None:
    item = v4.issue({**NODE, "comments": {"pageInfo": {"hasNextPage": True, "endCursor": "Y2"},
                                          "nodes": [COMMENT]}},
                    "acme/app", base_url="https://api.test/", where="POST /graphql")
    comments = item.pop(v4.COMMENTS_KEY)
    assert item == {
        "id": 2_800_000_123, "number": 7, "title": "Crash", "state": "closed",
        "user": {"login": "renovate[bot]"}, "assignee": {"login": "monalisa"},
        "labels": [{"name": "bug"}, {"name": "p1"}], "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-01-02T00:00:00Z", "closed_at": "2024-01-02T00:00:00Z",
        "repository_url": "https://api.test/repos/acme/app"}
    assert comments == {"next": "Y2", "nodes": [{
        "id": 7_000_000_001, "body": "hi", "user": {"login": "x"},
        "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z"}]}


def test_an_issue_without_comments_asked_or_more_of_them() -> None:
    bare = v4.issue({**NODE, "author": None, "assignees": {"nodes": []}, "labels": None},
                    "acme/app", base_url="https://api.test", where="w")
    assert v4.COMMENTS_KEY not in bare
    assert (bare["user"], bare["assignee"], bare["labels"]) == (None, None, [])
    last = v4.issue({**NODE, "comments": {"pageInfo": {"hasNextPage": False, "endCursor": "Y9"},
                                          "nodes": []}}, "acme/app", base_url="", where="w")
    assert last[v4.COMMENTS_KEY] == {"nodes": [], "next": None}


def test_a_node_without_its_database_id_is_a_malformed_page() -> None:
    with pytest.raises(MalformedPage, match=r"POST /graphql: a node has no fullDatabaseId"):
        v4.comment({**COMMENT, "fullDatabaseId": None}, "POST /graphql")
    with pytest.raises(MalformedPage, match="not an object"):
        v4.issue(None, "acme/app", base_url="", where="w")


def test_the_budget_pauses_only_when_what_is_left_does_not_pay_for_another_query() -> None:
    def body(cost: int, remaining: int) -> dict[str, Any]:
        return {"data": {"rateLimit": {"cost": cost, "remaining": remaining,
                                       "resetAt": "2030-01-01T00:01:40Z"}}}

    now = 1_893_456_000.0  # 2030-01-01T00:00:00Z
    assert v4.budget(body(3, 2), now=now) == 100.0
    assert v4.budget(body(3, 3), now=now) is None
    assert v4.budget({"data": None}, now=now) is None and v4.budget([], now=now) is None


def test_graphql_is_served_beside_the_rest_api() -> None:
    assert graphql_path("https://api.github.com") == "/graphql"
    assert graphql_path("https://ghe.example.com/api/v3/") == "https://ghe.example.com/api/graphql"


@pytest.mark.parametrize(("keys", "message"), [
    ({"kinds": ["repository", "pull_request"]}, "kinds has no issue"),
    ({"mappings": {"issue": False}}, "graphql: true needs mappings.issue "),
    ({"mappings": False}, "needs mappings.issue"),
    ({"mappings": {"issue_comment": False}}, "needs mappings.issue_comment"),
])
def test_graphql_where_it_makes_no_sense_is_refused(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        settings(**keys)
    settings(**{**keys, "graphql": False})  # the same without graphql is fine


class Limiter:
    def __init__(self) -> None:
        self.pauses: list[float] = []

    async def acquire(self) -> None:
        pass

    def observe(self, response: httpx.Response) -> None:
        pass

    def pause(self, seconds: float) -> None:
        self.pauses.append(seconds)


def integration(answer: Callable[[httpx.Request], httpx.Response], **kw: Any
                ) -> tuple[GithubIntegration, Limiter, httpx.AsyncClient]:
    integ, limiter = GithubIntegration(settings(**kw)), Limiter()
    client = integ.client(limiter=limiter)
    client._transport = httpx.MockTransport(answer)  # behind the client's retries: none here
    return integ, limiter, client


def page(nodes: list[Any], *, remaining: int = 4000) -> dict[str, Any]:
    return {"data": {"repository": {"issue": {"comments": {
        "pageInfo": {"hasNextPage": False, "endCursor": None}, "nodes": nodes}}},
        "rateLimit": {"cost": 1, "remaining": remaining, "resetAt": "2099-01-01T00:00:00Z"}}}


def test_comments_that_came_with_their_issue_cost_no_request() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"asked {request.url}")

    integ, _, client = integration(refuse)
    ref = integ.parent_ref("issue", {"id": 1, "number": 7, "repository_url":
                                     "https://api.test/repos/acme/app", v4.COMMENTS_KEY: {
                                         "nodes": [{"id": 1}], "next": "Y1"}})
    got = asyncio.run(integ.fetch("issue_comment", client, None, key=ref))
    assert got == Fetched(items=[{"id": 1}], next={"after": "Y1"})


def test_the_comments_past_them_page_the_nested_connection_and_a_spent_budget_pauses() -> None:
    sent: list[Any] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, json=page([COMMENT], remaining=0))

    integ, limiter, client = integration(answer)
    ref = {"id": 1, "number": 7, "repository": "acme/app"}
    got = asyncio.run(integ.fetch("issue_comment", client, {"after": "Y1"}, key=ref))
    assert [c["id"] for c in got.items] == [7_000_000_001] and got.next is None
    assert sent == [{"query": v4.COMMENTS, "variables": {
        "owner": "acme", "name": "app", "number": 7, "first": 100, "after": "Y1"}}]
    assert len(limiter.pauses) == 1 and limiter.pauses[0] > 3600  # until 2099's reset


def limited(reset_in: float) -> httpx.Response:
    return httpx.Response(200, json={"errors": [{"type": "RATE_LIMITED", "message": "API rate "
                                                 "limit exceeded for user ID 1."}]},
                          headers={"x-ratelimit-remaining": "1",
                                   "x-ratelimit-reset": str(int(time.time() + reset_in))})


def test_a_rate_limited_answer_is_waited_for_and_asked_again() -> None:
    answers = iter([limited(30), httpx.Response(200, json=page([COMMENT]))])
    integ, limiter, client = integration(lambda request: next(answers))
    ref = {"id": 1, "number": 7, "repository": "acme/app"}
    got = asyncio.run(integ.fetch("issue_comment", client, {"after": "Y1"}, key=ref))
    assert len(got.items) == 1
    assert len(limiter.pauses) == 1 and 25 < limiter.pauses[0] <= 30


def test_a_rate_limited_answer_past_max_retry_after_fails_with_the_reason() -> None:
    integ, limiter, client = integration(lambda request: limited(3600),
                                         http={"max_retry_after": 60})
    ref = {"id": 1, "number": 7, "repository": "acme/app"}
    with pytest.raises(RateLimited, match=r"API rate limit exceeded.*\[RATE_LIMITED\]"):
        asyncio.run(integ.fetch("issue_comment", client, {"after": "Y1"}, key=ref))
    assert limiter.pauses == []


@pytest.fixture
def github() -> Iterator[FakeGithub]:
    with FakeGithub(repos=2, default_size=(130, 10)) as fake:
        fake.comment_counts[(1, 5)] = 212  # a bot's every fifth: the [bot] round trip
        yield fake


def rows(integ: GithubIntegration) -> dict[str, dict[str, Any]]:
    """The typed rows of every issue and comment of the fake's organisation, as the producer
    and the children task page them."""
    async def go() -> dict[str, list[Any]]:
        client = integ.client()
        out: dict[str, list[Any]] = {"issue": [], "issue_comment": []}

        async def every(kind: str, partition: Any) -> list[Any]:
            return [i async for p in pager.pages(integ, kind, client, checkpoint=None,
                                                 key=partition) for i in p.items]

        for repository in await integ.partition_keys("issue", client) or []:
            for issue in await every("issue", repository):
                out["issue"].append(issue)
                ref = integ.parent_ref("issue", issue)
                out["issue_comment"] += [integ.with_parent("issue_comment", ref, c)
                                         for c in await every("issue_comment", ref)]
        await client.aclose()
        return out

    got, table = asyncio.run(go()), {}
    for kind, items in got.items():
        mapping = integ.mapping(kind)
        assert mapping is not None
        mapped = mapping.map(items)
        assert not mapped.rejected
        table.update({f"{kind} {r[1]}": r[2] for r in mapped.rows})
    return table


def test_graphql_items_map_to_the_rows_rest_items_do(github: FakeGithub) -> None:
    base = {"integration": "github", "org": github.org, "token": github.token,
            "base_url": github.url, "kinds": ["issue", "issue_comment"]}
    counts, tables = [], []
    for graphql in (False, True):
        github.state.log.clear()
        tables.append(rows(GithubIntegration(GithubSettings.model_validate(
            {**base, "graphql": graphql}))))
        counts.append(len(github.requests("/")))
    assert tables[0] == tables[1]
    assert len(tables[1]) == 260 + 259 * 2 + 212
    assert {r["author"] for k, r in tables[1].items() if k.startswith("issue_comment")} == {
        "hubot", "dependabot[bot]"}
    # REST: repositories, 2 pages of issues and a request per issue's comments (3 for the
    # big one) per repository; GraphQL: repositories, 2 pages of issues, 2 past the big
    # one's first 100 comments.
    assert counts == [1 + 2 * 2 + 260 + 2, 1 + 2 * 2 + 2]


def test_the_fake_counts_points_as_github_does() -> None:
    def points(query: str, **variables: Any) -> int:
        operation = parse(query).definitions[0]
        assert isinstance(operation, OperationDefinitionNode)
        return fakegraphql.cost(operation, variables)

    # 1 request for the issues, 100 each for their comments, labels and assignees: 301.
    assert points(v4.ISSUES, first=100) == 3
    assert points(v4.ISSUES_ONLY, first=100) == 2  # 201
    assert points(v4.COMMENTS, first=100) == 1
    assert points(v4.ISSUES, first=10) == 1  # 31, at least 1


def test_the_issues_query_asks_for_the_state_and_since_and_comments_only_when_synced() -> None:
    integ = GithubIntegration(settings(state="open"))
    payload = integ.paginator("issue", "acme/app", since="2024-01-01T00:00:00Z").payload(
        {"after": "Y5"})
    assert payload == {"query": v4.ISSUES, "variables": {
        "owner": "acme", "name": "app", "first": 100, "states": ["OPEN"],
        "since": "2024-01-01T00:00:00Z", "after": "Y5"}}
    alone = GithubIntegration(settings(kinds=["issue"])).paginator("issue", "acme/app")
    assert alone.payload({"after": None}) == {"query": v4.ISSUES_ONLY, "variables": {
        "owner": "acme", "name": "app", "first": 100}}


def test_an_incremental_read_gets_the_issues_changed_since(github: FakeGithub) -> None:
    integ = GithubIntegration(GithubSettings.model_validate(
        {"integration": "github", "org": github.org, "token": github.token, "graphql": True,
         "base_url": github.url, "kinds": ["issue"], "incremental": True}))
    github.change_issues(0, [3, 90], when=50_000)

    async def go() -> Fetched:
        async with integ.client() as client:
            return await integ.fetch("issue", client, None, key="acme/repo0",
                                     since=at(40_000))

    got = asyncio.run(go())
    assert [(i["number"], i["updated_at"]) for i in got.items] == [
        (3, at(50_000)), (90, at(50_000))]
    assert got.next is None and all(v4.COMMENTS_KEY not in i for i in got.items)
