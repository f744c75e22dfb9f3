"""The coalescer and the webhook app in one process: a fake send, fakeredis for the claims.
(tests/integration/test_serve.py runs the real process on a real Redis.)"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.parse
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from starlette.testclient import TestClient

from integrations.github.settings import GithubSettings
from integrations.registry import load
from integrations.rest.settings import RestSettings
from integrations.webhooks import hmac_digest
from tasks.runs import keys
from tasks.serve.app import Served, create_app
from tasks.serve.deliveries import Deliveries
from tasks.serve.publish import Coalescer

SECRET = "unit-hook-secret"
OCTOKIT = Path(__file__).parents[1] / "fixtures" / "octokit"  # real GitHub payloads


class Sent:
    def __init__(self, *, fail: bool = False) -> None:
        self.batches: list[tuple[str, str, list[Any]]] = []
        self.fail = fail
        self.threads: set[str] = set()

    def __call__(self, source: str, kind: str, batch_id: str, events: str, count: int) -> None:
        self.threads.add(threading.current_thread().name)
        if self.fail:
            raise ConnectionError("broker down")
        decoded = json.loads(events)
        assert len(decoded) == count
        self.batches.append((source, kind, decoded))


def test_a_burst_is_one_batch_per_kind_and_max_items_cuts_it() -> None:
    sent = Sent()

    async def go() -> None:
        coalescer = Coalescer(sent, linger=0.05, limits=lambda s: (10, 1 << 20))
        await asyncio.gather(*(coalescer.add("s", "issue" if i % 2 else "user", [{"n": i}])
                               for i in range(30)))
        await coalescer.add("s", "issue", [{"n": i} for i in range(100, 125)])
        await coalescer.close()

    asyncio.run(go())
    sizes = sorted(len(events) for _s, _k, events in sent.batches)
    assert sizes == [5, 5, 5, 10, 10, 10, 10]  # 15 + 15 in a burst (10 + 5 each), 25: 10 10 5
    assert sorted(e["n"] for _s, _k, events in sent.batches for e in events) == [
        *range(30), *range(100, 125)]
    assert all(name.startswith("sluice-publish") for name in sent.threads)  # off the loop


def test_max_bytes_cuts_a_batch_too() -> None:
    sent = Sent()

    async def go() -> None:
        coalescer = Coalescer(sent, linger=0.01, limits=lambda s: (1000, 1024))
        await coalescer.add("s", "k", [{"text": "x" * 300} for _ in range(10)])
        await coalescer.close()

    asyncio.run(go())
    assert [len(e) for _s, _k, e in sent.batches] == [3, 3, 3, 1]


def test_a_failed_publish_reaches_every_waiter() -> None:
    async def go() -> list[Any]:
        coalescer = Coalescer(Sent(fail=True), linger=0.01, limits=lambda s: (10, 1 << 20))
        got = await asyncio.gather(*(coalescer.add("s", "k", [{"n": i}]) for i in range(3)),
                                   return_exceptions=True)
        await coalescer.close()
        return got

    assert all(isinstance(x, ConnectionError) for x in asyncio.run(go()))


def app_with(sent: Sent) -> tuple[TestClient, fakeredis.FakeAsyncRedis]:
    settings = RestSettings(integration="rest", base_url="https://api.test",
                            webhook_secret=SECRET, kinds={"issue": {"path": "/i"}})
    gh = GithubSettings(integration="github", org="acme", token="t", webhook_secret=SECRET,
                        kinds=["issue"])
    r = fakeredis.FakeAsyncRedis()
    coalescer = Coalescer(sent, linger=0.01, limits=lambda s: (100, 1 << 20))
    app = create_app({"t": Served(settings, load(settings)), "gh": Served(gh, load(gh))},
                     Deliveries(r, ttl=60), coalescer)
    return TestClient(app, follow_redirects=False), r


def post(client: TestClient, payload: Any, *, delivery: str = "d1") -> Any:
    body = json.dumps(payload).encode()
    return client.post("/webhooks/t", content=body, headers={
        "X-Signature": "sha256=" + hmac_digest(SECRET, body).hex(), "X-Delivery-Id": delivery})


EVENT = {"kind": "issue", "action": "edited", "item": {"id": 1}}


def test_a_broker_failure_is_503_and_the_claim_is_released() -> None:
    sent = Sent(fail=True)
    client, _r = app_with(sent)
    with client:
        assert post(client, EVENT).status_code == 503
        sent.fail = False  # the sender retries the same delivery: it is taken
        answer = post(client, EVENT)
        assert (answer.status_code, answer.json()) == (202, {"accepted": 1})
        assert post(client, EVENT).json() == {"duplicate": True}
    assert len(sent.batches) == 1


def test_the_app_counts_what_it_answered() -> None:
    sent = Sent()
    client, r = app_with(sent)
    with client:
        post(client, EVENT)
        post(client, EVENT)
        client.post("/webhooks/t", content=b"{}", headers={"X-Signature": "sha256=00"})
        client.post("/webhooks/other", content=b"{}")
        assert post(client, {"kind": "user", "item": {}}, delivery="d2").status_code == 200

        async def counters() -> dict[str, int]:
            raw = await r.hgetall(keys.METRICS)
            return {k.decode(): int(v) for k, v in raw.items()}

        got = client.portal.call(counters) if client.portal else {}
    assert got == {"webhook_deliveries|t|-|accepted": 1, "webhook_events|t|issue": 1,
                   "webhook_deliveries|t|-|duplicate": 1,
                   "webhook_deliveries|t|-|refused_signature": 1,
                   "webhook_deliveries|-|-|refused_unknown_source": 1,
                   "webhook_deliveries|t|-|empty": 1}


@pytest.mark.parametrize("delivery", ["plain-id_1.2:3", "with space/and?query"])
def test_delivery_keys_are_plain_text(delivery: str) -> None:
    key = keys.webhook_delivery("src", delivery)
    assert key.startswith("sluice:webhook:delivery:src:")
    assert " " not in key and "?" not in key


def github_form(client: TestClient, event: str, raw: bytes, *, path: str = "/webhooks/gh",
                delivery: str = "g1") -> Any:
    """A delivery as a hook created through GitHub's API sends it by default: a form."""
    body = urllib.parse.urlencode({"payload": raw}).encode()
    return client.post(path, content=body, headers={
        "Content-Type": "application/x-www-form-urlencoded", "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": "sha256=" + hmac_digest(SECRET, body).hex()})


def test_a_signed_form_delivery_is_decoded_and_enqueued() -> None:
    sent = Sent()
    client, _r = app_with(sent)
    raw = (OCTOKIT / "issues.opened.json").read_bytes()
    with client:
        answer = github_form(client, "issues", raw)
        assert (answer.status_code, answer.json()) == (202, {"accepted": 1})
        ping = github_form(client, "ping", (OCTOKIT / "ping.json").read_bytes(), delivery="g2")
        assert (ping.status_code, ping.json()) == (200, {"accepted": 0})
        nothing = client.post("/webhooks/gh", content=b"zen=hi", headers={
            "Content-Type": "application/x-www-form-urlencoded", "X-GitHub-Event": "ping",
            "X-Hub-Signature-256": "sha256=" + hmac_digest(SECRET, b"zen=hi").hex()})
        assert (nothing.status_code, nothing.json()) == (
            400, {"error": "the form has no payload field"})
    [(source, kind, [event])] = sent.batches
    assert (source, kind, event["action"]) == ("gh", "issue", "upsert")
    assert event["item"] == json.loads(raw)["issue"]


def test_a_trailing_slash_is_the_same_endpoint_not_a_redirect() -> None:
    sent = Sent()
    client, _r = app_with(sent)
    body = json.dumps(EVENT).encode()
    with client:
        answer = client.post("/webhooks/t/", content=body, headers={
            "X-Signature": "sha256=" + hmac_digest(SECRET, body).hex(), "X-Delivery-Id": "s1"})
        assert (answer.status_code, answer.json()) == (202, {"accepted": 1})
        assert github_form(client, "issues", (OCTOKIT / "issues.deleted.json").read_bytes(),
                           path="/webhooks/gh/").status_code == 202
        assert client.post("/webhooks/nope/", content=b"{}").status_code == 404
        assert client.post("/webhooks/t//", content=body).status_code == 404
        assert client.get("/healthz/").status_code == 404  # no redirect anywhere
    assert [(s, k, e[0]["action"]) for s, k, e in sent.batches] == [
        ("t", "issue", "upsert"), ("gh", "issue", "delete")]
