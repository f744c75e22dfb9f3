"""A source's ``auth``: the simple types on the wire, and OAuth 2.0 tokens shared by many
processes (each ``TokenSource`` below stands for one process; they share a store as the fleet
shares Redis). The token endpoint is an httpx.MockTransport that rotates refresh tokens and,
like a provider with reuse detection, revokes the grant when a used one comes again."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from typing import Any
from urllib.parse import parse_qsl

import fakeredis
import httpx
import pytest
from pydantic import TypeAdapter, ValidationError

from integrations.errors import AuthRefused, ConfigError
from integrations.http.auth import AuthSettings, simple_credentials
from integrations.http.client import make_client
from integrations.http.oauth import LocalTokenStore, OAuth2, Sealer, TokenSource
from integrations.rest.settings import RestSettings
from integrations.settings import HttpSettings
from tasks.worker.tokens import RedisTokenStore

pytestmark = pytest.mark.anyio  # anyio's pytest plugin runs the async tests

AUTH: TypeAdapter[Any] = TypeAdapter(AuthSettings)
HTTP = HttpSettings(retries=0)
TOKEN_URL = "https://idp.example/token"
KEY = "a-secret-key-of-the-fleet"


class Provider:
    """A token endpoint: client credentials, and refresh tokens that rotate with reuse
    detection (a used refresh token presented again revokes the whole grant)."""

    def __init__(self, *, lifetime: int = 3600, rotate: bool = True) -> None:
        self.lifetime = lifetime
        self.rotate = rotate
        self.counter = itertools.count(1)
        self.live_refresh = {"rt-0"}
        self.used: set[str] = set()
        self.revoked = False
        self.presented: list[str] = []
        self.forms: list[dict[str, str]] = []
        self.auth_headers: list[str | None] = []
        self.refuse: str | None = None
        self.status = 200

    def handler(self, request: httpx.Request) -> httpx.Response:
        form = dict(parse_qsl(request.content.decode()))
        self.forms.append(form)
        self.auth_headers.append(request.headers.get("authorization"))
        if self.status != 200:
            return httpx.Response(self.status)
        if self.refuse:
            return httpx.Response(400, json={"error": self.refuse,
                                             "error_description": "go away"})
        n = next(self.counter)
        answer: dict[str, Any] = {"access_token": f"at-{n}", "token_type": "Bearer",
                                  "expires_in": self.lifetime}
        if form["grant_type"] == "refresh_token":
            presented = form["refresh_token"]
            self.presented.append(presented)
            if presented in self.used:
                self.revoked = True
            if self.revoked or presented not in self.live_refresh:
                return httpx.Response(400, json={"error": "invalid_grant"})
            if self.rotate:
                self.used.add(presented)
                self.live_refresh.discard(presented)
                answer["refresh_token"] = f"rt-{n}"
                self.live_refresh.add(answer["refresh_token"])
        return httpx.Response(200, json=answer)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)


def oauth(kind: str, **extra: Any) -> Any:
    section = {"type": kind, "token_url": TOKEN_URL, "client_id": "sluice",
               "client_secret": "s3cr3t:%x", **extra}
    if kind == "oauth2_refresh_token":
        section.setdefault("refresh_token", "rt-0")
    return AUTH.validate_python(section)


def source(settings: Any, store: Any, provider: Provider, **kw: Any) -> TokenSource:
    return TokenSource(settings, store, secret_key=KEY, http=HTTP,
                       transport=provider.transport(), **kw)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- the simple types


def test_basic_is_encoded_and_bearer_and_header_keys_are_headers() -> None:
    basic = simple_credentials(AUTH.validate_python(
        {"type": "basic", "username": "bot", "password": "pä:ss"}))
    user, _, password = base64.b64decode(
        basic.headers["Authorization"].removeprefix("Basic ")).decode().partition(":")
    assert (user, password) == ("bot", "pä:ss")
    assert simple_credentials(AUTH.validate_python({"type": "bearer", "token": "tok"})
                              ).headers == {"Authorization": "Bearer tok"}
    assert simple_credentials(AUTH.validate_python(
        {"type": "api_key", "name": "X-API-Key", "value": "k"})).headers == {"X-API-Key": "k"}


async def test_a_query_key_goes_to_the_source_only_and_comes_back_into_masked_urls() -> None:
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(200, json=[])

    given = simple_credentials(AUTH.validate_python(
        {"type": "api_key", "name": "api_key", "value": "k-123", "location": "query"}))
    async with make_client(base_url="https://api.example", auth=given.auth,
                           secret_params=given.params, settings=HTTP,
                           allow_origins=["https://cdn.example"],
                           transport=httpx.MockTransport(handler)) as client:
        await client.get("/items", params={"limit": 5})
        await client.get("https://api.example/items?api_key=***&page=2")  # a stored next URL
        await client.get("https://cdn.example/file")
    assert seen[0].params["api_key"] == "k-123" and seen[0].params["limit"] == "5"
    assert seen[1].params["api_key"] == "k-123" and seen[1].params["page"] == "2"
    assert "api_key" not in seen[2].params


@pytest.mark.parametrize("section", [
    {"type": "bearer"},
    {"type": "basic", "password": "x"},
    {"type": "api_key", "name": "k", "value": "v", "location": "cookie"},
    {"type": "oauth2_client_credentials", "token_url": TOKEN_URL, "client_id": "c",
     "client_auth": "header"},
    {"type": "oauth2_refresh_token", "token_url": TOKEN_URL, "client_id": "c"},
    {"type": "kerberos"},
    {"type": "bearer", "token": "t", "tokn": "t"},
])
def test_a_wrong_section_is_refused(section: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        AUTH.validate_python(section)


def test_auth_and_a_header_that_sets_the_same_are_refused() -> None:
    with pytest.raises(ValidationError, match=r"headers\.authorization: auth sets it too"):
        RestSettings.model_validate({
            "integration": "rest", "base_url": "https://api.example",
            "headers": {"authorization": "Bearer x"}, "kinds": {"k": {"path": "/k"}},
            "auth": {"type": "bearer", "token": "y"}})


def test_refresh_tokens_need_a_key() -> None:
    with pytest.raises(ConfigError, match="SLUICE_SECRET_KEY"):
        TokenSource(oauth("oauth2_refresh_token"), LocalTokenStore(), secret_key=None,
                    http=HTTP)


# -- client credentials


async def test_one_token_serves_every_process_until_shortly_before_it_expires() -> None:
    provider, store, now = Provider(lifetime=100), LocalTokenStore(), [1000.0]
    fleet = [source(oauth("oauth2_client_credentials", scopes=["read", "write"],
                          audience="api"), store, provider, clock=lambda: now[0])
             for _ in range(5)]
    tokens = await asyncio.gather(*(s.token() for s in fleet for _ in range(4)))
    assert set(tokens) == {"at-1"} and len(provider.forms) == 1
    assert provider.forms[0] == {"grant_type": "client_credentials", "scope": "read write",
                                 "audience": "api"}
    user, _, password = base64.b64decode(
        provider.auth_headers[0].removeprefix("Basic ")).decode().partition(":")  # type: ignore[union-attr]
    assert (user, password) == ("sluice", "s3cr3t%3A%25x")  # RFC 6749 2.3.1: form-encoded
    now[0] += 89  # within the margin (a tenth of 100 s): still the same token
    assert await fleet[1].token() == "at-1"
    now[0] += 2
    assert {await s.token() for s in fleet} == {"at-2"} and len(provider.forms) == 2


async def test_client_in_the_body() -> None:
    provider = Provider()
    await source(oauth("oauth2_client_credentials", client_auth="body"), LocalTokenStore(),
                 provider).token()
    assert provider.auth_headers == [None]
    assert provider.forms[0]["client_id"] == "sluice"
    assert provider.forms[0]["client_secret"] == "s3cr3t:%x"


async def test_a_401_gets_one_fresh_token_and_the_request_again() -> None:
    provider, store = Provider(), LocalTokenStore()
    answers = iter([401, 200, 401, 401])
    sent: list[str] = []

    def api(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers["authorization"])
        return httpx.Response(next(answers), json=[])

    auth = OAuth2(source(oauth("oauth2_client_credentials"), store, provider))
    async with make_client(base_url="https://api.example", auth=auth, settings=HTTP,
                           transport=httpx.MockTransport(api)) as client:
        assert (await client.get("https://api.example/x")).status_code == 200
        assert sent == ["Bearer at-1", "Bearer at-2"]
        assert (await client.get("https://api.example/x")).status_code == 401  # once only
    assert sent[2:] == ["Bearer at-2", "Bearer at-3"]


async def test_the_token_is_set_after_the_wait_for_the_rate_limit() -> None:
    """A request that queued behind the rate limit past its token's life goes out with a
    fresh token, not the one it had when it was made (tokens of a few seconds, a long queue:
    every retried request 401'd twice and failed)."""
    provider, store, now = Provider(lifetime=10), LocalTokenStore(), [0.0]
    token_source = source(oauth("oauth2_client_credentials"), store, provider,
                          clock=lambda: now[0])
    sent: list[str] = []

    class SlowLimit:
        async def acquire(self) -> None:
            now[0] += 30  # the queue outlasts the token

        def observe(self, response: httpx.Response) -> None:
            pass

    def api(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers["authorization"])
        return httpx.Response(200, json=[])

    await token_source.token()  # the token in hand when the request is made: at-1
    async with make_client(base_url="https://api.example", auth=OAuth2(token_source),
                           settings=HTTP, limiter=SlowLimit(),  # type: ignore[arg-type]
                           transport=httpx.MockTransport(api)) as client:
        assert (await client.get("/x")).status_code == 200
    assert sent == ["Bearer at-2"]


async def test_no_token_goes_to_another_origin() -> None:
    provider, sent = Provider(), []

    def api(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("authorization"))
        return httpx.Response(200, json=[])

    auth = OAuth2(source(oauth("oauth2_client_credentials"), LocalTokenStore(), provider))
    async with make_client(base_url="https://api.example", auth=auth, settings=HTTP,
                           allow_origins=["https://cdn.example"],
                           transport=httpx.MockTransport(api)) as client:
        await client.get("https://cdn.example/file")
        await client.get("/x")
    assert sent == [None, "Bearer at-1"]


async def test_a_refusal_fails_once_and_every_process_hears_of_it() -> None:
    provider, store = Provider(), LocalTokenStore()
    provider.refuse = "invalid_client"
    first, second = (source(oauth("oauth2_client_credentials"), store, provider)
                     for _ in range(2))
    with pytest.raises(AuthRefused, match="invalid_client"):
        await first.token()
    with pytest.raises(AuthRefused, match="invalid_client"):
        await second.token()
    assert len(provider.forms) == 1


async def test_a_server_error_is_transient_and_not_shared() -> None:
    from integrations.errors import TransientHTTPError

    provider, store = Provider(), LocalTokenStore()
    provider.status = 503
    with pytest.raises(TransientHTTPError):
        await source(oauth("oauth2_client_credentials"), store, provider).token()
    provider.status = 200
    assert await source(oauth("oauth2_client_credentials"), store, provider).token() == "at-1"


# -- rotating refresh tokens


async def test_many_processes_refresh_once_and_never_present_a_token_twice() -> None:
    provider, store, now = Provider(lifetime=10), LocalTokenStore(), [0.0]
    fleet = [source(oauth("oauth2_refresh_token"), store, provider, clock=lambda: now[0])
             for _ in range(6)]
    for _ in range(5):  # five token lifetimes, every process asking at once each time
        await asyncio.gather(*(s.token() for s in fleet))
        now[0] += 11
    assert len(provider.presented) == 5
    assert len(set(provider.presented)) == 5 and not provider.revoked
    # A process started later, whose sluice.toml still holds the used rt-0, takes the kept one.
    late = source(oauth("oauth2_refresh_token"), store, provider, clock=lambda: now[0])
    await late.token()
    assert not provider.revoked and len(set(provider.presented)) == 6


async def test_the_kept_refresh_token_survives_a_redis_flush_through_the_target() -> None:
    from tasks.targets.sqlite import SqliteTarget

    provider = Provider(lifetime=10)
    redis = fakeredis.FakeRedis()
    target = SqliteTarget(":memory:")
    now = [0.0]

    def store() -> RedisTokenStore:
        return RedisTokenStore(redis, "src", target=lambda: target)

    await source(oauth("oauth2_refresh_token"), store(), provider, clock=lambda: now[0]).token()
    sealer = Sealer(KEY)
    kept = target.secret("src", "kept")
    assert kept is not None and sealer.open(kept) is not None  # sealed
    redis.flushall()
    now[0] += 11
    await source(oauth("oauth2_refresh_token"), store(), provider, clock=lambda: now[0]).token()
    assert provider.presented == ["rt-0", "rt-1"] and not provider.revoked
    for key in redis.scan_iter():  # nothing in clear in Redis either: sealed, or no token
        value = redis.get(key) or b""
        # (a sealed value is base64, which may spell "rt-" by chance: 1 run in 200 did)
        assert sealer.open(value.decode()) is not None or (
            b"at-" not in value and b"rt-" not in value)


async def test_a_new_refresh_token_in_the_configuration_starts_a_new_chain() -> None:
    provider, store = Provider(lifetime=10), LocalTokenStore()
    await source(oauth("oauth2_refresh_token"), store, provider).token()
    provider.live_refresh.add("rt-pasted")
    await source(oauth("oauth2_refresh_token", refresh_token="rt-pasted"), store,
                 provider).token()
    assert provider.presented == ["rt-0", "rt-pasted"]


async def test_a_refresh_cut_off_in_flight_is_not_presented_again() -> None:
    provider, store = Provider(lifetime=10), LocalTokenStore()

    def cut(request: httpx.Request) -> httpx.Response:
        provider.handler(request)  # the provider took (and rotated) the token ...
        raise httpx.ReadTimeout("lost", request=request)  # ... the answer never came

    first = TokenSource(oauth("oauth2_refresh_token"), store, secret_key=KEY, http=HTTP,
                        transport=httpx.MockTransport(cut))
    with pytest.raises(Exception, match="ReadTimeout"):
        await first.token()
    with pytest.raises(AuthRefused, match="cut off"):
        await source(oauth("oauth2_refresh_token"), store, provider).token()
    assert provider.presented == ["rt-0"] and not provider.revoked


async def test_a_refresh_that_never_connected_may_be_tried_again() -> None:
    from integrations.errors import TransientHTTPError

    provider, store = Provider(lifetime=10), LocalTokenStore()

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(TransientHTTPError, match="not sent"):
        await TokenSource(oauth("oauth2_refresh_token"), store, secret_key=KEY, http=HTTP,
                          transport=httpx.MockTransport(down)).token()
    assert await source(oauth("oauth2_refresh_token"), store, provider).token() == "at-1"


async def test_invalid_grant_fails_the_fleet_once() -> None:
    provider, store = Provider(), LocalTokenStore()
    provider.live_refresh.clear()
    with pytest.raises(AuthRefused, match="invalid_grant"):
        await source(oauth("oauth2_refresh_token"), store, provider).token()
    with pytest.raises(AuthRefused, match="invalid_grant"):
        await source(oauth("oauth2_refresh_token"), store, provider).token()
    assert len(provider.presented) == 1


async def test_a_provider_that_does_not_rotate_keeps_the_same_refresh_token() -> None:
    provider, store, now = Provider(lifetime=10, rotate=False), LocalTokenStore(), [0.0]
    for _ in range(3):
        await source(oauth("oauth2_refresh_token"), store, provider, clock=lambda: now[0]).token()
        now[0] += 11
    assert provider.presented == ["rt-0"] * 3


# -- hostile token endpoints


def answering(content: bytes, status: int = 200,
              headers: dict[str, str] | None = None) -> tuple[list[httpx.Request], Any]:
    """A token endpoint that always answers ``content``; the list of what it was sent."""
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(status, content=content, headers=headers)

    return calls, httpx.MockTransport(handler)


@pytest.mark.parametrize("lifetime", ["", ', "expires_in": 1e30', ', "expires_in": NaN',
                                      ', "expires_in": Infinity', ', "expires_in": -5'])
async def test_an_odd_expires_in_is_shared_a_day_at_most_and_asked_for_once(
        lifetime: str) -> None:
    redis = fakeredis.FakeRedis()
    calls, transport = answering(f'{{"access_token": "at-x"{lifetime}}}'.encode())
    fleet = [TokenSource(oauth("oauth2_client_credentials"), RedisTokenStore(redis, "src"),
                         secret_key=KEY, http=HTTP, transport=transport) for _ in range(2)]
    assert [await s.token() for s in fleet for _ in range(3)] == ["at-x"] * 6
    assert len(calls) == 1
    ttls = [redis.pttl(key) for key in redis.scan_iter()]
    assert ttls and all(0 < ttl <= 86_400_000 for ttl in ttls)


async def test_a_refresh_refused_outright_can_be_presented_once_the_config_is_fixed() -> None:
    store, provider = LocalTokenStore(), Provider()
    _, transport = answering(b'{"error": "invalid_client"}', 401)
    with pytest.raises(AuthRefused, match="invalid_client"):
        await TokenSource(oauth("oauth2_refresh_token"), store, secret_key=KEY, http=HTTP,
                          transport=transport).token()
    fixed = source(oauth("oauth2_refresh_token", client_secret="fixed"), store, provider)
    assert await fixed.token() == "at-1" and provider.presented == ["rt-0"]
    # A 2xx without a token may have rotated it: that one is not presented again.
    _, transport = answering(b'{"refresh_token": "rt-9"}')
    with pytest.raises(AuthRefused, match=r"not an OAuth 2\.0 token answer"):
        await TokenSource(oauth("oauth2_refresh_token", client_secret="again"), store,
                          secret_key=KEY, http=HTTP, transport=transport).renew("at-1")
    with pytest.raises(AuthRefused, match="cut off"):
        await source(oauth("oauth2_refresh_token", client_secret="fixed2"), store,
                     provider).token()


@pytest.mark.parametrize("status", [302, 307])
async def test_a_redirecting_token_endpoint_is_not_followed(status: int) -> None:
    calls, transport = answering(b"", status,
                                 {"Location": "https://evil.example/steal?code=x"})
    with pytest.raises(AuthRefused) as refused:
        await TokenSource(oauth("oauth2_client_credentials", client_auth="body"),
                          LocalTokenStore(), secret_key=KEY, http=HTTP,
                          transport=transport).token()
    assert [str(c.url) for c in calls] == [TOKEN_URL]
    assert f"{status}, a redirect to https://evil.example/steal (not followed" in str(
        refused.value)


async def test_secrets_echoed_by_the_token_endpoint_are_masked() -> None:
    _, transport = answering(json.dumps({
        "error": "invalid_grant: rt-0-long " + "no " * 300,
        "error_description": "s3cr3t:%x is wrong and rt-0-long was used"}).encode(), 400)
    with pytest.raises(AuthRefused) as refused:
        await TokenSource(oauth("oauth2_refresh_token", refresh_token="rt-0-long"),
                          LocalTokenStore(), secret_key=KEY, http=HTTP,
                          transport=transport).token()
    message = str(refused.value)
    assert "rt-0-long" not in message and "s3cr3t" not in message
    assert "*** is wrong and *** was used" in message and len(message) < 400


@pytest.mark.parametrize("answer", [
    {"access_token": "at\r\nX-Evil: 1", "refresh_token": "rt-9"},
    {"access_token": "at x", "refresh_token": "rt-9"},
    {"access_token": "at", "token_type": "mac", "refresh_token": "rt-9"},
    {"access_token": "at", "token_type": None, "refresh_token": "rt-9"},
])
async def test_a_token_that_cannot_be_a_bearer_header_is_refused(
        answer: dict[str, Any]) -> None:
    store = LocalTokenStore()
    _, transport = answering(json.dumps(answer).encode())
    with pytest.raises(AuthRefused, match=r"answered (a token of type|an access_token with)"):
        await TokenSource(oauth("oauth2_refresh_token"), store, secret_key=KEY, http=HTTP,
                          transport=transport).token()
    # The rotated refresh token was kept (not left 'presenting'): fixed, it goes on.
    provider = Provider()
    provider.live_refresh.add("rt-9")
    assert await source(oauth("oauth2_refresh_token", client_secret="x"), store,
                        provider).token() == "at-1"
    assert provider.presented == ["rt-9"]


async def test_a_bearer_token_type_in_any_case_is_taken() -> None:
    _, transport = answering(b'{"access_token": "a.b-c_d~e+f/g==", "token_type": "BEARER"}')
    assert await TokenSource(oauth("oauth2_client_credentials"), LocalTokenStore(),
                             secret_key=KEY, http=HTTP,
                             transport=transport).token() == "a.b-c_d~e+f/g=="


@pytest.mark.parametrize(("section", "message"), [
    ({"type": "bearer", "token": "abc\r\nX-Evil: 1"}, "sources.X.auth.token: "),
    ({"type": "bearer", "token": "${SLUICE_TEST_TOKEN}"}, "sources.X.auth.token: "),
    ({"type": "basic", "username": "a:b"}, "sources.X.auth.username: "),
    ({"type": "basic", "username": "a", "password": "p\n"}, "sources.X.auth.password: "),
    ({"type": "api_key", "name": "X-Key", "value": "v\r\n"}, "sources.X.auth.value: "),
    ({"type": "api_key", "name": "X Key", "value": "v"}, "sources.X.auth.name: "),
    ({"type": "api_key", "name": "X/Key", "value": "v"}, "not a header name"),
    ({"type": "oauth2_client_credentials", "token_url": "/token", "client_id": "c"},
     "sources.X.auth.token_url: "),
    ({"type": "oauth2_client_credentials", "token_url": TOKEN_URL},
     "sources.X.auth.client_id: Field required"),
    ({"type": "oauth2_client_credentials", "token_url": TOKEN_URL, "client_id": "c",
      "client_auth": "header"}, "sources.X.auth.client_auth: "),
    ({"type": "bearer", "token": "t", "tokn": "t"}, "sources.X.auth.tokn: unknown key"),
])
def test_a_value_that_cannot_go_on_the_wire_is_a_config_error_naming_its_key(
        section: dict[str, Any], message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    from tasks.config import parse_config

    monkeypatch.setenv("SLUICE_TEST_TOKEN", "tok-from-env\nX-Evil: 1")
    with pytest.raises(ConfigError) as refused:
        parse_config({"sources": {"X": {
            "integration": "rest", "base_url": "https://api.example",
            "kinds": {"k": {"path": "/k"}}, "auth": section}}}, Path("sluice.toml"))
    assert message in str(refused.value)
    assert "tok-from-env" not in str(refused.value)  # a value from the environment is masked


def test_an_api_key_in_the_query_may_be_named_like_any_parameter() -> None:
    assert AUTH.validate_python({"type": "api_key", "name": "key[0]", "value": "k",
                                 "location": "query"}).name == "key[0]"


async def test_a_connection_failure_does_not_name_the_query_key() -> None:
    from integrations.errors import TransientHTTPError
    from integrations.http.client import get_json

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url}", request=request)

    given = simple_credentials(AUTH.validate_python(
        {"type": "api_key", "name": "api_key", "value": "k-SECRET-1", "location": "query"}))
    async with make_client(base_url="https://api.example", auth=given.auth,
                           secret_params=given.params, settings=HTTP,
                           transport=httpx.MockTransport(down)) as client:
        with pytest.raises(TransientHTTPError) as caught:
            await get_json(client, "/items", params={"limit": 5})
    assert "k-SECRET-1" not in str(caught.value) and "api.example/items" in str(caught.value)
