"""A local fake of the GitHub REST API, answering in its documented shapes: Link pagination
(``page``/``per_page``, at most 100), ``x-ratelimit-*`` headers (reset in epoch seconds),
401 "Bad credentials" without the token, pull requests inside the issues list, and scripted
secondary limits (``fail(path, 403, headers={"retry-after": "1"})``)."""

from __future__ import annotations

import json
from typing import Any

from integrations.fakeapi import FakeAPI, Handler, link_page


def repo(org: str, i: int) -> dict[str, Any]:
    return {"id": 1000 + i, "name": f"repo{i}", "full_name": f"{org}/repo{i}", "private": False,
            "html_url": f"https://github.com/{org}/repo{i}", "default_branch": "main"}


def issue(repo_i: int, n: int, *, pull: bool) -> dict[str, Any]:
    item: dict[str, Any] = {"id": 5_000_000 + repo_i * 10_000 + n, "number": n,
                            "title": f"{'PR' if pull else 'Issue'} {n}", "state": "open",
                            "user": {"login": "octocat", "id": 1}}
    if pull:
        item["pull_request"] = {"url": f"https://api.github.com/repos/x/y/pulls/{n}"}
    return item


class GithubHandler(Handler):
    def do_GET(self) -> None:
        fake: FakeGithub = self.server.fake  # type: ignore[attr-defined]  # set on its HTTPServer below
        if (request := self._scripted()) is None:
            return
        url, query = request
        if self.headers.get("Authorization") != f"Bearer {fake.token}":
            return self._send(401, json.dumps({
                "message": "Bad credentials",
                "documentation_url": "https://docs.github.com/rest"}).encode())
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
        elif parts[:1] == ["repos"] and len(parts) == 4 and parts[3] in ("issues", "pulls"):
            i = int(parts[2].removeprefix("repo"))
            n_issues, n_pulls = fake.sizes.get(i, fake.default_size)
            everything = [issue(i, n, pull=n > n_issues) for n in range(1, n_issues + n_pulls + 1)]
            items = everything if parts[3] == "issues" else [x for x in everything
                                                             if "pull_request" in x]
        else:
            return self._send(404, b'{"message": "Not Found"}')
        page, link = link_page(items, base, query)
        return self._json(page, {**headers, **link})


class FakeGithub(FakeAPI):
    """``repos`` repositories in ``org``; repository i has ``sizes[i]`` = (issues, pull requests)
    (``default_size`` otherwise)."""

    handler = GithubHandler

    def __init__(self, *, org: str = "acme", token: str = "ghp_fake", repos: int = 3,
                 default_size: tuple[int, int] = (150, 40), rate_limit: float | None = None):
        super().__init__(rate_limit=rate_limit)
        self.server.fake = self  # type: ignore[attr-defined]  # the handler reads it back
        self.org, self.token, self.repos = org, token, repos
        self.default_size = default_size
        self.sizes: dict[int, tuple[int, int]] = {}

    def expected(self, kind: str) -> set[str]:
        out = set()
        for i in range(self.repos):
            if kind == "repository":
                out.add(str(repo(self.org, i)["id"]))
                continue
            n_issues, n_pulls = self.sizes.get(i, self.default_size)
            want_pull = kind == "pull_request"
            for n in range(1, n_issues + n_pulls + 1):
                if (n > n_issues) == want_pull:
                    out.add(str(issue(i, n, pull=want_pull)["id"]))
        return out

