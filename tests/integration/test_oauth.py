"""OAuth 2.0 across a fleet, against a real authorization server (oidc-provider, from npm).

Three worker nodes read a parent kind and its child kind (the children of every parent
fetched by every node at once) from a fake API that checks each bearer token by introspection
at that server. Access tokens live 3 s, and the shared rate limit stretches each run past
that (126 requests at 20 a second), so tokens expire mid-run. Between the two runs every
worker is restarted and Redis is flushed: the rotated refresh token must come back from the
target's state table, while each worker's environment still holds the first (used) one. The
server revokes the whole grant if a refresh token is presented twice, so a second run that
lands everything proves it never was.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from integrations.fakeapi import FakeAPI
from integrations.fakeauth import bearer
from tasks.operator.redisserver import RedisServer
from tasks.runs.progress import RunState
from tests.support.configs import comments_of, cursor_kind, rest_source, sqlite_target, toml
from tests.support.oidc import OidcServer
from tests.support.workers import Client, Workers, redis_values

pytestmark = pytest.mark.integration

PARENTS, CHILDREN = 60, 4
KEY = "fleet-key-0c1d9e7f2b"

def oauth_source(api: str, source: str, *lines: str, grant: str, token_url: str,
                 client_id: str, auth: tuple[str, ...]) -> str:
    """A REST source of ``api`` that gets its tokens from ``token_url`` by ``grant``."""
    return rest_source(api, *lines, f"[sources.{source}.auth]", f'type = "{grant}"',
                       f'token_url = "{token_url}"', f'client_id = "{client_id}"', *auth,
                       source=source)


def config_text(db: Path, api: str, token_url: str) -> str:
    return toml(
        sqlite_target(db),
        oauth_source(api, "rt", "rate_limit = 20", "rate_limit_burst = 2", "max_concurrency = 4",
                     grant="oauth2_refresh_token", token_url=token_url, client_id="sluice-rt",
                     auth=('client_secret = "${RT_SECRET}"',
                           'refresh_token = "${RT_REFRESH}"')),
        cursor_kind("repo", limit=10, source="rt"), comments_of("repo", source="rt"),
        oauth_source(api, "cc", "rate_limit = 10", "rate_limit_burst = 1",
                     grant="oauth2_client_credentials", token_url=token_url,
                     client_id="sluice-cc-post",
                     auth=('client_secret = "${CC_SECRET}"', 'client_auth = "body"',
                           'scopes = ["api:read"]')),
        cursor_kind("repo", limit=1, source="cc"),
        oauth_source(api, "bad", grant="oauth2_refresh_token", token_url=token_url,
                     client_id="sluice-rt-post",
                     auth=('client_secret = "${RT_POST_SECRET}"', 'client_auth = "body"',
                           'refresh_token = "not-a-refresh-token"')),
        '[sources.bad.kinds.repo]\npath = "/cursor/repo"\nitems = "data"')


class Fleet:
    def __init__(self, tmp: Path, oidc: OidcServer, api: FakeAPI, redis: RedisServer) -> None:
        self.tmp, self.oidc, self.api, self.redis = tmp, oidc, api, redis
        self.db = tmp / "db.sqlite"
        self.config = tmp / "sluice.toml"
        self.config.write_text(config_text(self.db, api.url, oidc.token_url))
        self.first_refresh_token = oidc.refresh_token()
        self.env = {"RT_SECRET": oidc.RT.client_secret, "RT_REFRESH": self.first_refresh_token,
                    "CC_SECRET": oidc.CC_POST.client_secret,
                    "RT_POST_SECRET": oidc.RT_POST.client_secret, "SLUICE_SECRET_KEY": KEY}
        self.nodes: list[Workers] = []
        self.client = Client(redis.url)
        self.generation = 0

    def start(self) -> None:
        self.generation += 1
        self.nodes = [Workers(config=self.config, redis_url=self.redis.url, env=self.env,
                              log=self.tmp / f"{name}-{self.generation}.log", name=name)
                      for name in ("n1", "n2", "n3")]
        for node in self.nodes:
            node.start()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def rows(self, source: str, kind: str) -> set[str]:
        with sqlite3.connect(self.db) as conn:
            return {i for (i,) in conn.execute(
                "SELECT identifier FROM entities WHERE source = ? AND kind = ?", (source, kind))}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("oauth-fleet")
    with OidcServer(log=tmp / "oidc.log", access_ttl=3) as oidc, RedisServer() as redis, \
            FakeAPI(latency=0.01, auth=bearer(oidc.introspection())) as api:
        parents = api.set_items("repo", PARENTS)
        api.set_children("comment", parents, CHILDREN)
        fleet = Fleet(tmp, oidc, api, redis)
        fleet.start()
        try:
            yield fleet
        finally:
            fleet.stop()
            fleet.client.close()


def refreshes(oidc: OidcServer, client_id: str) -> list[dict]:
    return [r for r in oidc.requests("refresh_token") if r["client_id"] == client_id]


def test_rotating_refresh_tokens_across_three_nodes_and_a_restart(fleet: Fleet) -> None:
    oidc = fleet.oidc
    comments = {f"comment-repo-{p}-{j}" for p in range(PARENTS) for j in range(CHILDREN)}
    for round_ in (1, 2):
        started = time.monotonic()
        run = fleet.client.resync("rt", "repo", timeout=120)
        took = time.monotonic() - started
        assert run.state == RunState.SUCCEEDED, (run.reason, run.error,
                                                 fleet.client.progress.rejected(run.run_id))
        assert fleet.rows("rt", "repo") == {f"repo-{i}" for i in range(PARENTS)}
        assert fleet.rows("rt", "comment") == comments
        asked = refreshes(oidc, "sluice-rt")
        assert oidc.reused_refresh_tokens() == [], "a refresh token was presented twice"
        assert all(r["status"] == 200 for r in asked), asked
        # Tokens expired during the run (it outlasts their 3 s), and were renewed for the
        # whole fleet: not once per process or per request.
        assert took > 3.5
        assert 2 <= len(asked) <= took / 2 + 3, (len(asked), took)
        if round_ == 1:
            # Every worker restarted; Redis forgets everything. Each worker's environment
            # still holds the first refresh token, which the server has seen used.
            fleet.stop()
            redis.Redis.from_url(fleet.redis.url).flushall()
            fleet.start()
            oidc.reset_stats()
    # The chain carried on from the kept token (the server would have revoked the grant).
    first = refreshes(oidc, "sluice-rt")[0]
    used = hashlib.sha256(fleet.first_refresh_token.encode()).hexdigest()[:16]
    assert first["refresh_token"] != used


def test_client_credentials_one_token_per_lifetime_for_the_fleet(fleet: Fleet) -> None:
    oidc = fleet.oidc
    oidc.reset_stats()
    started = time.monotonic()
    run = fleet.client.resync("cc", "repo", timeout=120)
    took = time.monotonic() - started
    assert run.state == RunState.SUCCEEDED, (run.reason, run.error)
    assert fleet.rows("cc", "repo") == {f"repo-{i}" for i in range(PARENTS)}
    asked = [r for r in oidc.requests("client_credentials") if r["client_id"] == "sluice-cc-post"]
    assert all(r["client_auth"] == "body" and r["scope"] == "api:read" for r in asked), asked
    assert took > 3.5 and 2 <= len(asked) <= took / 2 + 3, (len(asked), took)


def test_a_refused_refresh_token_fails_the_run_once_with_the_reason(fleet: Fleet) -> None:
    fleet.oidc.reset_stats()
    run = fleet.client.resync("bad", "repo", timeout=60)
    assert run.state == RunState.FAILED
    assert "invalid_grant" in run.error + run.reason
    again = fleet.client.resync("bad", "repo", timeout=60)  # within the shared refusal
    assert again.state == RunState.FAILED and "invalid_grant" in again.error + again.reason
    assert len(refreshes(fleet.oidc, "sluice-rt-post")) == 1


def test_no_token_or_secret_is_written_anywhere_in_clear(fleet: Fleet) -> None:
    with fleet.api.server.lock:
        tokens = {h.split(" ", 1)[1] for h in fleet.api.state.auth_seen if " " in h}
    assert tokens, "the API saw no bearer token"
    secrets = tokens | {fleet.first_refresh_token, fleet.oidc.RT.client_secret,
                        fleet.oidc.CC_POST.client_secret, KEY}
    store = redis.Redis.from_url(fleet.redis.url)
    stored = [fleet.db.read_bytes()]
    stored += [p.read_bytes() for p in fleet.tmp.glob("n*.log")]
    stored += [value for _, value in redis_values(store)]
    for secret in secrets:
        assert not any(secret.encode() in blob for blob in stored), "a secret was written"
