"""A GraphQL API built with a real GraphQL server library (strawberry-graphql, Relay
connections, served by uvicorn in a process of its own), synced by a sluice.toml alone on real
workers into SQLite (tests/support/graphqlapi.py).

Issues page by ``edges { node }``, their comments (a child kind, ``{parent.number}`` in its
variables) by ``nodes``; the incremental run sends its ``since`` as a variable of the query;
an unknown repository is an error answered with HTTP 200, which fails the run with the
message and path; a wrong token is a 401. After every run the target is compared with what
the server itself answers.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tasks.operator.redisserver import RedisServer
from tests.support.configs import QUICK_RETRIES, rest_source, sqlite_target, toml
from tests.support.graphqlapi import GraphqlServer
from tests.support.workers import ROOT, SLUICE, Client, Workers

pytestmark = pytest.mark.integration

TOKEN = "gql-tok-5b0e2c7a-never-log-me"
PAGE = 40
SEEDED = 250

ISSUES_QUERY = """
query($owner: String!, $name: String!, $first: Int!, $after: String, $since: DateTime) {
  repository(owner: $owner, name: $name) {
    issues(first: $first, after: $after, since: $since) {
      edges { node { id number title updatedAt } }
      pageInfo { hasNextPage endCursor }
    }
  }
}
"""

COMMENTS_QUERY = """
query($owner: String!, $name: String!, $number: Int!, $after: String) {
  repository(owner: $owner, name: $name) {
    issue(number: $number) {
      comments(first: 2, after: $after) { nodes { id body } pageInfo { hasNextPage endCursor } }
    }
  }
}
"""

def issues_kind(source: str, kind: str, repo: str) -> str:
    """A kind of ``source`` that pages the issues of ``acme/REPO`` through GraphQL."""
    return f"""[sources.{source}.kinds.{kind}]
path = "/graphql"
[sources.{source}.kinds.{kind}.paginator]
type = "graphql"
connection_path = "data.repository.issues"
variables = {{ owner = "acme", name = "{repo}", first = {PAGE} }}
query = '''{ISSUES_QUERY}'''
"""


def graphql_source(url: str, source: str, token: str) -> str:
    return rest_source(url, f'auth = {{ type = "bearer", token = "{token}" }}', QUICK_RETRIES,
                       source=source)


def config_text(db: Path, url: str) -> str:
    return toml(
        sqlite_target(db), graphql_source(url, "gh", "${GRAPHQL_TOKEN}"),
        issues_kind("gh", "issues", "widgets"),
        """[sources.gh.kinds.issues.incremental]
cursor_path = "updatedAt"
param = "since"
cursor_type = "iso"
lookback = "1s"
""",
        f"""[sources.gh.kinds.comments]
parent = "issues"
path = "/graphql"
include_from_parent = ["number"]
[sources.gh.kinds.comments.paginator]
type = "graphql"
connection_path = "data.repository.issue.comments"
variables = {{ owner = "acme", name = "widgets", number = "{{parent.number}}" }}
query = '''{COMMENTS_QUERY}'''
""",
        # A repository the server does not have: it answers 200 with an error at "repository".
        issues_kind("gh", "lost", "gone"),
        graphql_source(url, "stranger", "not-the-token"),
        issues_kind("stranger", "issues", "widgets"))


@dataclass
class Synced:
    server: GraphqlServer
    workers: Workers
    client: Client
    db: Path
    config: Path

    def rows(self, source: str, kind: str) -> dict[str, dict[str, Any]]:
        with sqlite3.connect(self.db) as conn:
            found = {i: json.loads(d) for i, d in conn.execute(
                "SELECT identifier, data FROM entities WHERE source = ? AND kind = ?",
                (source, kind))}
        conn.close()
        return found

    def issues_asked(self, seen: int = 0) -> list[dict[str, Any]]:
        """The issue listings Sluice POSTed, after the first ``seen`` requests."""
        # TOML's ''' drops the newline that opens the query.
        return [r for r in self.server.served()[seen:] if r["query"] == ISSUES_QUERY.lstrip()]

    def comments_asked(self, seen: int = 0) -> list[dict[str, Any]]:
        return [r for r in self.server.served()[seen:]
                if r["query"] == COMMENTS_QUERY.lstrip()]


@pytest.fixture(scope="module")
def synced(tmp_path_factory) -> Iterator[Synced]:
    tmp = tmp_path_factory.mktemp("graphql")
    db = tmp / "db.sqlite"
    # A Redis of its own: the session's numbered databases belong to other modules, and the
    # session-wide pipelines' workers keep consuming theirs while this module runs.
    with GraphqlServer(tmp, token=TOKEN) as server, RedisServer() as redis_server:
        config = tmp / "sluice.toml"
        config.write_text(config_text(db, server.url))
        url = redis_server.url
        client = Client(url)
        workers = Workers(config=config, redis_url=url, log=tmp / "worker.log",
                          env={"GRAPHQL_TOKEN": TOKEN}).start()
        try:
            yield Synced(server, workers, client, db, config)
        finally:
            workers.stop()
            client.close()


def server_issues(s: Synced) -> dict[str, tuple[Any, ...]]:
    return {i: (n["number"], n["title"], n["updatedAt"]) for i, n in s.server.issues().items()}


def synced_issues(s: Synced) -> dict[str, tuple[Any, ...]]:
    return {i: (r["number"], r["title"], r["updatedAt"])
            for i, r in s.rows("gh", "issues").items()}


def synced_comments(s: Synced) -> dict[str, str]:
    return {i: r["body"] for i, r in s.rows("gh", "comments").items()}


def server_comments(s: Synced) -> dict[str, str]:
    return {i: c["body"] for i, c in s.server.comments().items()}


def test_a_full_run_pages_the_connections_and_lands_issues_and_comments(synced: Synced):
    # A day ago, a minute apart: the edits made later (stamped now) are newer than them all.
    day_ago = datetime.now(UTC) - timedelta(days=1)
    for i in range(SEEDED):
        synced.server.call("mutation($at: DateTime!) { addIssues(count: 1, updatedAt: $at) }",
                           at=(day_ago + timedelta(minutes=i)).isoformat())

    run = synced.client.resync("gh", "issues", timeout=120)

    assert run.state == "succeeded", run
    assert not run.incremental  # no watermark yet
    assert synced_issues(synced) == server_issues(synced)
    assert len(synced_issues(synced)) == SEEDED
    asked = synced.issues_asked()
    assert len(asked) == run.own("pages") == math.ceil(SEEDED / PAGE)
    assert all(r["method"] == "POST" and r["authorized"] for r in synced.server.served())
    # The first page leaves $after (and $since) out; each next one sends a new endCursor.
    assert asked[0]["variables"] == {"owner": "acme", "name": "widgets", "first": PAGE}
    afters = [r["variables"]["after"] for r in asked[1:]]
    assert len(set(afters)) == len(afters) == len(asked) - 1

    # Each issue's comments (number % 5 of them, 2 a page), by its number as an Int.
    comments = server_comments(synced)
    assert synced_comments(synced) == comments and len(comments) == 2 * SEEDED
    numbers = {r["variables"]["number"] for r in synced.comments_asked()}
    assert numbers == {n for n, _, _ in server_issues(synced).values()}
    assert synced.rows("gh", "comments")["C7-1"]["_parent_number"] == 7


def test_an_incremental_run_sends_since_as_a_variable_and_reads_only_the_changes(
        synced: Synced):
    issues = server_issues(synced)
    newest = max(issues.values(), key=lambda v: v[2])
    edited = [7, 42, 99, 120, 249]
    for number in edited:
        synced.server.call("mutation($n: Int!) { editIssue(number: $n, title: \"edited\") "
                           "{ id } }", n=number)
    added = synced.server.call("mutation { addIssues(count: 3) }")["addIssues"]
    seen = len(synced.server.served())

    run = synced.client.resync("gh", "issues", timeout=120)

    assert run.state == "succeeded" and run.incremental, run
    asked = synced.issues_asked(seen)
    since = (datetime.fromisoformat(newest[2]) - timedelta(seconds=1)).isoformat()
    assert {r["variables"]["since"] for r in asked} == {since}  # the watermark, 1 s back
    # The newest seeded issue (within the lookback), the edits and the additions: one page.
    assert len(asked) == run.own("pages") == 1
    assert run.own("items_fetched") == 1 + len(edited) + len(added)
    assert synced_issues(synced) == server_issues(synced)
    # Only the issues that changed fan out to their comments.
    numbers = {r["variables"]["number"] for r in synced.comments_asked(seen)}
    assert numbers == {SEEDED, *edited, *added}
    assert synced_comments(synced) == server_comments(synced)


def test_a_full_run_after_deletions_deletes_the_issues_and_their_comments(synced: Synced):
    for number in (3, 4, 150):
        assert synced.server.call("mutation($n: Int!) { deleteIssue(number: $n) }", n=number)

    run = synced.client.resync("gh", "issues", full=True, timeout=120)

    assert run.state == "succeeded" and not run.incremental, run
    assert synced_issues(synced) == server_issues(synced)
    assert synced_comments(synced) == server_comments(synced)
    assert not {"I3", "I4", "I150", "C3-0", "C4-3"} & (set(synced.rows("gh", "issues"))
                                                      | set(synced.rows("gh", "comments")))


def test_an_error_answered_200_fails_the_run_with_its_message_and_path(synced: Synced):
    run = synced.client.resync("gh", "lost")

    assert run.state == "failed", run
    said = run.reason + run.error
    assert "GraphQLError" in said
    assert "Could not resolve to a Repository with the name 'acme/gone'.\" at repository" \
        in said, said
    assert synced.rows("gh", "lost") == {}


def test_a_wrong_token_is_refused_and_never_shown(synced: Synced):
    run = synced.client.resync("stranger", "issues")

    assert run.state == "failed", run
    assert "POST" in run.reason + run.error and "401" in run.reason + run.error, run
    assert synced.rows("stranger", "issues") == {}
    assert TOKEN not in synced.workers.log.read_text(errors="replace")


def test_preview_reads_the_first_page_of_a_graphql_kind(synced: Synced):
    env = {**os.environ, "GRAPHQL_TOKEN": TOKEN, "SLUICE_REDIS_URL": synced.workers.redis_url}
    done = subprocess.run([*SLUICE, "preview", "gh", "issues", "--limit", "1", "--config",
                           str(synced.config)], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert f"{PAGE} items on the first page" in lines[0]
    assert json.loads(lines[1])["identifier"] == "I1"
