"""GitHub and Jira through real workers: partitions per repository, Jira's two pagings."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from integrations.fakeapi import at
from integrations.github.fake import FakeGithub
from integrations.jira.fake import FakeJira
from tasks.operator.redisserver import RedisServer
from tests.support.workers import Client, Workers

pytestmark = pytest.mark.integration


def rows(db: Path, source: str, kind: str) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {i for (i,) in conn.execute(
            "SELECT identifier FROM entities WHERE source = ? AND kind = ?", (source, kind))}


def test_github_and_jira_sync_through_real_workers(tmp_path: Path, redis_server: RedisServer):
    with FakeGithub(repos=4, rate_limit=50) as gh, FakeJira(projects=75, issues=260) as jira:
        gh.sizes[3] = (0, 0)
        config = tmp_path / "sluice.toml"
        config.write_text(f"""
[target]
path = "{tmp_path / 'db.sqlite'}"

[sources.gh]
integration = "github"
org = "{gh.org}"
token = "${{TEST_GITHUB_TOKEN}}"
base_url = "{gh.url}"
rate_limit = 40

[sources.jira]
integration = "jira"
base_url = "{jira.url}"
email = "{jira.email}"
api_token = "${{TEST_JIRA_TOKEN}}"
page_size = 100
""")
        url = redis_server.url.rsplit("/", 1)[0] + "/8"
        env = {"TEST_GITHUB_TOKEN": gh.token, "TEST_JIRA_TOKEN": jira.token}
        with Workers(config=config, redis_url=url, log=tmp_path / "w.log", env=env) as workers:
            client = Client(url)
            runs = {(s, k): client.start(s, k) for s, k in [
                ("gh", "repository"), ("gh", "issue"), ("gh", "pull_request"),
                ("jira", "project"), ("jira", "issue")]}
            done = {key: client.wait(r.run_id, timeout=90) for key, r in runs.items()}
            issue_run = done[("gh", "issue")]
            parts = client.redis.smembers(f"sluice:run:{issue_run.run_id}:partitions_done")
            client.close()
            log = workers.log.read_text()
        db = tmp_path / "db.sqlite"
        assert all(r.state == "succeeded" for r in done.values()), done
        for kind in ("repository", "issue", "pull_request"):
            assert rows(db, "gh", kind) == gh.expected(kind)
        assert issue_run.partitions == 4 and len(parts) == 4  # one per repository
        assert rows(db, "jira", "project") == {str(10000 + i) for i in range(75)}
        assert rows(db, "jira", "issue") == {str(20000 + i) for i in range(260)}
        assert not [r for r in gh.requests("/") if r[3] == 403]  # the shared limit kept us under
        assert gh.token not in log and jira.token not in log


def titles(db: Path, source: str, kind: str, path: str) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute(
            f"SELECT identifier, json_extract(data, '$.{path}') FROM entities"
            " WHERE source = ? AND kind = ?", (source, kind)).fetchall())


def marks(db: Path, source: str, kind: str) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT part, value FROM sluice_watermarks"
                                 " WHERE source = ? AND kind = ?", (source, kind)).fetchall())


def asked(fake: FakeGithub | FakeJira, path: str) -> list[dict[str, str]]:
    """The query of every GET under ``path`` so far (and forget them)."""
    got = [dict(parse_qsl(urlsplit(r[2]).query)) for r in fake.requests(path) if r[1] == "GET"]
    with fake.server.lock:
        fake.state.log.clear()
    return got


def test_github_and_jira_incremental_through_real_workers(tmp_path: Path,
                                                          redis_server: RedisServer):
    """The first run reads everything; the next reads what changed since each repository's
    watermark (issues: since; pull requests: newest first until an older one), and Jira's
    since its watermark, in the JQL."""
    with FakeGithub(repos=3) as gh, FakeJira(projects=5, issues=120) as jira:
        # Issue n of a repository is updated at at(n * 60); pull requests follow the issues.
        gh.sizes.update({0: (30, 10), 1: (12, 4), 2: (0, 0)})
        config = tmp_path / "sluice.toml"
        db = tmp_path / "db.sqlite"
        config.write_text(f"""
[target]
path = "{db}"

[sources.gh]
integration = "github"
org = "{gh.org}"
token = "{gh.token}"
base_url = "{gh.url}"
kinds = ["issue", "pull_request"]
incremental = true

[sources.jira]
integration = "jira"
base_url = "{jira.url}"
email = "{jira.email}"
api_token = "{jira.token}"
kinds = ["issue"]
page_size = 50
incremental = true
""")
        url = redis_server.url.rsplit("/", 1)[0] + "/11"
        kinds = [("gh", "issue"), ("gh", "pull_request"), ("jira", "issue")]
        with Workers(config=config, redis_url=url, log=tmp_path / "w.log"):
            client = Client(url)
            try:
                first = {k: client.resync(*k, timeout=90) for k in kinds}
                asked_gh, asked_jira = asked(gh, "/repos/"), asked(jira, "/rest/")
                kept = {k: marks(db, *k) for k in kinds}
                gh.change_issues(0, [3, 5, 33], when=10_000)  # two issues, a pull request
                new_issue = gh.add_issues(1, 1, when=10_100)[0]
                jira.change_issues([50, 60], when=3_600)
                new_jira = jira.add_issues(2, when=3_700)
                second = {k: client.resync(*k, timeout=90) for k in kinds}
            finally:
                client.close()

        assert all(r.state == "succeeded" and not r.incremental for r in first.values()), first
        assert not any("since" in q for q in asked_gh)
        assert all(q["sort"] == "updated" for q in asked_gh if "sort" in q)
        assert asked_jira and all(q["jql"] == "updated >= -30d ORDER BY updated DESC"
                                  for q in asked_jira)
        assert first[("gh", "issue")].items_written == 30 + 12
        assert first[("jira", "issue")].items_written == 120
        # Per repository: the newest updated_at of its own issues (repo2 has none yet).
        assert kept[("gh", "issue")] == {'"acme/repo0"': f'"{at(30 * 60)}"',
                                         '"acme/repo1"': f'"{at(12 * 60)}"'}
        assert kept[("gh", "pull_request")] == {'"acme/repo0"': f'"{at(40 * 60)}"',
                                                '"acme/repo1"': f'"{at(16 * 60)}"'}
        assert kept[("jira", "issue")] == {"null": '"2026-11-20T10:00:00.000+0000"'}

        assert all(r.state == "succeeded" and r.incremental and r.deleted == 0
                   for r in second.values()), second
        since: dict[str, set[str | None]] = {}
        for _, _, path, _ in gh.requests("/repos/"):
            url = urlsplit(path)
            if url.path.endswith("/issues"):
                since.setdefault(url.path, set()).add(dict(parse_qsl(url.query)).get("since"))
        log = asked(gh, "/repos/")
        # Issues: each repository asked since its own watermark minus the 2m lookback, one
        # without a watermark asked for everything.
        assert since == {"/repos/acme/repo0/issues": {at(30 * 60 - 120)},
                         "/repos/acme/repo1/issues": {at(12 * 60 - 120)},
                         "/repos/acme/repo2/issues": {None}}
        # repo0: 28, 29, 30 (within the lookback) and the changed 3 and 5; repo1: 10, 11, 12
        # and the new one (the pull requests the issues list holds are not issues).
        assert second[("gh", "issue")].items_fetched == 5 + 4
        # Pull requests: newest first, no since; repo0: 33 (changed), 40, 39, 38 (38 is the
        # watermark minus the lookback: kept), then 37 ends the paging; repo1: 16, 15, 14.
        assert all("since" not in q and q["direction"] == "desc" for q in log if "sort" in q)
        assert second[("gh", "pull_request")].items_fetched == 4 + 3
        for kind in ("issue", "pull_request"):
            assert rows(db, "gh", kind) == gh.expected(kind)  # the target matches the API
        got = titles(db, "gh", "issue", "title") | titles(db, "gh", "pull_request", "title")
        changed = {str(5_000_000 + n): t for n, t in [(3, "Issue 3"), (5, "Issue 5"),
                                                      (33, "PR 33")]}
        assert all(got[i] == f"{t} (changed at 10000)" for i, t in changed.items())
        assert got[str(new_issue["id"])] == new_issue["title"]
        assert marks(db, "gh", "issue") == {'"acme/repo0"': f'"{at(10_000)}"',
                                            '"acme/repo1"': f'"{at(10_100)}"'}
        assert marks(db, "gh", "pull_request")['"acme/repo0"'] == f'"{at(10_000)}"'

        # Jira: since the watermark minus the 5m lookback, to the minute.
        jqls = {q["jql"] for q in asked(jira, "/rest/api/3/search/jql")}
        assert jqls == {'updated >= "2026-11-20 09:55" AND (updated >= -30d) '
                        "ORDER BY updated DESC"}
        # The new, the changed, then issues 0..5 (updated within the lookback).
        assert second[("jira", "issue")].items_fetched == 2 + 2 + 6
        summaries = titles(db, "jira", "issue", "fields.summary")
        assert len(summaries) == 122
        assert summaries["20050"] == "Issue 50 (changed at 3600)"
        assert {n["id"] for n in new_jira} <= set(summaries)
        assert marks(db, "jira", "issue") == {"null": '"2026-11-20T11:01:40.000+0000"'}
