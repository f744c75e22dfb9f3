"""A local fake of Jira Cloud's REST API v3, answering in its documented shapes:

- ``/rest/api/3/project/search``: ``startAt``/``maxResults`` (at most 50), ``total``, ``isLast``;
- ``/rest/api/3/search/jql``: ``nextPageToken`` cursor and ``isLast``, no total; only ``id``
  unless ``fields`` are asked for; 400 for an unbounded JQL;
- ``/rest/api/3/search``: 410 Gone (removed by Atlassian);
- ``/rest/api/3/issue/{key or id}/comment``: ``startAt``/``maxResults`` (at most 100),
  ``total``, the list under ``comments``, oldest first; 404 for an unknown issue;
- basic auth (email + API token), else 401.

Issue i was last updated ``i`` minutes before 2026-11-20T10:00:00.000+0000 (``updated(-60 * i)``:
index order is newest first); every third one (i % 3 == 0) has an assignee, the others
``assignee: null``. The search honours ``updated >= "yyyy-MM-dd HH:mm"`` (or a date
alone) in the JQL, read in the account's time zone, UTC here, as the values are written, and
``ORDER BY updated [ASC|DESC]``; other clauses are not evaluated. Tests change and add issues
at a time with ``change_issues`` and ``add_issues``; ``jqls`` holds every JQL asked.

Every issue has ``comments_per_issue`` comments (default 2), or ``comment_counts[key]``;
``add_comments`` adds some later, and changes the issue's ``updated`` as Jira does.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from integrations.fakeapi import FakeAPI, Handler

UNBOUNDED = ("Unbounded JQL queries are not allowed here. Please add a search restriction "
             "to your query.")


def project(i: int) -> dict[str, Any]:
    return {"id": str(10000 + i), "key": f"P{i}", "name": f"Project {i}",
            "projectTypeKey": "software"}


BASE = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
_SINCE = re.compile(r'\bupdated\s*>=\s*"(\d{4}[-/]\d{2}[-/]\d{2})(?: (\d{2}:\d{2}))?"',
                    re.IGNORECASE)
_ORDER = re.compile(r"\border\s+by\s+updated(?:\s+(asc|desc))?\s*$", re.IGNORECASE)


def updated(seconds: float) -> str:
    """A time as Jira writes it, ``seconds`` after 2026-11-20T10:00:00.000+0000."""
    when = BASE + timedelta(seconds=seconds)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}+0000"


def issue(i: int, *, when: float | None = None) -> dict[str, Any]:
    return {"id": str(20000 + i), "key": f"P{i % 7}-{i}",
            "fields": {"summary": f"Issue {i}", "status": {"name": "To Do"},
                       "issuetype": {"name": "Task"}, "project": {"key": f"P{i % 7}"},
                       "assignee": {"accountId": "5b10ac8d82e05b22cc7d4ef5",
                                    "displayName": "Ada Lovelace"} if i % 3 == 0 else None,
                       "created": "2026-11-01T10:00:00.000+0000",
                       "updated": updated(-60 * i if when is None else when),
                       "description": "long text"}}


def comment(i: int, k: int, *, when: float | None = None) -> dict[str, Any]:
    """Comment k of issue i (ids unique across issues)."""
    stamp = updated(-60 * i + k if when is None else when)
    author = {"accountId": "5b10a2844c20165700ede21g", "displayName": "Mia Krystof"}
    return {"id": str(1_000_000 + i * 1_000 + k), "author": author, "updateAuthor": author,
            "body": {"type": "doc", "version": 1, "content": [{"type": "paragraph", "content": [
                {"type": "text", "text": f"comment {k} on issue {i}"}]}]},
            "created": stamp, "updated": stamp, "jsdPublic": True}


def searched(issues: list[dict[str, Any]], jql: str) -> list[dict[str, Any]]:
    """The issues a JQL selects, in its order (only its ``updated >=`` and its ORDER BY)."""
    for day, hour in _SINCE.findall(jql):
        since = datetime.strptime(f"{day.replace('/', '-')} {hour or '00:00'}",
                                  "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
        issues = [i for i in issues
                  if datetime.fromisoformat(i["fields"]["updated"]) >= since]
    if order := _ORDER.search(jql):
        issues = sorted(issues, key=lambda i: datetime.fromisoformat(i["fields"]["updated"]),
                        reverse=(order[1] or "asc").lower() == "desc")
    return issues


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
            selected = searched(fake.all_issues(), jql)
            issues = [{"id": full["id"], **({"key": full["key"], "fields": {
                f: full["fields"].get(f) for f in wanted}} if wanted else {})}
                for full in selected[start:start + per]]
            nxt = start + per
            body: dict[str, Any] = {"issues": issues, "isLast": nxt >= len(selected)}
            if nxt < len(selected):
                body["nextPageToken"] = str(nxt)  # opaque to clients
            return self._json(body)
        parts = url.path.strip("/").split("/")
        if parts[:4] == ["rest", "api", "3", "issue"] and len(parts) == 6 and parts[5] == "comment":
            found = fake.comments(parts[4])
            if found is None:
                return self._send(404, json.dumps({"errorMessages": [
                    "Issue does not exist or you do not have permission to see it."]}).encode())
            start, per = int(q.get("startAt", 0)), min(100, int(q.get("maxResults", 100)))
            return self._json({"startAt": start, "maxResults": per, "total": len(found),
                               "comments": found[start:start + per]})
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
        self._issues: list[dict[str, Any]] | None = None  # made on first use
        self.comments_per_issue = 2
        self.comment_counts: dict[str, int] = {}  # issue key -> its number of comments
        self._comments: dict[int, list[dict[str, Any]]] = {}  # issue index -> made on first use

    def all_issues(self) -> list[dict[str, Any]]:
        """Every issue, in index order (copies)."""
        with self.server.lock:
            if self._issues is None:
                self._issues = [issue(i) for i in range(self.issues)]
            return [dict(i) for i in self._issues]

    def change_issues(self, indices: list[int], when: float) -> None:
        """Issues ``indices`` change at ``updated(when)`` (their summary says so)."""
        self.all_issues()
        with self.server.lock:
            assert self._issues is not None
            for i in indices:
                fields = dict(self._issues[i]["fields"])
                fields["updated"] = updated(when)
                fields["summary"] = f"{fields['summary']} (changed at {when:g})"
                self._issues[i] = {**self._issues[i], "fields": fields}

    def add_issues(self, count: int, when: float) -> list[dict[str, Any]]:
        """``count`` new issues, created at ``updated(when)``."""
        self.all_issues()
        with self.server.lock:
            assert self._issues is not None
            new = [issue(i, when=when) for i in range(len(self._issues),
                                                      len(self._issues) + count)]
            self._issues += new
            self.issues = len(self._issues)
        return new

    def index(self, key_or_id: str) -> int | None:
        """The index of the issue with that key or id (None: no such issue)."""
        for i, found in enumerate(self.all_issues()):
            if key_or_id in (found["key"], found["id"]):
                return i
        return None

    def comments(self, key_or_id: str) -> list[dict[str, Any]] | None:
        """The comments of an issue, oldest first (copies); None when there is no such issue."""
        i = self.index(key_or_id)
        if i is None:
            return None
        with self.server.lock:
            assert self._issues is not None
            if i not in self._comments:
                count = self.comment_counts.get(self._issues[i]["key"], self.comments_per_issue)
                self._comments[i] = [comment(i, k) for k in range(count)]
            return [dict(c) for c in self._comments[i]]

    def add_comments(self, index: int, count: int, when: float) -> list[dict[str, Any]]:
        """``count`` new comments on issue ``index`` at ``updated(when)``; the issue's
        ``updated`` moves to that time (as a new comment does in Jira)."""
        existing = self.comments(str(20000 + index))
        assert existing is not None, index
        with self.server.lock:
            assert self._issues is not None
            new = [comment(index, k, when=when)
                   for k in range(len(existing), len(existing) + count)]
            self._comments[index] += new
            fields = {**self._issues[index]["fields"], "updated": updated(when)}
            self._issues[index] = {**self._issues[index], "fields": fields}
        return new

    def expected_comments(self) -> set[str]:
        """The ids of every comment of every issue."""
        return {c["id"] for found in self.all_issues() for c in self.comments(found["id"]) or []}
