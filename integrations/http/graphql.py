"""GraphQL connections (Relay's cursor connections: GitHub v4, Shopify, GitLab, Linear).

Every page is a POST of ``{"query": …, "variables": {…}}`` to the kind's path; the variable
``after`` (``cursor_variable``) carries the connection's ``pageInfo.endCursor`` of the page
before, and ``pageInfo.hasNextPage`` false ends the paging. The connection is found at
``connection_path`` in the answer (``data.repository.issues``); its items are its ``nodes``,
or the ``node`` of each of its ``edges``.

    state          {"after": None}, then {"after": "<endCursor>"}: JSON, so a run resumes
    request        (path, the kind's query parameters): as every paginator
    payload        {"query": query, "variables": {**variables, after: cursor}}
    check          a body with ``errors`` raises GraphQLError (message and path of the first);
                   a rate-limit error (type RATE_LIMITED, code THROTTLED) RateLimited
    advance        hasNextPage false: the end; true without an endCursor: MalformedPage; the
                   endCursor just sent: PagingCycle (one seen earlier in the run: the run's
                   own check of repeated states)

A rate-limit error is transient (``retry_after`` from the response's rate-limit headers,
which also pause the source's shared limiter): a child kind's task retries it with its
backoff; a producer, which retries nothing itself, fails the run with the reason.

A partial answer (``data`` beside ``errors``) is never taken as a page: the connection may
lack items that the errors stand for, and a page read short would let the run delete them.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from integrations.errors import GraphQLError, MalformedPage, PagingCycle, RateLimited
from integrations.fetched import State
from integrations.http.paginators import BasePaginator
from integrations.http.retry import reset_wait, server_wait
from integrations.jsonpath import dig
from integrations.secrets import excerpt

# An error that says "too many requests" rather than "this query is wrong": GitHub's type,
# Shopify's (and Apollo's) extensions.code.
RATE_LIMITED = frozenset({"RATE_LIMITED", "THROTTLED"})


def declares(query: str, variable: str) -> bool:
    """The query text declares ``$variable`` (a variable sent but not declared is an error
    to most servers, and one declared but never sent is null: paging would restart)."""
    return re.search(rf"\${re.escape(variable)}\b", query) is not None


def check(where: str, response: httpx.Response, body: Any) -> None:
    """Raise when a GraphQL answer (HTTP 2xx) is an error: ``errors`` present and not empty.
    GraphQLError (permanent) names the first error's message and path, and how many more
    there are; a rate-limit error is RateLimited (transient), with the wait the response's
    rate-limit headers ask for, if any (their reset, though they say some budget is left: a
    query may cost more points than remain)."""
    if not isinstance(body, dict):
        raise MalformedPage(f"{where}: the GraphQL answer is not an object "
                            f"(got {type(body).__name__})")
    errors = body.get("errors")
    if not errors:
        return
    if not isinstance(errors, list):
        errors = [errors]
    first = errors[0] if isinstance(errors[0], dict) else {"message": errors[0]}
    message = excerpt(str(first.get("message", "(no message)")), 300)
    path = first.get("path")
    at = (" at " + ".".join(str(p) for p in path)) if isinstance(path, list) and path else ""
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    data = body.get("data")
    partial = isinstance(data, dict) and any(v is not None for v in data.values())
    partial_text = "; its partial data is not read" if partial else ""
    extensions = first.get("extensions")
    code = first.get("type") or (extensions.get("code") if isinstance(extensions, dict)
                                 else None)
    text = f'{where}: the GraphQL answer has errors: "{message}"{at}{more}{partial_text}'
    if isinstance(code, str) and code in RATE_LIMITED:
        wait = server_wait(response)
        raise RateLimited(f"{text} [{code}]", retry_after=reset_wait(response) if wait is None
                          else wait)
    raise GraphQLError(text, errors=errors)


def connection(where: str, body: Any, path: str) -> dict[str, Any]:
    """The connection object at ``path`` in the answer. Raises MalformedPage."""
    found = dig(body, path)
    if not isinstance(found, dict):
        raise MalformedPage(f"{where}: no GraphQL connection at {path!r} in the answer "
                            f"(got {type(found).__name__})")
    return found


def nodes(where: str, body: Any, path: str) -> list[Any]:
    """The items of the connection at ``path``: its ``nodes``, else the ``node`` of each of
    its ``edges``. Raises MalformedPage when it has neither list (or an edge is no object)."""
    found = connection(where, body, path)
    if isinstance(found.get("nodes"), list):
        return list(found["nodes"])
    edges = found.get("edges")
    if not isinstance(edges, list):
        raise MalformedPage(f"{where}: the connection at {path!r} has neither 'nodes' nor "
                            "'edges' (ask for one of them in the query)")
    if not all(isinstance(e, dict) and "node" in e for e in edges):
        raise MalformedPage(f"{where}: an edge of the connection at {path!r} has no 'node'")
    return [e["node"] for e in edges]


class GraphqlPaginator(BasePaginator):
    """Pages a Relay connection: POSTs ``query`` with ``variables`` (the kind's ``params``
    stay query parameters of the URL) and ``cursor_variable`` set to the last endCursor."""

    def __init__(self, *, query: str, connection_path: str,
                 variables: dict[str, Any] | None = None, cursor_variable: str = "after",
                 total_path: str | None = None, **kw: Any) -> None:
        super().__init__(limit_param=None, limit=1, **kw)  # the page size is a variable
        self.query = query
        self.variables = dict(variables or {})
        self.connection_path = connection_path
        self.cursor_variable = cursor_variable
        self.total_path = total_path

    def total(self, response: httpx.Response, body: Any) -> int | None:
        """The connection's ``totalCount`` (at ``total_path``), when the query asks for it."""
        if not self.total_path:
            return None
        total = dig(body, self.total_path)
        if not isinstance(total, int) or isinstance(total, bool):
            raise MalformedPage(f"{self._where(response)}: {self.total_path!r} is not an "
                                f"integer in the answer (got {total!r})")
        return total

    def first(self) -> State:
        return {"after": None}

    def request(self, state: State) -> tuple[str, dict[str, Any] | None]:
        return self.path, self.params or None

    def payload(self, state: State) -> dict[str, Any]:
        variables = dict(self.variables)
        if state["after"] is not None:  # left out on the first page: the query's default
            variables[self.cursor_variable] = state["after"]
        return {"query": self.query, "variables": variables}

    def check(self, response: httpx.Response, body: Any) -> None:
        check(self._where(response), response, body)

    def advance(self, state: State, response: httpx.Response, body: Any, items: list[Any]
                ) -> State | None:
        where = self._where(response)
        info = connection(where, body, self.connection_path).get("pageInfo")
        more = info.get("hasNextPage") if isinstance(info, dict) else None
        if not isinstance(more, bool):
            raise MalformedPage(f"{where}: {self.connection_path}.pageInfo.hasNextPage is not "
                                f"true or false (got {more!r}; ask for pageInfo {{ hasNextPage "
                                "endCursor }} in the query)")
        if not more:
            return None
        cursor = info.get("endCursor") if isinstance(info, dict) else None
        if cursor in (None, "") or not isinstance(cursor, str):
            raise MalformedPage(f"{where}: {self.connection_path}.pageInfo.hasNextPage is true "
                                f"but endCursor is {cursor!r}: there is no way to the next page")
        if cursor == state["after"]:
            raise PagingCycle(f"{where}: {self.connection_path}.pageInfo.endCursor did not "
                              f"advance ({cursor!r})")
        return {"after": cursor}

    def _where(self, response: httpx.Response) -> str:
        return f"POST {response.request.url.copy_with(query=None)}"
