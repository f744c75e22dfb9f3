"""The graphql paginator (integrations.http.graphql) through the REST integration's fetch,
against a GraphQL endpoint played by httpx.MockTransport."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from integrations import pager
from integrations.errors import (
    ForeignOrigin,
    GraphQLError,
    MalformedPage,
    NoParentValue,
    PagingCycle,
    PermanentHTTPError,
    TransientHTTPError,
)
from integrations.fetched import State
from integrations.http.client import get_json, make_client
from integrations.rest.integration import RestIntegration
from integrations.rest.settings import KindSettings, RestSettings
from integrations.settings import HttpSettings

QUERY = """query($owner: String!, $first: Int!, $after: String, $since: String) {
  repository(owner: $owner) { issues(first: $first, after: $after, since: $since) {
    nodes { id updatedAt } pageInfo { hasNextPage endCursor } } } }"""
TOKEN = "gql-token-1"


class Endpoint:
    """A GraphQL connection of ``count`` issues, ``first`` at a time, cursors "c<index>".
    ``shape``: "nodes" or "edges"; ``answers``: canned bodies served (in order) instead."""

    def __init__(self, count: int = 7, *, shape: str = "nodes",
                 answers: list[httpx.Response] | None = None) -> None:
        self.issues = [{"id": f"I{i}", "updatedAt": f"2024-01-0{1 + i % 9}T00:00:00Z"}
                       for i in range(count)]
        self.shape = shape
        self.answers = list(answers or [])
        self.requests: list[httpx.Request] = []

    def sent(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.answers:
            return self.answers.pop(0)
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return httpx.Response(401, json={"message": "Bad credentials"})
        variables = json.loads(request.content)["variables"]
        start = int(variables["after"][1:]) + 1 if variables.get("after") else 0
        page = self.issues[start:start + variables["first"]]
        end = start + len(page) - 1
        connection: dict[str, Any] = {
            "pageInfo": {"hasNextPage": end + 1 < len(self.issues),
                         "endCursor": f"c{end}" if page else None}}
        if self.shape == "nodes":
            connection["nodes"] = page
        else:
            connection["edges"] = [{"cursor": f"c{start + i}", "node": n}
                                   for i, n in enumerate(page)]
        return httpx.Response(200, json={"data": {"repository": {"issues": connection}}})


class Limiter:
    def __init__(self) -> None:
        self.acquired = 0

    async def acquire(self) -> None:
        self.acquired += 1

    def observe(self, response: httpx.Response) -> None:
        pass


def kind(**paginator: Any) -> dict[str, Any]:
    section = {"type": "graphql", "query": QUERY, "connection_path": "data.repository.issues",
               "variables": {"owner": "acme", "first": 3}} | paginator
    return {"path": "/graphql", "paginator": section}


def source(**kinds: dict[str, Any]) -> RestIntegration:
    return RestIntegration(RestSettings.model_validate(
        {"integration": "rest", "base_url": "https://api.test",
         "auth": {"type": "bearer", "token": TOKEN}, "kinds": kinds}))


def client_of(integ: RestIntegration, endpoint: Endpoint, limiter: Limiter | None = None,
              **http: Any) -> httpx.AsyncClient:
    """The integration's own client (auth, origin guard, retries, limiter), its network the
    endpoint."""
    given = integ.credentials(None, None)
    return make_client(base_url=integ.settings.base_url, headers=given.headers,
                       auth=given.auth, transport=httpx.MockTransport(endpoint),
                       limiter=limiter, settings=HttpSettings(backoff=0.0, **http))


def every_page(integ: RestIntegration, endpoint: Endpoint, name: str = "k", *,
               since: Any = None, limiter: Limiter | None = None) -> list[list[Any]]:
    async def go() -> list[list[Any]]:
        async with client_of(integ, endpoint, limiter) as client:
            return [p.items async for p in pager.pages(integ, name, client, checkpoint=None,
                                                        since=since)]
    return asyncio.run(go())


def one_fetch(integ: RestIntegration, endpoint: Endpoint, state: State | None = None,
              **kw: Any):
    async def go():
        async with client_of(integ, endpoint) as client:
            return await integ.fetch("k", client, state, **kw)
    return asyncio.run(go())


@pytest.mark.parametrize("shape", ["nodes", "edges"])
def test_pages_a_connection_by_its_end_cursor_with_posts_carrying_auth(shape: str):
    endpoint, limiter = Endpoint(7, shape=shape), Limiter()

    pages = every_page(source(k=kind()), endpoint, limiter=limiter)

    assert pages == [endpoint.issues[0:3], endpoint.issues[3:6], endpoint.issues[6:7]]
    assert [r.method for r in endpoint.requests] == ["POST"] * 3
    assert {str(r.url) for r in endpoint.requests} == {"https://api.test/graphql"}
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in endpoint.requests)
    assert all(r.headers["content-type"] == "application/json" for r in endpoint.requests)
    sent = endpoint.sent()
    assert all(s["query"] == QUERY for s in sent)
    # The first page leaves $after out (the query's default, null); then the last endCursor.
    assert [s["variables"] for s in sent] == [
        {"owner": "acme", "first": 3}, {"owner": "acme", "first": 3, "after": "c2"},
        {"owner": "acme", "first": 3, "after": "c5"}]
    assert limiter.acquired == 3  # the shared rate limit counts POSTs as it counts GETs


def test_states_are_json_and_a_run_resumes_from_one():
    endpoint = Endpoint(7)
    first = one_fetch(source(k=kind()), endpoint)
    assert first.next == {"after": "c2"} and json.loads(json.dumps(first.next)) == first.next
    assert first.plan is None and first.truncated is None

    resumed = one_fetch(source(k=kind()), endpoint, state={"after": "c5"})

    assert resumed.items == endpoint.issues[6:] and resumed.next is None
    assert endpoint.sent()[-1]["variables"]["after"] == "c5"


def test_an_answer_with_errors_and_partial_data_is_no_page():
    body = {"data": {"repository": {"issues": {
                "nodes": [{"id": "I0"}], "pageInfo": {"hasNextPage": False, "endCursor": "c0"}}}},
            "errors": [{"message": "Could not resolve some labels",
                        "path": ["repository", "issues", "nodes", 1, "labels"]},
                       {"message": "and another"}]}
    endpoint = Endpoint(answers=[httpx.Response(200, json=body)])

    with pytest.raises(GraphQLError) as caught:
        every_page(source(k=kind()), endpoint)

    text = str(caught.value)
    assert '"Could not resolve some labels" at repository.issues.nodes.1.labels' in text
    assert "(and 1 more)" in text and "partial data is not read" in text
    assert text.startswith("POST https://api.test/graphql")
    assert len(caught.value.errors) == 2 and isinstance(caught.value, MalformedPage)


def test_an_error_without_data_names_its_message_and_path():
    body = {"data": {"repository": None}, "errors": [
        {"message": "Could not resolve to a Repository with the name 'acme/nope'.",
         "path": ["repository"], "type": "NOT_FOUND"}]}
    endpoint = Endpoint(answers=[httpx.Response(200, json=body)])

    with pytest.raises(GraphQLError, match=r'"Could not resolve to a Repository with the name '
                       r"'acme/nope'.\" at repository$"):
        one_fetch(source(k=kind()), endpoint)


@pytest.mark.parametrize("error", [
    {"type": "RATE_LIMITED", "message": "API rate limit exceeded for user ID 1."},
    {"message": "Throttled", "extensions": {"code": "THROTTLED"}},
])
def test_a_rate_limit_error_is_transient_and_waits_what_the_headers_say(error):
    endpoint = Endpoint(answers=[httpx.Response(
        200, json={"errors": [error]}, headers={"X-RateLimit-Remaining": "0",
                                                "X-RateLimit-Reset": "42"})])

    with pytest.raises(TransientHTTPError) as caught:
        one_fetch(source(k=kind()), endpoint)

    assert caught.value.retry_after == 42 and error["message"] in str(caught.value)


@pytest.mark.parametrize(("info", "error", "message"), [
    ({"hasNextPage": True, "endCursor": None}, MalformedPage, "endCursor is None"),
    ({"hasNextPage": True, "endCursor": ""}, MalformedPage, "endCursor is ''"),
    ({"endCursor": "c9"}, MalformedPage, "hasNextPage is not true or false"),
    ({"hasNextPage": True, "endCursor": "c2"}, PagingCycle, "did not advance"),
])
def test_a_connection_that_cannot_be_followed_fails(info, error, message):
    body = {"data": {"repository": {"issues": {"nodes": [{"id": "I3"}], "pageInfo": info}}}}
    endpoint = Endpoint(answers=[httpx.Response(200, json=body)])

    with pytest.raises(error, match=message):
        one_fetch(source(k=kind()), endpoint, state={"after": "c2"})


@pytest.mark.parametrize(("body", "message"), [
    ({"data": {"repository": None}}, "no GraphQL connection at 'data.repository.issues'"),
    ({"data": {"repository": {"issues": {"pageInfo": {"hasNextPage": False}}}}},
     "neither 'nodes' nor 'edges'"),
    ({"data": {"repository": {"issues": {"edges": [{"cursor": "c0"}]}}}}, "has no 'node'"),
    ([1, 2], "not an object"),
])
def test_an_answer_without_the_connection_is_malformed(body, message):
    endpoint = Endpoint(answers=[httpx.Response(200, json=body)])
    with pytest.raises(MalformedPage, match=message):
        one_fetch(source(k=kind()), endpoint)


def test_an_explicit_items_path_still_wins():
    spec = kind() | {"items": "data.repository.issues.nodes"}
    endpoint = Endpoint(4)
    assert [len(p) for p in every_page(source(k=spec), endpoint)] == [3, 1]


def test_posts_are_retried_and_refused_by_status_as_gets_are():
    endpoint = Endpoint(answers=[httpx.Response(503), httpx.Response(502)])
    limiter = Limiter()

    async def go():
        integ = source(k=kind())
        async with client_of(integ, endpoint, limiter, retries=3) as client:
            return await integ.fetch("k", client, None)

    page = asyncio.run(go())
    assert len(page.items) == 3 and limiter.acquired == 3
    assert len({r.content for r in endpoint.requests}) == 1  # the same body, every attempt

    refused = Endpoint(answers=[httpx.Response(401, json={"message": "Bad credentials"})])
    with pytest.raises(PermanentHTTPError, match=r"POST https://api.test/graphql answered 401"):
        one_fetch(source(k=kind()), refused)


def test_a_post_to_a_foreign_origin_is_refused_and_takes_no_credentials():
    endpoint = Endpoint()

    async def go():
        async with make_client(base_url="https://api.test", headers={"X-Key": "k-1"},
                               transport=httpx.MockTransport(endpoint)) as client:
            await get_json(client, "https://elsewhere.test/graphql", json={"query": "{ x }"})

    with pytest.raises(ForeignOrigin):
        asyncio.run(go())
    assert endpoint.requests == []


def test_an_incremental_param_is_a_variable_of_the_query():
    spec = kind() | {"incremental": {"cursor_path": "updatedAt", "param": "since"}}
    endpoint = Endpoint(5)

    every_page(source(k=spec), endpoint, since="2024-01-03T00:00:00Z")

    assert [s["variables"].get("since") for s in endpoint.sent()] == ["2024-01-03T00:00:00Z"] * 2
    assert all(not r.url.query for r in endpoint.requests)  # not a query parameter
    every_page(source(k=spec), endpoint)  # no watermark yet: no since
    assert "since" not in endpoint.sent()[-1]["variables"]


def test_the_kinds_params_stay_query_parameters_of_the_endpoint():
    endpoint = Endpoint(2)
    every_page(source(k=kind() | {"params": {"api-version": "2024-01"}}), endpoint)
    assert [r.url.params["api-version"] for r in endpoint.requests] == ["2024-01"]


def test_a_child_kinds_variables_are_filled_from_its_parent_keeping_json_types():
    query = ("query($number: Int!, $label: String, $after: String) { issue(number: $number) "
             "{ comments(after: $after) { nodes { id } pageInfo { hasNextPage endCursor } } } }")
    child = {"path": "/graphql", "parent": "issues", "paginator": {
        "type": "graphql", "query": query, "connection_path": "data.issue.comments",
        "variables": {"number": "{parent.number}", "label": "of-{parent.repo.name}",
                      "filter": {"numbers": ["{parent.number}"]}}}}
    integ = source(issues=kind(), comments=child)
    assert integ.settings.kinds["comments"].parent_fields() == ["number", "repo.name"]

    ref = integ.parent_ref("issues", {"number": 12, "repo": {"name": "x"}})
    payload = integ.paginator("comments", ref).payload({"after": None})

    assert payload["variables"] == {"number": 12, "label": "of-x", "filter": {"numbers": [12]}}
    with pytest.raises(NoParentValue, match="'number'"):
        integ.paginator("comments", {"number": None, "repo.name": "x"})


@pytest.mark.parametrize(("paginator", "message"), [
    ({"query": "{ issues { nodes { id } } }"}, "does not declare $after"),
    ({"query": "query($cursor: String) { x }"}, "does not declare $after"),
    ({"variables": {"owner": "acme", "first": 3, "after": "c1"}}, "variables.after"),
    ({"connection_path": ""}, "connection_path"),
    ({"variables": {"when": "x", "bad": {"nested": {1, 2}}}}, "variables.bad"),
    ({"limit": 5}, "limit"),
])
def test_a_paginator_section_that_cannot_work_is_a_config_error(paginator, message):
    with pytest.raises(ValidationError, match=message.replace("$", r"\$")):
        KindSettings.model_validate(kind(**paginator))


def test_a_custom_cursor_variable():
    query = "query($cursor: String, $first: Int!, $owner: String!) { x }"
    spec = kind(query=query, cursor_variable="cursor")
    paginator = KindSettings.model_validate(spec).paginator.build("/graphql", {})
    assert paginator.payload({"after": "c9"})["variables"]["cursor"] == "c9"


def test_an_incremental_param_the_query_does_not_declare_is_a_config_error():
    spec = kind() | {"incremental": {"cursor_path": "updatedAt", "param": "updatedSince"}}
    with pytest.raises(ValidationError, match=r"does not declare \$updatedSince"):
        KindSettings.model_validate(spec)
    spec = kind() | {"incremental": {"cursor_path": "updatedAt", "param": "owner"}}
    with pytest.raises(ValidationError, match="set by the paginator or its variables"):
        KindSettings.model_validate(spec)


def test_the_other_paginators_still_send_gets():
    for section in ({"type": "cursor", "cursor_path": "next"}, {"type": "link"},
                    {"type": "offset"}, {"type": "single"}):
        paginator = KindSettings.model_validate({"path": "/k", "paginator": section}) \
            .paginator.build("/k", {"q": 1})
        assert paginator.payload(paginator.first()) is None
