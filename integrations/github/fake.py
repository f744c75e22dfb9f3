"""A local fake of the GitHub REST API, answering in its documented shapes: Link pagination
(``page``/``per_page``, at most 100), ``x-ratelimit-*`` headers (reset in epoch seconds),
401 "Bad credentials" without the token, pull requests inside the issues list, and scripted
secondary limits (``fail(path, 403, headers={"retry-after": "1"})``).

Issues and pull requests carry ``updated_at`` (number n of a repository at ``at(n * 60)``,
``integrations.fakeapi.at``). The issues endpoint honours ``since`` (those updated at or
after it); both endpoints honour ``sort=updated`` with ``direction`` (desc by default, as
GitHub's); the pulls endpoint has no ``since`` and ignores it, as GitHub does. Tests change
and add items at a time with ``change_issues`` and ``add_issues``.

Issues carry ``repository_url`` (``https://api.github.com/repos/ORG/REPO``, as GitHub writes
it whatever the host); every third one (number n % 3 == 0) an assignee and a label, the others
``assignee: null`` and ``labels: []``; none is closed. Pull requests carry ``draft``,
``merged_at``, ``head.ref`` and ``base`` (``ref`` and ``repo.full_name``), repositories
``archived``, ``language`` and their dates.

``/repos/ORG/REPO/issues/N/comments`` lists issue N's comments in Link pages:
``comments_per_issue`` of them (default 2), or ``comment_counts[(repo, N)]``; ``add_comments``
adds some later, and changes the issue's ``updated_at`` as GitHub does. Every fifth comment
(k % 5 == 4) is by a bot (``dependabot[bot]``, as REST spells it).

``POST /graphql`` serves the same issues and comments through GitHub's GraphQL API
(``integrations.github.fakegraphql``), with its points budget (``graphql_budget``).
``latency`` (seconds) delays every answer, REST's and GraphQL's."""

from __future__ import annotations

import json
import math
import time
from typing import Any
from urllib.parse import SplitResult

from integrations.fakeapi import FakeAPI, Handler, at, link_page
from integrations.github import fakegraphql
from integrations.github.fakegraphql import Budget
from integrations.incremental import comparable, older


def repo(org: str, i: int) -> dict[str, Any]:
    return {"id": 1000 + i, "name": f"repo{i}", "full_name": f"{org}/repo{i}", "private": False,
            "html_url": f"https://github.com/{org}/repo{i}", "default_branch": "main",
            "archived": i % 4 == 3, "language": "Python" if i % 2 == 0 else None,
            "created_at": at(0), "updated_at": at(i * 60), "pushed_at": at(i * 60)}


def issue(repo_i: int, n: int, *, pull: bool, when: float | None = None, org: str = "acme"
          ) -> dict[str, Any]:
    """Issue (or pull request) n of repository ``repo_i``, last updated at ``at(when)``
    (default: ``at(n * 60)``, a minute apart)."""
    stamp = at(n * 60 if when is None else when)
    item: dict[str, Any] = {"id": 5_000_000 + repo_i * 10_000 + n, "number": n,
                            "repository_url": f"https://api.github.com/repos/{org}/repo{repo_i}",
                            "title": f"{'PR' if pull else 'Issue'} {n}", "state": "open",
                            "user": {"login": "octocat", "id": 1},
                            "created_at": stamp, "updated_at": stamp}
    # Every third one is assigned and labelled; the others have neither (labels: []).
    item.update(assignee={"login": "monalisa", "id": 3} if n % 3 == 0 else None,
                labels=[{"id": 208045946, "name": "bug"}] if n % 3 == 0 else [],
                closed_at=None)
    if pull:  # as the pulls endpoint lists it (the issues endpoint's copy is dropped)
        item["pull_request"] = {"url": f"https://api.github.com/repos/x/y/pulls/{n}"}
        item.update(draft=n % 2 == 0, merged_at=None, head={"ref": f"topic-{n}"},
                    base={"ref": "main", "repo": {"full_name": f"{org}/repo{repo_i}"}})
    return item


def comment(org: str, repo_i: int, n: int, k: int, *, when: float | None = None
            ) -> dict[str, Any]:
    """Comment k of issue n of repository ``repo_i`` (ids unique across repositories)."""
    stamp = at(n * 60 + k if when is None else when)
    user = ({"login": "dependabot[bot]", "id": 49699333, "type": "Bot"} if k % 5 == 4
            else {"login": "hubot", "id": 2, "type": "User"})
    return {"id": 7_000_000_000 + repo_i * 10_000_000 + n * 1_000 + k,
            "body": f"comment {k} on {org}/repo{repo_i}#{n}", "user": user,
            "issue_url": f"https://api.github.com/repos/{org}/repo{repo_i}/issues/{n}",
            "author_association": "MEMBER", "created_at": stamp, "updated_at": stamp}


def listed(items: list[dict[str, Any]], query: dict[str, str], *, since: bool
           ) -> list[dict[str, Any]]:
    """The items a query asks for: ``since`` (where the endpoint has it), ``sort=updated``."""
    if since and "since" in query:
        if comparable(query["since"]) is None:
            raise ValueError(query["since"])
        items = [i for i in items if not older(i["updated_at"], query["since"])]
    if query.get("sort") == "updated":
        items = sorted(items, key=lambda i: comparable(i["updated_at"]) or 0.0,
                       reverse=query.get("direction", "desc") == "desc")
    return items


class GithubHandler(Handler):
    def _start(self) -> tuple[FakeGithub, SplitResult, dict[str, str]] | None:
        """The fake, the request's URL and query, or None when it is answered already (a scripted
        fault, no token)."""
        fake: FakeGithub = self.server.fake  # type: ignore[attr-defined]  # set on its HTTPServer below
        if self.server.latency:
            time.sleep(self.server.latency)
        if (request := self._scripted()) is None:
            return None
        if self.headers.get("Authorization") != f"Bearer {fake.token}":
            self._send(401, json.dumps({
                "message": "Bad credentials",
                "documentation_url": "https://docs.github.com/rest"}).encode())
            return None
        return fake, *request

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if (started := self._start()) is None:
            return
        fake, url, _ = started
        if url.path != "/graphql":
            return self._send(404, b'{"message": "Not Found"}')
        try:
            request = json.loads(body)
        except ValueError:
            return self._send(400, b'{"message": "Problems parsing JSON"}')
        answer, headers = fakegraphql.answer(fake, request)
        return self._json(answer, headers)

    def do_GET(self) -> None:
        if (started := self._start()) is None:
            return
        fake, url, query = started
        limited = self.server.take_token()
        headers: dict[str, str] = {}
        if limited is not None:
            status, headers = limited
            headers = {k.lower(): v for k, v in headers.items()}
            headers["x-ratelimit-reset"] = str(int(float(headers["x-ratelimit-reset"])) + 1)
            headers["x-ratelimit-resource"] = "core"
            if status != 200:
                return self._send(403, b'{"message": "API rate limit exceeded"}', headers)
        parts = url.path.strip("/").split("/")
        base = f"http://{self.headers['Host']}{url.path}"
        if parts[:1] == ["orgs"] and parts[2:] == ["repos"] and parts[1] == fake.org:
            items = [repo(fake.org, i) for i in range(fake.repos)]
        elif (parts[:1] == ["repos"] and len(parts) == 6 and parts[1] == fake.org
              and parts[3] == "issues" and parts[5] == "comments" and parts[4].isdigit()):
            found = fake.comments(int(parts[2].removeprefix("repo")), int(parts[4]))
            if found is None:
                return self._send(404, b'{"message": "Not Found"}')
            items = found
        elif parts[:1] == ["repos"] and len(parts) == 4 and parts[3] in ("issues", "pulls"):
            everything = fake.items(int(parts[2].removeprefix("repo")))
            pulls = parts[3] == "pulls"
            try:
                items = listed([x for x in everything if "pull_request" in x or not pulls],
                               query, since=not pulls)
            except ValueError:
                return self._send(422, b'{"message": "Validation Failed"}')
        else:
            return self._send(404, b'{"message": "Not Found"}')
        page, link = link_page(items, base, query)
        return self._json(page, {**headers, **link})


class FakeGithub(FakeAPI):
    """``repos`` repositories in ``org``; repository i has ``sizes[i]`` = (issues, pull requests)
    (``default_size`` otherwise): issues are numbers 1..issues, pull requests the next ones."""

    handler = GithubHandler

    def __init__(self, *, org: str = "acme", token: str = "ghp_fake", repos: int = 3,
                 default_size: tuple[int, int] = (150, 40), rate_limit: float | None = None):
        super().__init__(rate_limit=rate_limit)
        self.server.fake = self  # type: ignore[attr-defined]  # the handler reads it back
        self.org, self.token, self.repos = org, token, repos
        self.default_size = default_size
        self.sizes: dict[int, tuple[int, int]] = {}
        self._items: dict[int, list[dict[str, Any]]] = {}  # made on first use, from sizes
        self.comments_per_issue = 2
        self.comment_counts: dict[tuple[int, int], int] = {}  # (repository, number) -> count
        self._comments: dict[tuple[int, int], list[dict[str, Any]]] = {}  # made on first use
        self.graphql = Budget(limit=5000, remaining=5000, reset_at=math.ceil(time.time()) + 3600)

    def graphql_budget(self, remaining: int, reset_in: float) -> None:
        """GraphQL's points: ``remaining`` left until ``reset_in`` seconds from now (a whole
        second, as GitHub's resets are)."""
        with self.server.lock:
            self.graphql = Budget(self.graphql.limit, remaining, math.ceil(time.time() + reset_in))

    def spend_graphql(self, points: int) -> Budget:
        """Spend a query's points (after a reset when its time has come): the budget as it is
        then, ``ok`` False (nothing spent) when what is left does not pay for them."""
        with self.server.lock:
            budget = self.graphql
            if time.time() >= budget.reset_at:
                budget = Budget(budget.limit, budget.limit, math.ceil(time.time()) + 3600)
            ok = points <= budget.remaining
            self.graphql = Budget(budget.limit, budget.remaining - points if ok else
                                  budget.remaining, budget.reset_at, ok=ok)
            return self.graphql

    def items(self, i: int) -> list[dict[str, Any]]:
        """Repository i's issues and pull requests, by number (a copy)."""
        with self.server.lock:
            if i not in self._items:
                n_issues, n_pulls = self.sizes.get(i, self.default_size)
                self._items[i] = [issue(i, n, pull=n > n_issues, org=self.org)
                                  for n in range(1, n_issues + n_pulls + 1)]
            return [dict(x) for x in self._items[i]]

    def change_issues(self, i: int, numbers: list[int], when: float) -> None:
        """Issues or pull requests ``numbers`` of repository i change at ``at(when)``."""
        self.items(i)
        with self.server.lock:
            for item in self._items[i]:
                if item["number"] in numbers:
                    item["updated_at"] = at(when)
                    item["title"] = f"{item['title']} (changed at {when:g})"

    def add_issues(self, i: int, count: int, when: float, *, pull: bool = False
            ) -> list[dict[str, Any]]:
        """``count`` new issues (or pull requests) in repository i, created at ``at(when)``."""
        self.items(i)
        with self.server.lock:
            items = self._items[i]
            top = max((x["number"] for x in items), default=0)
            new = [issue(i, n, pull=pull, when=when, org=self.org)
                   for n in range(top + 1, top + count + 1)]
            items += new
        return new

    def comments(self, i: int, n: int) -> list[dict[str, Any]] | None:
        """The comments of issue (or pull request) n of repository i (copies); None when
        there is no such issue."""
        if not 0 <= i < self.repos or n not in {x["number"] for x in self.items(i)}:
            return None
        with self.server.lock:
            if (i, n) not in self._comments:
                count = self.comment_counts.get((i, n), self.comments_per_issue)
                self._comments[(i, n)] = [comment(self.org, i, n, k) for k in range(count)]
            return [dict(c) for c in self._comments[(i, n)]]

    def add_comments(self, i: int, n: int, count: int, when: float) -> list[dict[str, Any]]:
        """``count`` new comments on issue n of repository i at ``at(when)``; the issue's
        ``updated_at`` moves to that time (as a new comment does on GitHub)."""
        existing = self.comments(i, n)
        assert existing is not None, (i, n)
        with self.server.lock:
            top = len(existing)
            new = [comment(self.org, i, n, k, when=when) for k in range(top, top + count)]
            self._comments[(i, n)] += new
            for item in self._items[i]:
                if item["number"] == n:
                    item["updated_at"] = at(when)
        return new

    def expected(self, kind: str) -> set[str]:
        out = set()
        for i in range(self.repos):
            if kind == "repository":
                out.add(str(repo(self.org, i)["id"]))
                continue
            if kind == "issue_comment":  # of the issues (not of the pull requests)
                out |= {str(c["id"]) for x in self.items(i) if "pull_request" not in x
                        for c in self.comments(i, x["number"]) or []}
                continue
            want_pull = kind == "pull_request"
            out |= {str(x["id"]) for x in self.items(i) if ("pull_request" in x) == want_pull}
        return out
