"""A GraphQL API built with strawberry-graphql, for tests that sync it by configuration alone
(tests/integration/test_real_graphql.py). Nothing here knows Sluice.

The schema, as GitHub's v4 shapes it (Relay connections, strawberry's ``ListConnection``):

    repository(owner, name) -> Repository      an unknown name: an error at path "repository"
    Repository.issues(since, first, after, …)  -> IssueConnection (edges { node }, pageInfo)
    Repository.issue(number)                   -> Issue
    Issue.comments(first, after, …)            -> CommentConnection (also ``nodes``)
    mutations: addIssues(count, updatedAt), editIssue(number, title), deleteIssue(number)

The store lives in the server process. Every request must carry ``Authorization: Bearer
$GRAPHQL_TOKEN`` (else 401); each request not from the harness (User-Agent ``HARNESS``) is
appended to ``$GRAPHQL_LOG`` as a JSON line: its method, its variables, its query.

``GraphqlServer`` runs ``uvicorn tests.support.graphqlapi:app`` on a free loopback port.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import strawberry
from strawberry import relay
from strawberry.asgi import GraphQL

from tasks.operator.redisserver import free_port
from tasks.operator.supervisor import Child
from tests.support.served import Served

HARNESS = "sluice-tests-harness"
ROOT = Path(__file__).resolve().parents[2]
REPOSITORY = ("acme", "widgets")

# number -> {"title", "updated_at"}; comment count is the number mod 5.
ISSUES: dict[int, dict[str, Any]] = {}


@strawberry.type
class Comment:
    id: strawberry.ID
    body: str


@strawberry.type
class CommentConnection(relay.ListConnection[Comment]):
    @strawberry.field(description="the edges' nodes (GitHub's shortcut)")
    def nodes(self) -> list[Comment]:
        return [edge.node for edge in self.edges]


@strawberry.type
class Issue:
    id: strawberry.ID
    number: int
    title: str
    updated_at: datetime

    @relay.connection(CommentConnection)
    def comments(self) -> Iterable[Comment]:
        return [Comment(id=strawberry.ID(f"C{self.number}-{i}"), body=f"comment {i} of "
                        f"{self.number}") for i in range(self.number % 5)]


def issue(number: int) -> Issue:
    row = ISSUES[number]
    return Issue(id=strawberry.ID(f"I{number}"), number=number, title=row["title"],
                 updated_at=row["updated_at"])


@strawberry.type
class Repository:
    name: str

    @relay.connection(relay.ListConnection[Issue])
    def issues(self, since: datetime | None = None) -> Iterable[Issue]:
        return [issue(n) for n in sorted(ISSUES)
                if since is None or ISSUES[n]["updated_at"] >= since]

    @strawberry.field
    def issue(self, number: int) -> Issue | None:
        return issue(number) if number in ISSUES else None


@strawberry.type
class Query:
    @strawberry.field
    def repository(self, owner: str, name: str) -> Repository | None:
        if (owner, name) != REPOSITORY:
            raise ValueError(f"Could not resolve to a Repository with the name '{owner}/{name}'.")
        return Repository(name=name)


@strawberry.type
class Mutation:
    @strawberry.mutation
    def add_issues(self, count: int, updated_at: datetime | None = None) -> list[int]:
        start = max(ISSUES, default=0) + 1
        for n in range(start, start + count):
            ISSUES[n] = {"title": f"issue {n}", "updated_at": updated_at or datetime.now(UTC)}
        return list(range(start, start + count))

    @strawberry.mutation
    def edit_issue(self, number: int, title: str) -> Issue:
        ISSUES[number] = {"title": title, "updated_at": datetime.now(UTC)}
        return issue(number)

    @strawberry.mutation
    def delete_issue(self, number: int) -> bool:
        return ISSUES.pop(number, None) is not None


class Guarded:
    """The schema's ASGI app behind a bearer token, logging what it is asked."""

    def __init__(self, inner: Any, *, token: str, log: Path | None) -> None:
        self.inner, self.token, self.log = inner, token, log

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.inner(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = dict(scope["headers"])
        authorized = headers.get(b"authorization") == f"Bearer {self.token}".encode()
        if self.log is not None and headers.get(b"user-agent") != HARNESS.encode():
            sent = json.loads(body) if body else {}
            with self.log.open("a") as out:
                out.write(json.dumps({"method": scope["method"], "authorized": authorized,
                                      "query": sent.get("query"),
                                      "variables": sent.get("variables")}) + "\n")
        if not authorized:
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": b'{"message":"Bad credentials"}'})
            return None
        replay = [{"type": "http.request", "body": body, "more_body": False}]

        async def again() -> dict[str, Any]:
            return replay.pop() if replay else await receive()

        return await self.inner(scope, again, send)


schema = strawberry.Schema(query=Query, mutation=Mutation)
app = Guarded(GraphQL(schema, graphql_ide=None),
              token=os.environ.get("GRAPHQL_TOKEN", ""),
              log=Path(os.environ["GRAPHQL_LOG"]) if os.environ.get("GRAPHQL_LOG") else None)


class GraphqlServer(Served):
    """``uvicorn tests.support.graphqlapi:app`` on a free port; ``call`` runs a query or a
    mutation as the harness."""

    def __init__(self, tmp: Path, *, token: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests_log = tmp / "graphql-requests.jsonl"
        self.child = Child("graphql", [
            sys.executable, "-m", "uvicorn", "tests.support.graphqlapi:app", "--host",
            "127.0.0.1", "--port", str(self.port), "--no-access-log"],
            log=tmp / "graphql.log", cwd=ROOT,
            env={"GRAPHQL_TOKEN": token, "GRAPHQL_LOG": str(self.requests_log)})
        self.http = httpx.Client(base_url=self.url, timeout=10, headers={
            "User-Agent": HARNESS, "Authorization": f"Bearer {token}"})

    def start(self) -> GraphqlServer:
        self.child.start()
        self.child.wait_until(self._up, timeout=60)
        return self

    def _up(self) -> bool:
        try:
            return self.http.post("/graphql", json={"query": "{ __typename }"}).is_success
        except httpx.TransportError:
            return False


    def call(self, query: str, **variables: Any) -> Any:
        """The ``data`` of a query or mutation; raises on errors."""
        answer = self.http.post("/graphql", json={"query": query, "variables": variables})
        answer.raise_for_status()
        body = answer.json()
        if body.get("errors"):
            raise RuntimeError(f"graphql: {body['errors']}")
        return body["data"]

    def issues(self) -> dict[str, dict[str, Any]]:
        """Every issue the server holds, by id, read through its own connection's paging."""
        found: dict[str, dict[str, Any]] = {}
        after = None
        while True:
            got = self.call("""query($after: String) { repository(owner: "acme", name:
                "widgets") { issues(first: 100, after: $after) { edges { node { id number
                title updatedAt } } pageInfo { hasNextPage endCursor } } } }""", after=after)
            connection = got["repository"]["issues"]
            found.update((e["node"]["id"], e["node"]) for e in connection["edges"])
            if not connection["pageInfo"]["hasNextPage"]:
                return found
            after = connection["pageInfo"]["endCursor"]

    def comments(self) -> dict[str, dict[str, Any]]:
        """Every comment of every issue, by id, each issue's read through its own paging."""
        found: dict[str, dict[str, Any]] = {}
        for node in self.issues().values():
            after = None
            while True:
                got = self.call("""query($n: Int!, $after: String) { repository(owner: "acme",
                    name: "widgets") { issue(number: $n) { comments(first: 100, after: $after)
                    { nodes { id body } pageInfo { hasNextPage endCursor } } } } }""",
                                n=node["number"], after=after)
                connection = got["repository"]["issue"]["comments"]
                found.update((c["id"], c) for c in connection["nodes"])
                if not connection["pageInfo"]["hasNextPage"]:
                    break
                after = connection["pageInfo"]["endCursor"]
        return found

    def served(self) -> list[dict[str, Any]]:
        """The requests Sluice made (not the harness), oldest first."""
        if not self.requests_log.exists():
            return []
        return [json.loads(line) for line in self.requests_log.read_text().splitlines()]
