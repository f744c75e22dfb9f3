"""The fake API's credential checks (integrations/fakeauth.py), through real HTTP requests to
the fake API in this process; the introspection cache with a fake clock and a mock endpoint."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from integrations.fakeapi import FakeAPI
from integrations.fakeauth import (
    Introspection,
    api_key,
    basic,
    bearer,
    bearer_token,
    header,
)


@pytest.fixture
def guarded() -> Iterator[tuple[FakeAPI, httpx.Client]]:
    with FakeAPI() as fake, httpx.Client(base_url=fake.url) as http:
        fake.set_items("issue", 3)
        yield fake, http


def test_without_auth_every_get_passes(guarded):
    _, http = guarded
    assert http.get("/cursor/issue").status_code == 200


def test_bearer_token(guarded):
    fake, http = guarded
    fake.require(bearer_token("s3cret"))
    missing = http.get("/cursor/issue")
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="fakeapi"'
    wrong = http.get("/cursor/issue", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    assert http.get("/cursor/issue", headers={"Authorization": "Bearer s3cret"}).json()["data"]
    assert http.get("/cursor/issue", headers={"Authorization": "bearer s3cret"}).status_code == 200
    assert http.get("/cursor/issue", headers={"Authorization": "Basic s3cret"}).status_code == 401
    fake.require(None)
    assert http.get("/cursor/issue").status_code == 200


def test_basic(guarded):
    fake, http = guarded
    fake.require(basic("bot", "pä:ss"))
    assert http.get("/link/issue", auth=("bot", "pä:ss")).status_code == 200
    refused = http.get("/link/issue", auth=("bot", "other"))
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Basic ")
    assert http.get("/link/issue", headers={"Authorization": "Basic !!"}).status_code == 401
    assert http.get("/link/issue").status_code == 401


def test_api_key_in_a_header(guarded):
    fake, http = guarded
    fake.require(api_key("X-API-Key", "k-1"))
    assert http.get("/page/issue", headers={"x-api-key": "k-1"}).status_code == 200
    assert http.get("/page/issue", headers={"X-API-Key": "k-2"}).status_code == 401
    assert http.get("/page/issue", params={"X-API-Key": "k-1"}).status_code == 401


def test_api_key_in_the_query(guarded):
    fake, http = guarded
    fake.require(api_key("api_key", "k-1", location="query"))
    assert http.get("/offset/issue", params={"api_key": "k-1"}).status_code == 200
    assert http.get("/offset/issue", params={"api_key": "k-2"}).status_code == 401
    assert http.get("/offset/issue", headers={"api_key": "k-1"}).status_code == 401


def test_an_exact_header(guarded):
    fake, http = guarded
    fake.require(header("Authorization", "Token abc"))
    assert http.get("/cursor/issue", headers={"Authorization": "Token abc"}).status_code == 200
    assert http.get("/cursor/issue", headers={"Authorization": "Token abd"}).status_code == 401


def test_the_sink_and_stats_need_nothing(guarded):
    fake, http = guarded
    fake.require(bearer_token("s3cret"))
    assert http.get("/sink/issue").status_code == 200
    assert http.get("/_stats/issue").status_code == 200
    posted = http.post("/sink/issue", json={"entities": [{"identifier": "a"}]})
    assert posted.status_code == 200
    assert http.get("/one/issue/issue-1").status_code == 401
    assert http.get("/sub/issue/x").status_code == 401
    # refusals are in the log like every answer
    assert [r[3] for r in fake.requests("/one")] == [401]


class Endpoint:
    """An introspection endpoint that knows some tokens' exp."""

    def __init__(self, active: dict[str, float]) -> None:
        self.active = active
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        token = dict(httpx.QueryParams(request.content.decode()))["token"]
        if token in self.active:
            return httpx.Response(200, json={"active": True, "exp": self.active[token]})
        return httpx.Response(200, json={"active": False})


def test_introspection_keeps_a_positive_answer_until_exp():
    now = [1000.0]
    endpoint = Endpoint({"good": 1003})
    verify = Introspection("http://as/introspect", "rs", "rs-secret", clock=lambda: now[0],
                           http=httpx.Client(transport=httpx.MockTransport(endpoint)))
    assert verify("good") and verify("good")
    assert verify.calls == 1
    assert endpoint.seen[0].headers["Authorization"].startswith("Basic ")
    now[0] = 1002.9
    assert verify("good") and verify.calls == 1
    now[0] = 1003.0  # expired: asked again, and the server's exp says no
    assert not verify("good")
    assert verify.calls == 2
    assert not verify("bad") and not verify("bad")
    assert verify.calls == 4  # a negative answer is never kept


def test_introspection_after_forget_asks_again():
    endpoint = Endpoint({"good": 2e9})
    verify = Introspection("http://as/introspect", "rs", "x",
                           http=httpx.Client(transport=httpx.MockTransport(endpoint)))
    assert verify("good")
    verify.forget()
    assert verify("good")
    assert verify.calls == 2


def test_introspection_through_the_fake_api(guarded):
    fake, http = guarded
    endpoint = Endpoint({"good": 2e9})
    verify = Introspection("http://as/introspect", "rs", "x",
                           http=httpx.Client(transport=httpx.MockTransport(endpoint)))
    fake.require(bearer(verify))
    for _ in range(3):
        assert http.get("/cursor/issue", headers={"Authorization": "Bearer good"}).is_success
    assert http.get("/cursor/issue", headers={"Authorization": "Bearer bad"}).status_code == 401
    assert verify.calls == 2
    form = httpx.QueryParams(endpoint.seen[0].content.decode())
    assert form["token_type_hint"] == "access_token"
