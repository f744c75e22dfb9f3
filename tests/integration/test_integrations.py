"""GitHub and Jira through real workers: partitions per repository, Jira's two pagings."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

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
