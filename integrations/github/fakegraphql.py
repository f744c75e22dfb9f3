"""The GraphQL endpoint (``POST /graphql``) of the GitHub fake: the same organisation's issues
and comments as its REST endpoints, in GitHub's v4 shapes, run by a real GraphQL engine
(graphql-core) over a part of GitHub's schema (names, types and arguments as GitHub's own):

    repository(owner, name) -> Repository      unknown: null, error type NOT_FOUND at "repository"
    Repository.nameWithOwner, .issue(number), .issues(first, after, states, filterBy: {since})
    Issue: fullDatabaseId (BigInt, as text), number, title, state (OPEN/CLOSED), createdAt,
           updatedAt, closedAt, author (User or Bot: a Bot's login without REST's "[bot]"),
           assignees, labels, comments (connections)
    IssueComment: fullDatabaseId, body, author, createdAt, updatedAt
    rateLimit { cost limit nodeCount remaining resetAt used }

Connections take ``first`` (1..100, required, as GitHub's) and ``after`` (an opaque cursor);
they answer ``nodes``, ``edges { cursor node }``, ``pageInfo`` and ``totalCount``.

A query costs points as GitHub counts them: the requests its connections need (one for a
top connection, one per parent node for a nested one), divided by 100, at least 1. The
budget (``FakeGithub.graphql_budget``) resets an hour on; a query that costs more than what
is left answers 200 with an error of type RATE_LIMITED, and every answer carries GitHub's
``x-ratelimit-*`` headers (``x-ratelimit-resource: graphql``).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from graphql import (
    FieldNode,
    GraphQLError,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionNode,
    VariableNode,
    build_schema,
    execute_sync,
    parse,
    validate,
)

from integrations.incremental import older


@dataclass(frozen=True)
class Budget:
    """GraphQL's points: ``limit`` an hour, ``remaining`` until ``reset_at`` (epoch seconds);
    ``ok``: whether the last query was paid for."""

    limit: int
    remaining: int
    reset_at: float
    ok: bool = True


class Fake(Protocol):
    """What the answers read of the fake GitHub (``integrations.github.fake``, which imports
    this module to answer its ``POST /graphql``)."""

    org: str
    repos: int

    def items(self, i: int) -> list[dict[str, Any]]: ...

    def comments(self, i: int, n: int) -> list[dict[str, Any]] | None: ...

    def spend_graphql(self, points: int) -> Budget: ...


SCHEMA = build_schema('''
scalar DateTime
scalar BigInt
interface Actor { login: String! }
type User implements Actor { login: String! }
type Bot implements Actor { login: String! }
type PageInfo { endCursor: String hasNextPage: Boolean! hasPreviousPage: Boolean!
                startCursor: String }
enum IssueState { CLOSED OPEN }
enum OrderDirection { ASC DESC }
enum IssueOrderField { COMMENTS CREATED_AT UPDATED_AT }
input IssueOrder { direction: OrderDirection! field: IssueOrderField! }
input IssueFilters { assignee: String createdBy: String labels: [String!] mentioned: String
                     milestone: String since: DateTime states: [IssueState!]
                     viewerSubscribed: Boolean = false }
type Label { name: String! }
type LabelConnection { nodes: [Label] pageInfo: PageInfo! totalCount: Int! }
type UserConnection { nodes: [User] pageInfo: PageInfo! totalCount: Int! }
type IssueComment { id: ID! databaseId: Int fullDatabaseId: BigInt body: String!
                    author: Actor createdAt: DateTime! updatedAt: DateTime! }
type IssueCommentEdge { cursor: String! node: IssueComment }
type IssueCommentConnection { edges: [IssueCommentEdge] nodes: [IssueComment]
                              pageInfo: PageInfo! totalCount: Int! }
type Issue {
  id: ID! databaseId: Int fullDatabaseId: BigInt number: Int! title: String!
  state: IssueState! createdAt: DateTime! updatedAt: DateTime! closedAt: DateTime
  author: Actor
  assignees(after: String, before: String, first: Int, last: Int): UserConnection!
  labels(after: String, before: String, first: Int, last: Int): LabelConnection
  comments(after: String, before: String, first: Int, last: Int): IssueCommentConnection!
}
type IssueEdge { cursor: String! node: Issue }
type IssueConnection { edges: [IssueEdge] nodes: [Issue] pageInfo: PageInfo!
                       totalCount: Int! }
type Repository {
  name: String! nameWithOwner: String!
  issue(number: Int!): Issue
  issues(after: String, before: String, filterBy: IssueFilters, first: Int,
         labels: [String!], last: Int, orderBy: IssueOrder,
         states: [IssueState!]): IssueConnection!
}
type RateLimit { cost: Int! limit: Int! nodeCount: Int! remaining: Int! resetAt: DateTime!
                 used: Int! }
type Query {
  repository(followRenames: Boolean = true, name: String!, owner: String!): Repository
  rateLimit(dryRun: Boolean = false): RateLimit
}
''')

MAX_FIRST = 100
INT_MAX = 2**31 - 1


def stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cursor(index: int) -> str:
    return base64.b64encode(f"cursor:v2:{index}".encode()).decode()


def _index(cursor: str) -> int:
    try:
        return int(base64.b64decode(cursor).decode().rsplit(":", 1)[1])
    except (ValueError, IndexError):
        raise GraphQLError(f"`{cursor}` does not appear to be a valid cursor.") from None


def connection(items: list[Any], args: dict[str, Any], name: str,
               node: Callable[[Any], Any]) -> dict[str, Any]:
    """One page of a connection, as GitHub's: ``first`` required and at most 100."""
    first = args.get("first")
    if first is None or args.get("last") is not None or args.get("before") is not None:
        raise GraphQLError(f"You must provide a `first` value to properly paginate the `{name}` "
                           "connection (this fake pages forward only).")
    if not 0 <= first <= MAX_FIRST:
        raise GraphQLError(f"Requesting {first} records on the `{name}` connection exceeds "
                           f"the `first` limit of {MAX_FIRST} records.")
    start = _index(args["after"]) + 1 if args.get("after") else 0
    page = [node(x) for x in items[start:start + first]]
    end = start + len(page)
    return {"nodes": page, "totalCount": len(items),
            "edges": [{"cursor": _cursor(start + i), "node": n} for i, n in enumerate(page)],
            "pageInfo": {"hasNextPage": end < len(items), "hasPreviousPage": start > 0,
                         "startCursor": _cursor(start) if page else None,
                         "endCursor": _cursor(end - 1) if page else None}}


def actor(user: dict[str, Any] | None) -> dict[str, Any] | None:
    """REST's ``user`` as GraphQL's Actor: a Bot's login has no "[bot]"."""
    if user is None:
        return None
    login = user["login"]
    if login.endswith("[bot]"):
        return {"__typename": "Bot", "login": login.removesuffix("[bot]")}
    return {"__typename": "User", "login": login}


def _ids(kind: str, database_id: int) -> dict[str, Any]:
    return {"id": f"{kind}_{database_id}", "fullDatabaseId": str(database_id),
            "databaseId": database_id if database_id <= INT_MAX else None}


def comment_node(c: dict[str, Any]) -> dict[str, Any]:
    return {**_ids("IC", c["id"]), "body": c["body"], "author": actor(c["user"]),
            "createdAt": c["created_at"], "updatedAt": c["updated_at"]}


def issue_node(fake: Fake, repo_i: int, item: dict[str, Any]) -> dict[str, Any]:
    n = item["number"]
    return {
        **_ids("I", item["id"]), "number": n, "title": item["title"],
        "state": item["state"].upper(), "createdAt": item["created_at"],
        "updatedAt": item["updated_at"], "closedAt": item["closed_at"],
        "author": actor(item["user"]),
        "assignees": lambda _info, **a: connection(
            [item["assignee"]] if item["assignee"] else [], a, "assignees", actor),
        "labels": lambda _info, **a: connection(
            item["labels"], a, "labels", lambda label: {"name": label["name"]}),
        "comments": lambda _info, **a: connection(
            fake.comments(repo_i, n) or [], a, "comments", comment_node)}


def repository(fake: Fake, owner: str, name: str) -> dict[str, Any]:
    i = int(name.removeprefix("repo")) if name.removeprefix("repo").isdigit() else -1
    if owner != fake.org or not name.startswith("repo") or not 0 <= i < fake.repos:
        raise GraphQLError(f"Could not resolve to a Repository with the name '{owner}/{name}'.",
                           extensions={"type": "NOT_FOUND"})

    def issues_of(**args: Any) -> list[dict[str, Any]]:
        items = [x for x in fake.items(i) if "pull_request" not in x]
        if args.get("states"):
            items = [x for x in items if x["state"].upper() in args["states"]]
        since = (args.get("filterBy") or {}).get("since")
        if since is not None:
            items = [x for x in items if not older(x["updated_at"], since)]
        return items

    def issue(number: int) -> dict[str, Any] | None:
        found = [x for x in issues_of() if x["number"] == number]
        return issue_node(fake, i, found[0]) if found else None

    return {"name": name, "nameWithOwner": f"{fake.org}/{name}",
            "issue": lambda _info, number: issue(number),
            "issues": lambda _info, **a: connection(issues_of(**a), a, "issues",
                                                    lambda x: issue_node(fake, i, x))}


def cost(operation: OperationDefinitionNode, variables: dict[str, Any]) -> int:
    """Points a query costs, as GitHub counts them: each connection needs one request per
    node of its parent connection; their sum over 100, at least 1."""

    def first(field: FieldNode) -> int | None:
        for arg in field.arguments or ():
            if arg.name.value in ("first", "last"):
                value = arg.value
                if isinstance(value, VariableNode):
                    got = variables.get(value.name.value)
                    return got if isinstance(got, int) else None
                return int(value.value) if isinstance(value, IntValueNode) else None
        return None

    def walk(selections: tuple[SelectionNode, ...], parents: int) -> int:
        total = 0
        for selection in selections:
            if isinstance(selection, InlineFragmentNode):
                total += walk(selection.selection_set.selections, parents)
            elif isinstance(selection, FieldNode) and selection.selection_set is not None:
                n = first(selection)
                total += parents if n is not None else 0
                total += walk(selection.selection_set.selections, parents * (n or 1))
        return total

    return max(1, round(walk(operation.selection_set.selections, 1) / 100))


def answer(fake: Fake, request: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The answer (HTTP 200) to a POSTed ``{"query", "variables"}``, and its headers."""
    if not isinstance(request, dict) or not isinstance(request.get("query"), str):
        return {"errors": [{"message": "A query attribute must be specified and must be a "
                                       "string."}]}, {}
    variables = request.get("variables") or {}
    try:
        document = parse(request["query"])
    except GraphQLError as exc:
        return {"errors": [exc.formatted]}, {}
    invalid = validate(SCHEMA, document)
    if invalid:
        return {"errors": [e.formatted for e in invalid]}, {}
    operation = next(d for d in document.definitions if isinstance(d, OperationDefinitionNode))
    points = cost(operation, variables)
    spent = fake.spend_graphql(points)
    headers = {"x-ratelimit-limit": str(spent.limit), "x-ratelimit-remaining": str(
        spent.remaining), "x-ratelimit-used": str(spent.limit - spent.remaining),
        "x-ratelimit-reset": str(int(spent.reset_at)), "x-ratelimit-resource": "graphql"}
    if not spent.ok:
        return {"errors": [{"type": "RATE_LIMITED", "message": "API rate limit exceeded for "
                            "user ID 1. If you reach out to GitHub Support for help, please "
                            "include the request ID."}]}, headers
    root = {
        "repository": lambda _info, owner, name, followRenames=True: repository(
            fake, owner, name),
        "rateLimit": lambda _info, dryRun=False: {
            "cost": points, "limit": spent.limit, "nodeCount": 0,
            "remaining": spent.remaining, "used": spent.limit - spent.remaining,
            "resetAt": stamp(spent.reset_at)}}
    result = execute_sync(SCHEMA, document, root_value=root, variable_values=variables)
    body: dict[str, Any] = {"data": result.data}
    if result.errors:  # GitHub puts an error's type beside its message, not in extensions
        body["errors"] = [{**{k: v for k, v in e.formatted.items() if k != "extensions"},
                           **(e.extensions or {})} for e in result.errors]
    return body, headers
