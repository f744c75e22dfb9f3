"""The OAuth 2.0 test harness itself: a real oidc-provider (tests/support/oidc.py) issues
client-credentials tokens that expire, rotates refresh tokens and detects their reuse, and
the fake API, checking tokens by introspection, answers 401 or 200 accordingly."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from integrations.fakeapi import FakeAPI
from integrations.fakeauth import bearer
from tests.support.oidc import OidcClient, OidcServer

pytestmark = pytest.mark.integration

TTL = 2  # seconds every access token lives


@pytest.fixture(scope="module")
def oidc(tmp_path_factory) -> Iterator[OidcServer]:
    with OidcServer(log=tmp_path_factory.mktemp("oidc") / "oidc.log", access_ttl=TTL) as server:
        yield server


def until(ready: Callable[[], bool], *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.05)


def digest(token: str) -> str:
    """How the server's stats name a refresh token."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


@pytest.mark.parametrize("who", [OidcServer.CC, OidcServer.CC_POST], ids=["basic", "body"])
def test_a_client_credentials_token_expires_after_its_ttl(oidc, who):
    before = oidc.counts().get("client_credentials", 0)
    answer = oidc.client_credentials(who, scope="api:read api:write")
    assert answer["expires_in"] == TTL
    seen = oidc.introspect(answer["access_token"])
    assert seen["active"] is True
    assert seen["client_id"] == who.client_id
    assert seen["scope"] == "api:read api:write"
    assert oidc.counts()["client_credentials"] == before + 1
    assert oidc.requests("client_credentials")[-1]["client_auth"] == who.client_auth
    until(lambda: not oidc.introspect(answer["access_token"])["active"])
    assert time.time() >= seen["exp"]  # inactive only once its exp has come


def test_the_wrong_client_auth_method_and_scope_are_refused(oidc):
    basic_as_body = oidc.token({"grant_type": "client_credentials"},
                               OidcClient("sluice-cc", "sluice-cc-secret", "body"))
    assert basic_as_body.status_code == 401
    assert basic_as_body.json()["error"] == "invalid_client"
    with pytest.raises(httpx.HTTPStatusError) as refused:
        oidc.client_credentials(scope="api:admin")
    assert refused.value.response.json()["error"] == "invalid_scope"


@pytest.mark.parametrize("param", ["resource", "audience"])
def test_a_resource_or_audience_becomes_the_tokens_aud(oidc, param):
    answer = oidc.token({"grant_type": "client_credentials", "scope": "api:read",
                         param: "https://api.example.test/"}, OidcServer.CC)
    assert answer.status_code == 200
    seen = oidc.introspect(answer.json()["access_token"])
    assert seen["aud"] == "https://api.example.test/"
    assert seen["scope"] == "api:read"
    assert oidc.requests("client_credentials")[-1][param] == "https://api.example.test/"


@pytest.mark.parametrize("who", [OidcServer.RT, OidcServer.RT_POST], ids=["basic", "body"])
def test_a_refresh_token_rotates_and_its_reuse_revokes_the_grant(oidc, who):
    first = oidc.refresh_token(who)
    rotated = oidc.refresh(first, who)
    assert rotated.status_code == 200
    second = rotated.json()["refresh_token"]
    access = rotated.json()["access_token"]
    assert second != first
    assert oidc.introspect(access)["active"] is True
    assert oidc.introspect(second)["active"] is True
    assert digest(first) not in oidc.reused_refresh_tokens()

    again = oidc.refresh(first, who)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"
    assert oidc.requests("refresh_token")[-1]["error_detail"] == "refresh token already used"
    assert digest(first) in oidc.reused_refresh_tokens()
    # oidc-provider's reuse detection revokes the grant: the newest refresh token and the
    # access token of the family are dead too.
    assert oidc.introspect(access)["active"] is False
    assert oidc.introspect(second)["active"] is False
    after = oidc.refresh(second, who)
    assert after.json()["error"] == "invalid_grant"


def test_refresh_tokens_of_separate_grants_live_apart(oidc):
    a, b = oidc.refresh_token(), oidc.refresh_token()
    assert oidc.refresh(a).status_code == 200
    assert oidc.refresh(a).status_code == 400  # kills a's grant only
    assert oidc.refresh(b).status_code == 200


def test_a_revoked_refresh_token_takes_its_grant_with_it(oidc):
    first = oidc.refresh_token(OidcServer.RT_POST)
    access = oidc.refresh(first, OidcServer.RT_POST).json()
    oidc.revoke(access["refresh_token"], OidcServer.RT_POST)
    assert oidc.introspect(access["access_token"])["active"] is False
    assert oidc.refresh(access["refresh_token"], OidcServer.RT_POST).status_code == 400


def test_two_refreshes_at_once_lock_the_grant_out(oidc):
    # What a fleet without a lock does: one of them wins, the other's reuse revokes the grant,
    # and the winner's new refresh token is dead as well.
    first = oidc.refresh_token()
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: oidc.refresh(first), range(2)))
    assert sorted(a.status_code for a in answers) == [200, 400]
    assert digest(first) in oidc.reused_refresh_tokens()
    won = next(a for a in answers if a.status_code == 200).json()
    assert oidc.refresh(won["refresh_token"]).json()["error"] == "invalid_grant"


def test_injected_token_faults(oidc):
    oidc.token_faults(times=1, status=503)
    failed = oidc.token({"grant_type": "client_credentials"}, OidcServer.CC)
    assert failed.status_code == 503
    assert failed.json()["error"] == "temporarily_unavailable"
    assert oidc.requests()[-1]["status"] == 503
    assert oidc.token({"grant_type": "client_credentials"}, OidcServer.CC).status_code == 200
    oidc.token_faults(times=1, delay=0.5)
    started = time.monotonic()
    assert oidc.token({"grant_type": "client_credentials"}, OidcServer.CC).status_code == 200
    assert time.monotonic() - started >= 0.5


def test_the_fake_api_accepts_a_token_until_it_expires(oidc):
    verify = oidc.introspection()
    with FakeAPI(auth=bearer(verify)) as fake, httpx.Client(base_url=fake.url) as http:
        fake.set_items("issue", 5)
        missing = http.get("/cursor/issue")
        assert missing.status_code == 401
        assert missing.headers["WWW-Authenticate"].startswith("Bearer ")
        bogus = http.get("/cursor/issue", headers={"Authorization": "Bearer not-a-token"})
        assert bogus.status_code == 401
        assert 'error="invalid_token"' in bogus.headers["WWW-Authenticate"]

        token = oidc.client_credentials()["access_token"]
        exp = oidc.introspect(token)["exp"]
        sent = {"Authorization": f"Bearer {token}"}
        calls = verify.calls
        for _ in range(5):
            assert http.get("/cursor/issue", headers=sent).json()["data"]
        assert verify.calls == calls + 1  # kept for the token's life, not asked each time

        until(lambda: http.get("/cursor/issue", headers=sent).status_code == 401)
        assert time.time() >= exp
        refused = http.get("/cursor/issue", headers=sent)
        assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]
        fresh = oidc.client_credentials()["access_token"]
        assert http.get("/cursor/issue",
                        headers={"Authorization": f"Bearer {fresh}"}).status_code == 200


@pytest.mark.parametrize("ci, outcome", [("1", pytest.fail.Exception),
                                         ("", pytest.skip.Exception)])
def test_without_node_the_harness_skips_with_the_reason_and_fails_in_ci(monkeypatch, ci,
                                                                        outcome):
    from tests.support import oidc as harness

    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("SLUICE_CI", ci)
    with pytest.raises(outcome, match="node is not on PATH: the OAuth tests"):
        harness.install()
