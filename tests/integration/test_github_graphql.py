"""GitHub through GraphQL (``graphql = true``) on real workers and a real Redis, against the
GitHub fake's ``/graphql``: the same typed rows as the REST path in a fraction of the
requests (an issue with more than 100 comments included); a GraphQL ``errors`` body fails the
run naming its message and path; a points budget that runs out pauses the source until its
reset and the run goes on; one whose reset is too far fails the run with the reason."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integrations.github.fake import FakeGithub
from tasks.operator.redisserver import RedisServer
from tasks.runs import keys
from tasks.targets.typed import FIXED
from tests.support.workers import Client, Workers

pytestmark = pytest.mark.integration

KINDS = 'kinds = ["issue", "issue_comment"]'
SOURCE = """
[sources.{name}]
integration = "github"
org = "{org}"
token = "${{TEST_GITHUB_TOKEN}}"
base_url = "{url}"
{kinds}
{extra}
"""
BIG = (0, 7)  # repo0's issue 7: 230 comments, three GraphQL pages (100 with its issue)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeGithub, Client, Path]]:
    tmp = tmp_path_factory.mktemp("ghgraphql")
    db = tmp / "db.sqlite"
    with FakeGithub(repos=3, default_size=(150, 40)) as gh, RedisServer() as redis_server:
        gh.comment_counts[BIG] = 230
        sources = [("rest", ""), ("gql", "graphql = true"),
                   # Fails on purpose: a source of its own, so its pauses hold no other.
                   ("late", "graphql = true\nhttp = { retries = 1, max_retry_after = 5 }")]
        config = tmp / "sluice.toml"
        config.write_text(f'[target]\npath = "{db}"\n' + "".join(
            SOURCE.format(name=name, org=gh.org, url=gh.url, kinds=KINDS, extra=extra)
            for name, extra in sources))
        with Workers(config=config, redis_url=redis_server.url, log=tmp / "w.log",
                     env={"TEST_GITHUB_TOKEN": gh.token}):
            client = Client(redis_server.url)
            try:
                yield gh, client, db
            finally:
                client.close()


def table(db: Path, name: str) -> dict[str, dict[str, Any]]:
    """A typed table's rows by identifier, without the run's bookkeeping and ``_raw`` (the
    item as each path fetched it)."""
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return {r["identifier"]: {k: v for k, v in dict(r).items() if k not in FIXED}
                for r in conn.execute(f"SELECT * FROM {name}")}


def columns(db: Path, name: str) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        return {r[1]: r[2] for r in conn.execute(f"PRAGMA table_info({name})")}


def requests(gh: FakeGithub) -> list[tuple[float, str, str, int]]:
    """Every request so far (and forget them)."""
    with gh.server.lock:
        got = list(gh.state.log)
        gh.state.log.clear()
    return got


def test_graphql_lands_the_rows_rest_does_in_a_fraction_of_the_requests(setup: Any) -> None:
    gh, client, db = setup
    requests(gh)
    rest = client.resync("rest", "issue", timeout=180)
    by_rest = requests(gh)
    gql = client.resync("gql", "issue", timeout=180)
    by_gql = requests(gh)

    assert rest.state == gql.state == "succeeded", (rest, gql)
    for kind in ("issue", "issue_comment"):
        assert columns(db, f"rest_{kind}") == columns(db, f"gql_{kind}")
        rows = table(db, f"gql_{kind}")
        assert rows == table(db, f"rest_{kind}")
        assert set(rows) == gh.expected(kind)
    comments = table(db, "gql_issue_comment")
    big = [r for r in comments.values() if r["issue_number"] == BIG[1]
           and r["repository"] == f"{gh.org}/repo{BIG[0]}"]
    assert len(big) == 230 and {r["author"] for r in big} == {"hubot", "dependabot[bot]"}
    assert gql.children["issue_comment"]["items_written"] == 449 * 2 + 230
    # REST: the repositories, 2 pages of issues per repository, a request per issue's
    # comments (3 for the big one). GraphQL: the repositories (REST), 2 pages of issues with
    # their first comments per repository, 2 more of the big issue's.
    assert len(by_rest) == 1 + 3 * 2 + 450 + 2
    assert [r[1] for r in by_gql].count("POST") == 3 * 2 + 2 and len(by_gql) == 1 + 8
    assert all(r[3] == 200 for r in by_rest + by_gql)


def test_graphql_errors_fail_the_run_naming_message_and_path(setup: Any) -> None:
    gh, client, _ = setup
    gh.fail("/graphql", 200, times=1, body='{"data": {"repository": null}, "errors": [{'
            '"message": "Something went wrong while executing your query.", '
            '"path": ["repository", "issues"]}]}')
    run = client.resync("late", "issue", timeout=120)
    assert run.state == "failed", run
    assert "Something went wrong while executing your query." in run.error
    assert "at repository.issues" in run.error and "GraphQLError" in run.error


def test_a_spent_budget_pauses_the_source_until_its_reset(setup: Any) -> None:
    """An answer whose rateLimit leaves less than its cost (3 points a page of issues with
    their comments, labels and assignees) pauses every caller until resetAt; a query already
    out that GitHub refuses (RATE_LIMITED) is asked again after it. The run ends clean."""
    gh, client, db = setup
    client.redis.hdel(keys.METRICS, "rate_limit_wait_seconds|gql|-")
    gh.graphql_budget(remaining=4, reset_in=3)
    run = client.resync("gql", "issue", timeout=180)
    assert run.state == "succeeded", run
    assert set(table(db, "gql_issue_comment")) == gh.expected("issue_comment")
    waited = float(client.redis.hget(keys.METRICS, "rate_limit_wait_seconds|gql|-") or 0)
    assert waited > 0
    assert gh.graphql.remaining < gh.graphql.limit - 3  # spent after the reset


def test_a_budget_reset_too_far_fails_the_run_with_the_reason(setup: Any) -> None:
    gh, client, _ = setup
    gh.graphql_budget(remaining=0, reset_in=3600)
    try:
        run = client.resync("late", "issue", timeout=120)
    finally:
        gh.graphql_budget(remaining=5000, reset_in=3600)
    assert run.state == "failed", run
    assert "RateLimited" in run.error and "API rate limit exceeded" in run.error
    assert "[RATE_LIMITED]" in run.error
