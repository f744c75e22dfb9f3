"""The retry transport and the error translation, against httpx.MockTransport."""

from __future__ import annotations

import asyncio
import email.utils
import time

import httpx
import pytest

from integrations.errors import (
    ForeignOrigin,
    MalformedPage,
    PermanentHTTPError,
    TransientHTTPError,
)
from integrations.http.client import get_json, make_client, raise_for_status
from integrations.http.retry import RetryTransport, parse_retry_after
from integrations.settings import HttpSettings


class Script:
    """A MockTransport handler answering from a list, recording the requests."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def client_for(script: Script, sleeps: list[float], **kw) -> httpx.AsyncClient:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    transport = RetryTransport(httpx.MockTransport(script), sleep=sleep, jitter=lambda: 1.0, **kw)
    return httpx.AsyncClient(base_url="http://api.test", transport=transport)


def run(coro):
    return asyncio.run(coro)


def test_retry_after_in_seconds_and_as_a_date():
    assert parse_retry_after("7") == 7.0
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= parse_retry_after(date) <= 30
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_429_waits_what_retry_after_says_then_succeeds():
    script = Script(httpx.Response(429, headers={"Retry-After": "3"}),
                    httpx.Response(200, json=[1]))
    sleeps: list[float] = []
    _, body = run(get_json(client_for(script, sleeps), "/x"))
    assert body == [1] and sleeps == [3.0] and len(script.requests) == 2


def test_5xx_and_connect_errors_back_off_exponentially():
    script = Script(httpx.ConnectError("refused"), httpx.Response(502), httpx.Response(503),
                    httpx.ReadTimeout("slow"), httpx.Response(200, json={}))
    sleeps: list[float] = []
    run(get_json(client_for(script, sleeps, backoff=1.0, max_backoff=5.0), "/x"))
    assert sleeps == [1.0, 2.0, 4.0, 5.0]  # jitter pinned at its top; capped at max_backoff


def test_jitter_spreads_waits_between_half_and_all_of_the_backoff():
    transport = RetryTransport(httpx.MockTransport(lambda r: httpx.Response(200)), backoff=2.0)
    waits = [transport.delay(2, None) for _ in range(200)]
    assert min(waits) >= 4.0 and max(waits) <= 8.0 and len(set(waits)) > 100


def test_a_storm_longer_than_the_retries_is_a_transient_error():
    script = Script(httpx.Response(503))
    sleeps: list[float] = []
    with pytest.raises(TransientHTTPError, match="503 after retries"):
        run(get_json(client_for(script, sleeps, retries=3), "/x"))
    assert len(script.requests) == 4 and len(sleeps) == 3


def test_connect_errors_past_the_retries_are_transient():
    script = Script(httpx.ConnectError("refused"))
    with pytest.raises(TransientHTTPError, match="failed after retries"):
        run(get_json(client_for(script, [], retries=2), "/x"))


def test_a_retry_after_beyond_the_cap_is_not_waited_for_in_place():
    script = Script(httpx.Response(429, headers={"Retry-After": "3600"}))
    sleeps: list[float] = []
    with pytest.raises(TransientHTTPError) as err:
        run(get_json(client_for(script, sleeps, max_retry_after=60), "/x"))
    assert sleeps == [] and err.value.retry_after == 3600


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410])
def test_other_4xx_are_permanent_and_not_retried(status):
    script = Script(httpx.Response(status, text="nope"))
    with pytest.raises(PermanentHTTPError) as err:
        run(get_json(client_for(script, []), "/x"))
    assert err.value.status_code == status and len(script.requests) == 1


def test_a_body_that_is_not_json_is_a_malformed_page():
    script = Script(httpx.Response(200, text="<html>oops"))
    with pytest.raises(MalformedPage, match="not JSON"):
        run(get_json(client_for(script, []), "/x"))


def test_a_url_with_its_own_query_keeps_it_when_no_params_are_given():
    script = Script(httpx.Response(200, json=[]))
    client = make_client(base_url="http://api.test", settings=HttpSettings(),
                         transport=httpx.MockTransport(script))
    run(get_json(client, "http://api.test/x?page=3&per_page=10", params=None))
    assert script.requests[0].url.params == httpx.QueryParams("page=3&per_page=10")


def guarded(handler, *, allow: tuple[str, ...] = (), secrets: dict[str, str] | None = None
            ) -> httpx.AsyncClient:
    return make_client(base_url="https://api.test", headers={"X-Api-Key": "k-123456"},
                       transport=httpx.MockTransport(handler), allow_origins=allow,
                       secret_params=secrets, settings=HttpSettings(retries=0))


def test_credentials_follow_a_redirect_within_the_origin_only():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/old":
            return httpx.Response(301, headers={"Location": "/new"})
        if request.url.path == "/away":
            return httpx.Response(302, headers={"Location": "https://cdn.test/page"})
        return httpx.Response(200, json=[])

    async def go() -> None:
        async with guarded(handler) as client:
            await get_json(client, "/old")
            with pytest.raises(ForeignOrigin, match=r"https://cdn\.test is not this source's"):
                await get_json(client, "/away")
        async with guarded(handler, allow=("https://cdn.test",)) as client:
            await get_json(client, "/away")

    asyncio.run(go())
    assert [str(r.url) for r in seen] == [
        "https://api.test/old", "https://api.test/new", "https://api.test/away",
        "https://api.test/away", "https://cdn.test/page"]
    assert seen[1].headers["X-Api-Key"] == "k-123456"  # same origin: the key goes along
    assert "X-Api-Key" not in seen[4].headers  # allowed origin: without it


def test_a_redacted_secret_parameter_is_restored_at_home_and_dropped_elsewhere():
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(200, json=[])

    async def go() -> None:
        async with guarded(handler, allow=("https://cdn.test",),
                           secrets={"api_key": "s3cr3t-value"}) as client:
            await get_json(client, "https://api.test/p?api_key=***&page=2")
            await get_json(client, "https://cdn.test/p?api_key=***&page=3")

    asyncio.run(go())
    assert seen[0].params["api_key"] == "s3cr3t-value" and seen[0].params["page"] == "2"
    assert "api_key" not in seen[1].params and seen[1].params["page"] == "3"


def test_a_body_that_trickles_past_the_deadline_is_a_timeout():
    class Trickle(httpx.AsyncByteStream):
        async def __aiter__(self):
            for _ in range(100):
                await asyncio.sleep(0.05)
                yield b" "

    transport = RetryTransport(
        httpx.MockTransport(lambda request: httpx.Response(200, stream=Trickle())),
        retries=0, deadline=0.3)

    async def go() -> None:
        async with httpx.AsyncClient(transport=transport) as client:
            with pytest.raises(TransientHTTPError, match=r"deadline of 0\.3 s"):
                await get_json(client, "http://api.test/slow")

    asyncio.run(go())


def test_a_reset_in_epoch_milliseconds_is_read_as_such():
    from integrations.http.retry import server_wait

    now = 1_800_000_000.0
    response = httpx.Response(200, headers={"X-RateLimit-Remaining": "0",
                                            "X-RateLimit-Reset": str(int((now + 30) * 1000))})
    assert server_wait(response, now=now) == pytest.approx(30)


def test_an_error_excerpt_never_cuts_a_secret_in_two():
    from integrations.secrets import Redactor, excerpt

    secret = "key-SECRET-q9q9q9q9"
    body = "x" * 190 + f"{secret} is not a valid api_key"
    response = httpx.Response(401, text=body, request=httpx.Request("GET", "https://api.test/"))
    with pytest.raises(PermanentHTTPError) as caught:
        raise_for_status(response)
    shown = Redactor([secret]).text(str(caught.value))
    assert "SECRET" not in shown and "***" in shown
    assert excerpt("short", 200) == "short"
