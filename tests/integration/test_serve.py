"""A real ``sluice serve`` process on a real Redis, real signed HTTP requests: what lands in
the broker's queue (the Redis list of the Celery queue), and what does not. No workers run:
the messages stay in the queue, where the tests read them."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from integrations.webhooks import hmac_digest
from tasks.messages import URGENT
from tasks.runs import keys
from tests.support.configs import github_webhook_source, rest_source, sqlite_target, toml
from tests.support.serve import Serve, post_many
from tests.support.serve import signed as sign

pytestmark = pytest.mark.integration  # a `sluice serve` process

SECRET = "hook-5e1f0c9b-never-log-me"
TOKEN = "ghp-tok-77a1-never-log-me"
OCTOKIT = Path(__file__).parents[1] / "fixtures" / "octokit"  # real GitHub payloads
GITHUB_WINDOW = 72 * 3600  # GitHub redelivers a delivery up to 3 days after it sent it

NOWHERE = "http://127.0.0.1:9"  # `sluice serve` reads no API


def config_text(tmp: Path) -> str:
    return toml(
        sqlite_target(tmp / "db.sqlite"),
        github_webhook_source(token_env="SERVE_GH_TOKEN", secret_env="SERVE_HOOK_SECRET",
                              kinds=["repository", "issue", "pull_request", "issue_comment"]),
        rest_source(NOWHERE, 'webhook_secret = "${SERVE_HOOK_SECRET}"', "webhook_max_bytes = 2048",
                    "max_batch_items = 50", "[sources.tracker.webhook]",
                    'kinds = { ticket = "issue" }', "[sources.tracker.kinds.issue]",
                    'path = "/api/issues"', source="tracker"),
        rest_source(NOWHERE, "[sources.quiet.kinds.issue]", 'path = "/api/issues"',
                    source="quiet"))


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Serve]:
    tmp = tmp_path_factory.mktemp("serve")
    (tmp / "sluice.toml").write_text(config_text(tmp))
    server = Serve(tmp / "sluice.toml", redis_url, log=tmp / "serve.log",
                   env={"SERVE_HOOK_SECRET": SECRET, "SERVE_GH_TOKEN": TOKEN}).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def r(serve: Serve, redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.delete(URGENT)
    yield client
    client.close()


def signed(body: bytes, *, secret: str = SECRET) -> str:
    return sign(body, secret)


def github(serve: Serve, event: str, payload: Any, *, delivery: str | None = None,
           signature: str | None = "sign") -> httpx.Response:
    body = json.dumps(payload).encode()
    headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
               "Content-Type": "application/json"}
    if signature == "sign":
        headers["X-Hub-Signature-256"] = signed(body)
    elif signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return serve.http.post("/webhooks/gh", content=body, headers=headers)


def messages(r: redis.Redis) -> list[tuple[str, list[Any]]]:
    """(task name, args) of every message in the queue, oldest first."""
    found = []
    for raw in reversed(r.lrange(URGENT, 0, -1)):  # kombu LPUSHes: the oldest is last
        message = json.loads(raw)
        body = message["body"]  # as it is, unless the message says base64 (an older sender)
        if message["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        # the body as JSON in the envelope (body_encoding "json"), or as a string in it
        decoded = body if message["properties"].get("body_encoding") == "json" else json.loads(body)
        args, _kwargs, _embed = decoded
        found.append((message["headers"]["task"], args))
    return found


def issue(n: int, **extra: Any) -> dict[str, Any]:
    return {"id": 9000 + n, "number": n, "title": f"Issue {n}", "state": "open",
            "repository_url": "https://api.github.com/repos/acme/repo1",
            "updated_at": "2026-11-20T10:00:00Z", **extra}


def test_a_signed_issue_event_is_one_message_in_the_queue(serve: Serve, r: redis.Redis
                                                          ) -> None:
    answer = github(serve, "issues", {"action": "opened", "issue": issue(1)},
                    delivery="d-opened-1")
    assert answer.status_code == 202
    assert answer.json() == {"accepted": 1}
    [(task, args)] = messages(r)
    assert task == "sluice.webhook_batch"
    source, kind, _batch_id, events = args
    assert (source, kind) == ("gh", "issue")
    assert json.loads(events) == [{"delivery": "d-opened-1", "action": "upsert",
                                   "item": issue(1), "fetch": False}]


def test_a_comment_lands_with_its_issue_fields_and_a_delete_is_a_delete(
        serve: Serve, r: redis.Redis) -> None:
    comment = {"id": 77, "body": "hi", "updated_at": "2026-11-20T10:00:00Z"}
    assert github(serve, "issue_comment", {"action": "deleted", "comment": comment,
                                           "issue": issue(2)}).status_code == 202
    [(_task, [_source, kind, _batch, events])] = messages(r)
    [event] = json.loads(events)
    assert kind == "issue_comment" and event["action"] == "delete"
    assert event["item"] == {**comment, "_parent_id": 9002, "_parent_number": 2,
                             "_parent_repository": "acme/repo1"}


def test_a_burst_is_coalesced_and_every_event_is_in_exactly_one_message(
        serve: Serve, r: redis.Redis) -> None:
    # 400 deliveries, 200 at once: more than a Redis connection each (they queue for one).
    requests = []
    for n in range(400):
        body = json.dumps({"action": "edited", "issue": issue(n)}).encode()
        requests.append(("/webhooks/gh", body, {
            "X-GitHub-Event": "issues", "X-GitHub-Delivery": f"burst-{n}",
            "X-Hub-Signature-256": signed(body), "Content-Type": "application/json"}))
    answers = asyncio.run(post_many(serve.url, requests, concurrency=200))
    assert [a.status for a in answers] == [202] * 400, {a.body for a in answers}
    found = messages(r)
    numbers = [e["item"]["number"] for _t, args in found for e in json.loads(args[3])]
    assert sorted(numbers) == list(range(400))  # each once
    assert len(found) < 100, f"{len(found)} messages for 400 events: not coalesced"


def test_a_wrong_or_missing_signature_is_401_and_nothing_is_enqueued(
        serve: Serve, r: redis.Redis) -> None:
    payload = {"action": "opened", "issue": issue(3)}
    wrong = "sha256=" + hmac_digest("another-secret", json.dumps(payload).encode()).hex()
    assert github(serve, "issues", payload, signature=wrong).status_code == 401
    assert github(serve, "issues", payload, signature=None).status_code == 401
    body = json.dumps(payload).encode()
    tampered = body.replace(b"Issue 3", b"Issue 4")
    answer = serve.http.post("/webhooks/gh", content=tampered, headers={
        "X-GitHub-Event": "issues", "X-Hub-Signature-256": signed(body)})
    assert answer.status_code == 401
    assert messages(r) == []


def test_bad_json_is_400_and_a_ping_is_no_event(serve: Serve, r: redis.Redis) -> None:
    body = b"{not json"
    answer = serve.http.post("/webhooks/gh", content=body, headers={
        "X-GitHub-Event": "issues", "X-Hub-Signature-256": signed(body)})
    assert answer.status_code == 400
    # Python's json reads these; they are not JSON, and PostgreSQL's jsonb refuses them.
    for number in (b"NaN", b"Infinity", b"-Infinity", b"1e400"):
        body = b'{"action": "opened", "issue": {"id": 1, "number": 1, "title": ' + number + b"}}"
        answer = serve.http.post("/webhooks/gh", content=body, headers={
            "X-GitHub-Event": "issues", "X-Hub-Signature-256": signed(body)})
        assert (answer.status_code, answer.json()) == (400, {"error": "the body is not JSON"})
    assert github(serve, "ping", {"zen": "Keep it logically awesome."}).status_code == 200
    assert github(serve, "issues", {"action": "opened"}).status_code == 400  # no issue
    assert messages(r) == []


def test_a_body_over_the_limit_is_413(serve: Serve, r: redis.Redis) -> None:
    body = json.dumps({"kind": "ticket", "item": {"id": 1, "text": "x" * 4000}}).encode()
    answer = serve.http.post("/webhooks/tracker", content=body,
                             headers={"X-Signature": signed(body)})
    assert answer.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it streams
        yield body[:1000]
        yield body[1000:]

    answer = serve.http.post("/webhooks/tracker", content=chunks(),
                             headers={"X-Signature": signed(body)})
    assert answer.status_code == 413
    assert messages(r) == []


def test_a_redelivery_is_enqueued_once(serve: Serve, r: redis.Redis) -> None:
    payload = {"action": "closed", "issue": issue(5)}
    first = github(serve, "issues", payload, delivery="d-dup-5")
    again = github(serve, "issues", payload, delivery="d-dup-5")
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json() == {"duplicate": True}
    assert len(messages(r)) == 1
    assert r.exists(keys.webhook_delivery("gh", "d-dup-5"))


def test_a_rest_source_maps_its_event_kinds(serve: Serve, r: redis.Redis) -> None:
    body = json.dumps({"kind": "ticket", "action": "deleted", "item": {"id": 8}}).encode()
    answer = serve.http.post("/webhooks/tracker", content=body, headers={
        "X-Signature": signed(body), "X-Delivery-Id": "t-8"})
    assert answer.status_code == 202
    [(_task, [source, kind, _batch, events])] = messages(r)
    assert (source, kind) == ("tracker", "issue")
    assert json.loads(events) == [{"delivery": "t-8", "action": "delete", "item": {"id": 8},
                                   "fetch": False}]


def test_unknown_sources_and_sources_without_a_secret_are_404_alike(
        serve: Serve, r: redis.Redis) -> None:
    body = b"{}"
    for source in ("nope", "quiet"):
        answer = serve.http.post(f"/webhooks/{source}", content=body,
                                 headers={"X-Signature": signed(body)})
        assert (answer.status_code, answer.json()) == (404, {"error": "not found"})
    assert serve.http.get("/webhooks/gh").status_code == 405
    assert serve.http.get("/metrics").status_code == 404
    assert serve.http.get("/healthz").json() == {"ok": True}
    assert messages(r) == []


def test_deliveries_are_counted_and_the_secret_is_nowhere(serve: Serve, r: redis.Redis
                                                         ) -> None:
    github(serve, "issues", {"action": "opened", "issue": issue(6)}, signature="sha256=00")
    assert github(serve, "issues", {"action": "opened", "issue": issue(6)}).status_code == 202
    counters = {k.decode(): float(v) for k, v in r.hgetall(keys.METRICS).items()}
    assert counters["webhook_deliveries|gh|-|accepted"] >= 1
    assert counters["webhook_deliveries|gh|-|refused_signature"] >= 1
    assert counters["webhook_events|gh|issue"] >= 1
    everything = serve.log.read_text() + json.dumps(messages(r), default=str)
    everything += " ".join(k.decode() for k in r.keys("*"))
    assert SECRET not in everything
    assert TOKEN not in everything


def github_form(serve: Serve, event: str, raw: bytes, *, delivery: str,
                path: str = "/webhooks/gh") -> httpx.Response:
    """A delivery as a GitHub hook created through the API sends it by default."""
    body = urllib.parse.urlencode({"payload": raw}).encode()
    return serve.http.post(path, content=body, headers={
        "Content-Type": "application/x-www-form-urlencoded", "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery, "X-Hub-Signature-256": signed(body)})


def test_a_real_form_encoded_delivery_is_verified_decoded_and_enqueued(
        serve: Serve, r: redis.Redis) -> None:
    raw = (OCTOKIT / "issues.opened.json").read_bytes()
    answer = github_form(serve, "issues", raw, delivery="d-form-1")
    assert (answer.status_code, answer.json()) == (202, {"accepted": 1})
    [(_task, [source, kind, _batch, events])] = messages(r)
    assert (source, kind) == ("gh", "issue")
    assert json.loads(events) == [{"delivery": "d-form-1", "action": "upsert",
                                   "item": json.loads(raw)["issue"], "fetch": False}]
    ping = github_form(serve, "ping", (OCTOKIT / "ping.json").read_bytes(), delivery="d-ping")
    assert (ping.status_code, ping.json()) == (200, {"accepted": 0})
    for body, why in [(b"zen=hello", "the form has no payload field"),
                      (b"payload=%7B%22n%22%3A+NaN%7D", "the form's payload is not JSON")]:
        refused = serve.http.post("/webhooks/gh", content=body, headers={
            "Content-Type": "application/x-www-form-urlencoded", "X-GitHub-Event": "issues",
            "X-Hub-Signature-256": signed(body)})
        assert (refused.status_code, refused.json()) == (400, {"error": why})
    assert len(messages(r)) == 1


def test_a_post_with_a_trailing_slash_is_answered_not_redirected(serve: Serve, r: redis.Redis
                                                               ) -> None:
    raw = (OCTOKIT / "issues.deleted.json").read_bytes()
    answer = github_form(serve, "issues", raw, delivery="d-slash", path="/webhooks/gh/")
    assert (answer.status_code, answer.json()) == (202, {"accepted": 1})
    [(_task, [_source, _kind, _batch, events])] = messages(r)
    assert json.loads(events)[0]["action"] == "delete"
    assert serve.http.post("/webhooks/nope/", content=b"{}").status_code == 404


def test_a_delivery_is_claimed_for_longer_than_githubs_redeliveries(
        serve: Serve, r: redis.Redis) -> None:
    assert github(serve, "issues", {"action": "closed", "issue": issue(7)},
                  delivery="d-ttl-7").status_code == 202
    assert r.ttl(keys.webhook_delivery("gh", "d-ttl-7")) > GITHUB_WINDOW
