"""A local fake of Jira Cloud's REST API v3, answering in its documented shapes:

- ``/rest/api/3/project/search``: ``startAt``/``maxResults`` (at most 50), ``total``, ``isLast``;
- ``/rest/api/3/search/jql``: ``nextPageToken`` cursor and ``isLast``, no total; only ``id``
  unless ``fields`` are asked for; 400 for an unbounded JQL;
- ``/rest/api/3/search``: 410 Gone (removed by Atlassian);
- basic auth (email + API token), else 401.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from integrations.fakeapi import FakeAPI, Handler

UNBOUNDED = ("Unbounded JQL queries are not allowed here. Please add a search restriction "
             "to your query.")


def project(i: int) -> dict[str, Any]:
    return {"id": str(10000 + i), "key": f"P{i}", "name": f"Project {i}",
            "projectTypeKey": "software"}


def issue(i: int) -> dict[str, Any]:
    return {"id": str(20000 + i), "key": f"P{i % 7}-{i}",
            "fields": {"summary": f"Issue {i}", "status": {"name": "To Do"},
                       "issuetype": {"name": "Task"}, "project": {"key": f"P{i % 7}"},
                       "assignee": None, "created": "2026-11-01T10:00:00.000+0000",
                       "updated": "2026-11-20T10:00:00.000+0000", "description": "long text"}}


class JiraHandler(Handler):
    def do_GET(self) -> None:
        fake: FakeJira = self.server.fake  # type: ignore[attr-defined]  # set on its HTTPServer below
        if (request := self._scripted()) is None:
            return
        url, q = request
        expected = "Basic " + base64.b64encode(f"{fake.email}:{fake.token}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            return self._send(401, b'{"errorMessages": ["Client must be authenticated"]}')
        if url.path == "/rest/api/3/search":
            return self._send(410, json.dumps({"errorMessages": [
                "The requested API has been removed. Please migrate to the "
                "/rest/api/3/search/jql API."]}).encode())
        if url.path == "/rest/api/3/project/search":
            start, per = int(q.get("startAt", 0)), min(50, int(q.get("maxResults", 50)))
            values = [project(i) for i in range(start, min(fake.projects, start + per))]
            return self._json({"self": self.path, "maxResults": per, "startAt": start,
                               "total": fake.projects, "isLast": start + per >= fake.projects,
                               "values": values})
        if url.path == "/rest/api/3/search/jql":
            jql = q.get("jql", "").strip()
            if not jql or jql.upper().startswith("ORDER BY"):
                return self._send(400, json.dumps({"errorMessages": [UNBOUNDED]}).encode())
            fake.jqls.append(jql)
            start = int(q.get("nextPageToken", "0") or 0)
            per = min(5000, int(q.get("maxResults", 50)))
            wanted = [f for f in q.get("fields", "").split(",") if f]
            issues = []
            for i in range(start, min(fake.issues, start + per)):
                full = issue(i)
                issues.append({"id": full["id"], **({"key": full["key"], "fields": {
                    f: full["fields"].get(f) for f in wanted}} if wanted else {})})
            nxt = start + per
            body: dict[str, Any] = {"issues": issues, "isLast": nxt >= fake.issues}
            if nxt < fake.issues:
                body["nextPageToken"] = str(nxt)  # opaque to clients
            return self._json(body)
        return self._send(404, b'{"errorMessages": ["Not found"]}')


class FakeJira(FakeAPI):
    handler = JiraHandler

    def __init__(self, *, email: str = "bot@example.com", token: str = "jira-fake-token",
                 projects: int = 120, issues: int = 430, rate_limit: float | None = None):
        super().__init__(rate_limit=rate_limit)
        self.server.fake = self  # type: ignore[attr-defined]  # the handler reads it back
        self.email, self.token = email, token
        self.projects, self.issues = projects, issues
        self.jqls: list[str] = []
