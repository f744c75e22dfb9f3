"""GitHub and Jira through real workers: partitions per repository, Jira's two pagings."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from integrations.fakeapi import at
from integrations.github.fake import FakeGithub
from integrations.jira.fake import FakeJira
from tests.support.asked import queries_asked
from tests.support.workers import Client, Workers

pytestmark = pytest.mark.integration

# These tests read items whole from ``entities`` (their JSON paths: fields.summary,
# _parent_number): the sources turn the default mappings off, else a target with typed tables
# writes them to {source}_{kind}. The defaults are tested in tests/unit/test_default_mappings.


def write_config(tmp: Path, gh: FakeGithub, jira: FakeJira, *, gh_keys: str = "",
                 jira_keys: str = "", mappings: bool = False) -> tuple[Path, dict[str, str]]:
    """A sluice.toml with a GitHub and a Jira source on the fakes and a SQLite target in
    ``tmp`` (default mappings off unless ``mappings``), and the environment of its tokens."""
    off = "" if mappings else "mappings = false\n"
    config = tmp / "sluice.toml"
    config.write_text(f"""
[target]
path = "{tmp / 'db.sqlite'}"

[sources.gh]
integration = "github"
{off}org = "{gh.org}"
token = "${{TEST_GITHUB_TOKEN}}"
base_url = "{gh.url}"
{gh_keys}

[sources.jira]
integration = "jira"
{off}base_url = "{jira.url}"
email = "{jira.email}"
api_token = "${{TEST_JIRA_TOKEN}}"
{jira_keys}
""")
    return config, {"TEST_GITHUB_TOKEN": gh.token, "TEST_JIRA_TOKEN": jira.token}


def rows(db: Path, source: str, kind: str) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {i for (i,) in conn.execute(
            "SELECT identifier FROM entities WHERE source = ? AND kind = ?", (source, kind))}


def test_github_and_jira_sync_through_real_workers(tmp_path: Path, own_redis_url: str):
    with FakeGithub(repos=4, rate_limit=50) as gh, FakeJira(projects=75, issues=260) as jira:
        gh.sizes[3] = (0, 0)
        config, env = write_config(tmp_path, gh, jira, gh_keys="rate_limit = 40",
                                   jira_keys="page_size = 100")
        url = own_redis_url
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
    return queries_asked(fake, path)


def test_github_and_jira_incremental_through_real_workers(tmp_path: Path,
                                                          own_redis_url: str):
    """The first run reads everything; the next reads what changed since each repository's
    watermark (issues: since; pull requests: newest first until an older one), and Jira's
    since its watermark, in the JQL."""
    with FakeGithub(repos=3) as gh, FakeJira(projects=5, issues=120) as jira:
        # Issue n of a repository is updated at at(n * 60); pull requests follow the issues.
        gh.sizes.update({0: (30, 10), 1: (12, 4), 2: (0, 0)})
        db = tmp_path / "db.sqlite"
        config, env = write_config(
            tmp_path, gh, jira, gh_keys='kinds = ["issue", "pull_request"]\nincremental = true',
            jira_keys='kinds = ["issue"]\npage_size = 50\nincremental = true')
        url = own_redis_url
        kinds = [("gh", "issue"), ("gh", "pull_request"), ("jira", "issue")]
        with Workers(config=config, redis_url=url, log=tmp_path / "w.log", env=env):
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


def comments_asked(fake: FakeGithub | FakeJira, prefix: str, suffix: str) -> set[str]:
    """The parents whose comments were asked for (``/repos/acme/repo0/issues/7``,
    ``/rest/api/3/issue/P1-8``), and forget every request."""
    got = {urlsplit(r[2]).path.removesuffix(suffix) for r in fake.requests(prefix)
           if r[1] == "GET" and urlsplit(r[2]).path.endswith(suffix)}
    with fake.server.lock:
        fake.state.log.clear()
    return got


def test_github_and_jira_comments_are_children_of_issues(tmp_path: Path,
                                                         own_redis_url: str):
    """One run of issues writes them and all their comments (paged); the next, incremental,
    asks for the comments of the issues that changed only."""
    with FakeGithub(repos=2) as gh, FakeJira(projects=3, issues=40) as jira:
        gh.sizes.update({0: (12, 3), 1: (5, 0)})  # repo0's pull requests have no comments read
        gh.comment_counts[(0, 4)] = 25  # three pages of 10
        jira.comment_counts["P3-10"] = 45  # three pages of 20
        db = tmp_path / "db.sqlite"
        config, env = write_config(
            tmp_path, gh, jira,
            gh_keys='kinds = ["issue", "issue_comment"]\nper_page = 10\nincremental = true',
            jira_keys='kinds = ["issue", "comment"]\npage_size = 20\nincremental = true')
        url = own_redis_url
        with Workers(config=config, redis_url=url, log=tmp_path / "w.log", env=env):
            client = Client(url)
            try:
                first = {s: client.resync(s, "issue", timeout=90) for s in ("gh", "jira")}
                asked1 = (comments_asked(gh, "/repos/", "/comments"),
                          comments_asked(jira, "/rest/", "/comment"))
                gh_rows, jira_rows = rows(db, "gh", "issue_comment"), rows(db, "jira", "comment")
                numbers = titles(db, "gh", "issue_comment", "_parent_number")
                new_gh = gh.add_comments(0, 2, 1, when=10_000)[0]  # issue 2 changes with it
                new_jira = jira.add_comments(30, 1, when=3_600)[0]
                second = {s: client.resync(s, "issue", timeout=90) for s in ("gh", "jira")}
                asked2 = (comments_asked(gh, "/repos/", "/comments"),
                          comments_asked(jira, "/rest/", "/comment"))
            finally:
                client.close()

        assert all(r.state == "succeeded" and not r.incremental for r in first.values()), first
        assert set(first["gh"].children) == {"issue_comment"}
        assert set(first["jira"].children) == {"comment"}
        # GitHub: 17 issues, two comments each but issue 4 of repo0's 25; no pull request's.
        gh_counts = first["gh"].children["issue_comment"]
        assert gh_counts["items_fetched"] == gh_counts["items_written"] == 16 * 2 + 25
        assert first["gh"].own("items_written") == 17
        assert asked1[0] == {f"/repos/acme/repo0/issues/{n}" for n in range(1, 13)} | {
            f"/repos/acme/repo1/issues/{n}" for n in range(1, 6)}
        assert len(gh_rows) == 57
        repos = titles(db, "gh", "issue_comment", "_parent_repository")
        parents = titles(db, "gh", "issue_comment", "_parent_id")
        some = str(7_000_000_000 + 4 * 1_000 + 24)  # the last comment of repo0's issue 4
        assert (numbers[some], repos[some], parents[some]) == (4, "acme/repo0", 5_000_004)
        assert {repos[i] for i in gh_rows} == {"acme/repo0", "acme/repo1"}
        # Jira: 40 issues, two comments each but P3-10's 45.
        jira_counts = first["jira"].children["comment"]
        assert jira_counts["items_fetched"] == jira_counts["items_written"] == 39 * 2 + 45
        assert asked1[1] == {f"/rest/api/3/issue/P{i % 7}-{i}" for i in range(40)}
        assert len(jira_rows) == 39 * 2 + 45
        keys = titles(db, "jira", "comment", "_parent_key")
        ids = titles(db, "jira", "comment", "_parent_id")
        last = str(1_000_000 + 10_000 + 44)
        assert (keys[last], ids[last]) == ("P3-10", "20010")

        assert all(r.state == "succeeded" and r.incremental and r.deleted == 0
                   for r in second.values()), second
        # GitHub: since each repository's watermark minus 2m: repo0's 10..12 and the changed
        # issue 2, repo1's 3..5; only those fan out.
        assert asked2[0] == {f"/repos/acme/repo0/issues/{n}" for n in (2, 10, 11, 12)} | {
            f"/repos/acme/repo1/issues/{n}" for n in (3, 4, 5)}
        assert second["gh"].children["issue_comment"]["items_written"] == 3 + 3 * 2 + 3 * 2
        assert titles(db, "gh", "issue_comment", "_parent_number") == numbers | {
            str(new_gh["id"]): 2}
        assert rows(db, "gh", "issue_comment") == gh.expected("issue_comment")
        # Jira: updated >= 09:55: issues 0..5, and 30 that the new comment changed.
        assert asked2[1] == {f"/rest/api/3/issue/P{i % 7}-{i}" for i in (*range(6), 30)}
        assert second["jira"].children["comment"]["items_written"] == 6 * 2 + 3
        assert titles(db, "jira", "comment", "_parent_key")[new_jira["id"]] == "P2-30"
        assert rows(db, "jira", "comment") == jira.expected_comments()


def test_github_and_jira_default_mappings_land_typed_tables(tmp_path: Path,
                                                             own_redis_url: str):
    """With their default mappings (on unless a source says mappings = false), GitHub and
    Jira items land in typed tables {source}_{kind}, one column per default property."""
    with FakeGithub(repos=2) as gh, FakeJira(projects=5, issues=40) as jira:
        config, env = write_config(
            tmp_path, gh, jira, mappings=True, jira_keys='kinds = ["issue"]',
            gh_keys='kinds = ["issue"]\n'
                    'mappings = { issue = { properties = { title = ".title | ascii_upcase" } } }')
        url = own_redis_url
        with Workers(config=config, redis_url=url, log=tmp_path / "w.log", env=env):
            client = Client(url)
            done = [client.resync("gh", "issue", timeout=90),
                    client.resync("jira", "issue", timeout=90)]
            client.close()
        assert [r.state for r in done] == ["succeeded", "succeeded"], done
        assert all(r.items_rejected == 0 for r in done)
        with sqlite3.connect(tmp_path / "db.sqlite") as conn:
            conn.row_factory = sqlite3.Row
            issues = {r["identifier"]: dict(r) for r in conn.execute("SELECT * FROM gh_issue")}
            columns = {r[1]: r[2] for r in conn.execute("PRAGMA table_info(jira_issue)")}
            jira_rows = conn.execute("SELECT count(*) FROM jira_issue").fetchone()[0]
        assert set(issues) == gh.expected("issue")
        one = next(iter(issues.values()))
        assert one["title"] == one["title"].upper()  # the override, key by key
        assert isinstance(one["number"], int) and one["repository"].startswith(f"{gh.org}/")
        assert jira_rows == 40 and {"key", "summary", "status", "project"} <= set(columns)
