"""GitHub's GraphQL API (v4) for issues and their comments (``graphql = true``): the queries,
and the shapes they answer turned into the items the REST API (v3) lists, so they land in the
same rows as ever.

    ISSUES      repository(owner, name).issues(first, after, states, filterBy: {since}):
                the issues of one repository, each with its first ``first`` comments
                (``ISSUES_ONLY``: without them, when ``issue_comment`` is not synced)
    COMMENTS    repository(owner, name).issue(number).comments(first, after): the comments
                of one issue past those its issue brought (the nested connection, paged)

Every query also asks ``rateLimit { cost remaining resetAt }`` (``budget``).

The fields the REST items get, from GraphQL's:

    id              fullDatabaseId (a BigInt, sent as text: REST's ids no longer fit the Int
                    of databaseId, which GitHub deprecated for it)
    state           OPEN / CLOSED lowered, as REST spells it
    user, assignee  {"login": …}: a Bot's login gains REST's "[bot]" (GraphQL leaves it off);
                    the assignee is the first of ``assignees``, as REST's ``assignee``
    labels          [{"name": …}] (an issue has at most 100 labels)
    repository_url  ``{base_url}/repos/`` and the repository's ``nameWithOwner``, as REST
                    writes it
    created_at, updated_at, closed_at, number, title, body (comments): as they are

An issue carries its first comments under ``_comments`` (``{"nodes": [comment items],
"next": the endCursor when there are more}``): the children task takes them from there and
asks GitHub only for the rest.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from integrations.errors import MalformedPage

COMMENTS_KEY = "_comments"  # on an issue item: its first page of comments (see above)

_ACTOR = "author { __typename login }"
_COMMENT = f"fullDatabaseId body createdAt updatedAt {_ACTOR}"
_ISSUE = ("fullDatabaseId number title state createdAt updatedAt closedAt " + _ACTOR +
          " assignees(first: 1) { nodes { login } } labels(first: 100) { nodes { name } }")
_PAGE = "pageInfo { hasNextPage endCursor }"
_BUDGET = "rateLimit { cost remaining resetAt }"

_ISSUES = """query($owner: String!, $name: String!, $first: Int!, $after: String,
    $states: [IssueState!], $since: DateTime) {
  repository(owner: $owner, name: $name) {
    nameWithOwner
    issues(first: $first, after: $after, states: $states, filterBy: {since: $since}) {
      %s
      nodes { %s%s }
    }
  }
  %s
}"""
ISSUES = _ISSUES % (_PAGE, _ISSUE, f" comments(first: $first) {{ {_PAGE} nodes {{ {_COMMENT} }} }}",
                    _BUDGET)
ISSUES_ONLY = _ISSUES % (_PAGE, _ISSUE, "", _BUDGET)

COMMENTS = f"""query($owner: String!, $name: String!, $number: Int!, $first: Int!,
    $after: String) {{
  repository(owner: $owner, name: $name) {{
    issue(number: $number) {{
      comments(first: $first, after: $after) {{ {_PAGE} nodes {{ {_COMMENT} }} }}
    }}
  }}
  {_BUDGET}
}}"""

ISSUES_PATH = "data.repository.issues"
COMMENTS_PATH = "data.repository.issue.comments"


def _id(node: dict[str, Any], where: str) -> int:
    value = node.get("fullDatabaseId")
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise MalformedPage(f"{where}: a node has no fullDatabaseId (got {value!r})")


def actor(value: Any) -> dict[str, Any] | None:
    """REST's ``user`` of a GraphQL ``author`` (a Bot's login with "[bot]", as REST has it)."""
    if not isinstance(value, dict) or not isinstance(value.get("login"), str):
        return None
    login = value["login"]
    return {"login": f"{login}[bot]" if value.get("__typename") == "Bot" else login}


def _names(connection: Any, key: str) -> list[str]:
    nodes = connection.get("nodes") if isinstance(connection, dict) else None
    return [n[key] for n in nodes or [] if isinstance(n, dict) and isinstance(n.get(key), str)]


def comment(node: Any, where: str) -> dict[str, Any]:
    """A GraphQL IssueComment as the REST API lists it (the fields the mappings read)."""
    if not isinstance(node, dict):
        raise MalformedPage(f"{where}: a comment node is not an object")
    return {"id": _id(node, where), "body": node.get("body"), "user": actor(node.get("author")),
            "created_at": node.get("createdAt"), "updated_at": node.get("updatedAt")}


def issue(node: Any, repository: str, *, base_url: str, where: str) -> dict[str, Any]:
    """A GraphQL Issue of ``repository`` (``owner/repo``) as the REST API lists it, with its
    first comments under ``_comments`` when the query asked for them."""
    if not isinstance(node, dict):
        raise MalformedPage(f"{where}: an issue node is not an object")
    state = node.get("state")
    assignees = _names(node.get("assignees"), "login")
    item: dict[str, Any] = {
        "id": _id(node, where), "number": node.get("number"), "title": node.get("title"),
        "state": state.lower() if isinstance(state, str) else state,
        "user": actor(node.get("author")),
        "assignee": {"login": assignees[0]} if assignees else None,
        "labels": [{"name": name} for name in _names(node.get("labels"), "name")],
        "created_at": node.get("createdAt"), "updated_at": node.get("updatedAt"),
        "closed_at": node.get("closedAt"),
        "repository_url": f"{base_url.rstrip('/')}/repos/{repository}"}
    comments = node.get("comments")
    if isinstance(comments, dict):
        info = comments.get("pageInfo")
        more = isinstance(info, dict) and info.get("hasNextPage") is True
        item[COMMENTS_KEY] = {
            "nodes": [comment(c, where) for c in comments.get("nodes") or []],
            "next": info.get("endCursor") if more and isinstance(info, dict) else None}
    return item


def budget(body: Any, *, now: float | None = None) -> float | None:
    """Seconds until GitHub's GraphQL budget resets when what is left (``remaining``) would
    not pay for another query of this one's ``cost``; None while it would (or when the answer
    does not say)."""
    limit = body.get("data", {}).get("rateLimit") if isinstance(body, dict) and isinstance(
        body.get("data"), dict) else None
    if not isinstance(limit, dict):
        return None
    cost, remaining, reset = limit.get("cost"), limit.get("remaining"), limit.get("resetAt")
    if not isinstance(cost, int) or not isinstance(remaining, int) or remaining >= cost:
        return None
    try:
        at = datetime.fromisoformat(str(reset)).timestamp()
    except ValueError:
        return None
    return max(0.0, at - (time.time() if now is None else now))
