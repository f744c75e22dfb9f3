"""Each integration's webhook side: signatures (good, wrong, missing, tampered), a body as
JSON or as a form, every event to its Event, ignored events, pull requests vs issues, and
fetch_item against httpx.MockTransport."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from integrations.errors import MalformedPage, WebhookRefused
from integrations.github.fake import comment as gh_comment
from integrations.github.fake import issue as gh_issue
from integrations.github.integration import GithubIntegration
from integrations.github.settings import GithubSettings
from integrations.jira.fake import issue as jira_issue
from integrations.jira.integration import JiraIntegration
from integrations.jira.settings import DEFAULT_FIELDS, JiraSettings
from integrations.paged import PagedIntegration
from integrations.rest.integration import RestIntegration
from integrations.rest.settings import RestSettings
from integrations.webhooks import FORM, Action, Event, decode, webhooks_of

SECRET = "s3cret-for-hooks"
OCTOKIT = Path(__file__).parents[1] / "fixtures" / "octokit"  # real GitHub payloads
BODY = b'{"action": "opened"}'


def sign(body: bytes, *, secret: str = SECRET, algorithm: str = "sha256") -> str:
    return hmac.new(secret.encode(), body, getattr(hashlib, algorithm)).hexdigest()


def github(**kw: Any) -> GithubIntegration:
    kw.setdefault("kinds", ["repository", "issue", "pull_request", "issue_comment"])
    return GithubIntegration(GithubSettings(integration="github", org="acme", token="t",
                                            webhook_secret=SECRET, **kw))


def jira(**kw: Any) -> JiraIntegration:
    kw.setdefault("kinds", ["project", "issue", "comment"])
    return JiraIntegration(JiraSettings(integration="jira", base_url="https://x.atlassian.net",
                                        email="a@b.c", api_token="t", webhook_secret=SECRET,
                                        **kw))


def rest(webhook: dict[str, Any] | None = None, **kw: Any) -> RestIntegration:
    kinds = kw.pop("kinds", {"issue": {"path": "/api/issues", "cursor_path": "modified"},
                             "note": {"path": "/api/notes",
                                      "incremental": {"cursor_path": "updated_at",
                                                      "param": "since"}}})
    return RestIntegration(RestSettings(integration="rest", base_url="https://api.test",
                                        webhook_secret=SECRET, kinds=kinds,
                                        webhook=webhook or {}, **kw))


def fetch(integration: Any, kind: str, item: Any, handler: Any) -> Any:
    async def go() -> Any:
        async with httpx.AsyncClient(base_url=integration.settings.base_url,
                                     transport=httpx.MockTransport(handler)) as client:
            return await integration.fetch_item(kind, client, item)
    return asyncio.run(go())


# -- the capability

def test_webhooks_are_a_capability_the_three_integrations_have_and_a_plain_one_lacks() -> None:
    for integration in (github(), jira(), rest()):
        assert webhooks_of(integration) is integration

    class Plain(PagedIntegration[RestSettings]):
        pass

    assert webhooks_of(Plain(rest().settings)) is None


# -- signatures

@pytest.mark.parametrize("make, header", [(github, "X-Hub-Signature-256"),
                                          (jira, "X-Hub-Signature")])
def test_a_signed_body_passes_and_any_other_is_401(make: Any, header: str) -> None:
    integration = make()
    integration.verify({header: "sha256=" + sign(BODY)}, BODY)
    integration.verify({header.lower(): "sha256=" + sign(BODY).upper()}, BODY)  # any case
    for headers, body in [({}, BODY),  # missing
                          ({header: ""}, BODY),
                          ({header: "sha256=" + sign(BODY, secret="other-secret")}, BODY),
                          ({header: sign(BODY)}, BODY),  # no prefix
                          ({header: "sha1=" + sign(BODY, algorithm="sha1")}, BODY),
                          ({header: "sha256=" + sign(BODY)}, BODY + b" ")]:  # tampered
        with pytest.raises(WebhookRefused) as refused:
            integration.verify(headers, body)
        assert refused.value.status == 401
        assert SECRET not in str(refused.value)


def test_a_source_without_a_secret_refuses_every_delivery() -> None:
    integration = GithubIntegration(GithubSettings(integration="github", org="acme", token="t"))
    with pytest.raises(WebhookRefused) as refused:
        integration.verify({"X-Hub-Signature-256": "sha256=" + sign(BODY)}, BODY)
    assert refused.value.status == 401


def test_rest_signatures_are_as_configured() -> None:
    integration = rest({"signature_header": "X-Sig", "signature_prefix": "",
                        "algorithm": "sha512", "encoding": "base64"})
    digest = hmac.new(SECRET.encode(), BODY, hashlib.sha512).digest()
    integration.verify({"x-sig": base64.b64encode(digest).decode()}, BODY)
    with pytest.raises(WebhookRefused):
        integration.verify({"X-Sig": digest.hex()}, BODY)
    rest().verify({"X-Signature": "sha256=" + sign(BODY)}, BODY)  # the defaults


def test_rest_webhook_keys_are_checked() -> None:
    with pytest.raises(ValidationError, match="signatur_header"):
        rest({"signatur_header": "X"})
    with pytest.raises(ValidationError, match="not a kind"):
        rest({"kinds": {"ticket": "nope"}})
    with pytest.raises(ValidationError, match="names no item field"):
        rest({"fetch": {"issue": "/api/issues/{id}"}})


# -- delivery ids

def test_delivery_ids_come_from_each_apis_header() -> None:
    assert github().delivery({"X-GitHub-Delivery": "72d3162e"}, {}) == "72d3162e"
    assert jira().delivery({"x-atlassian-webhook-identifier": "abc-1"}, {}) == "abc-1"
    assert rest().delivery({"X-Delivery-Id": "r1"}, {}) == "r1"
    assert rest({"delivery_header": ""}).delivery({"X-Delivery-Id": "r1"}, {}) is None
    assert github().delivery({}, {}) is None


# -- GitHub events

def gh_events(event: str, payload: Any, **kw: Any) -> list[Event]:
    return github(**kw).events({"X-GitHub-Event": event}, payload)


def test_github_issue_actions_are_upserts_but_deleted_and_transferred() -> None:
    item = gh_issue(1, 3, pull=False)
    for action in ("opened", "edited", "closed", "reopened", "labeled", "assigned"):
        assert gh_events("issues", {"action": action, "issue": item}) == [
            Event("issue", Action.UPSERT, item)]
    for action in ("deleted", "transferred"):
        assert gh_events("issues", {"action": action, "issue": item}) == [
            Event("issue", Action.DELETE, item)]


def test_a_pull_request_is_never_an_issue_nor_deleted() -> None:
    pull = gh_issue(1, 4, pull=True)
    assert gh_events("issues", {"action": "opened", "issue": pull}) == []
    assert gh_events("pull_request", {"action": "closed", "pull_request": pull}) == [
        Event("pull_request", Action.UPSERT, pull)]


def test_a_github_comment_lands_as_the_resync_writes_it() -> None:
    item, note = gh_issue(1, 3, pull=False), gh_comment("acme", 1, 3, 0)
    expected = {**note, "_parent_id": item["id"], "_parent_number": 3,
                "_parent_repository": "acme/repo1"}
    assert gh_events("issue_comment", {"action": "created", "comment": note, "issue": item}
                     ) == [Event("issue_comment", Action.UPSERT, expected)]
    assert gh_events("issue_comment", {"action": "deleted", "comment": note, "issue": item}
                     ) == [Event("issue_comment", Action.DELETE, expected)]
    pull = gh_issue(1, 4, pull=True)  # a comment on a pull request: not read by a resync
    assert gh_events("issue_comment", {"action": "created", "comment": note, "issue": pull}
                     ) == []


def test_github_repository_events() -> None:
    repo = {"id": 1, "full_name": "acme/r", "owner": {"login": "acme"}}
    assert gh_events("repository", {"action": "archived", "repository": repo}) == [
        Event("repository", Action.UPSERT, repo)]
    assert gh_events("repository", {"action": "deleted", "repository": repo}) == [
        Event("repository", Action.DELETE, repo)]
    assert gh_events("repository", {"action": "transferred", "repository": repo}) == [
        Event("repository", Action.UPSERT, repo)]  # into the organisation
    away = {**repo, "owner": {"login": "elsewhere"}}
    assert gh_events("repository", {"action": "transferred", "repository": away}) == [
        Event("repository", Action.DELETE, away)]


def test_github_ignores_pings_other_events_and_kinds_not_listed() -> None:
    assert gh_events("ping", {"zen": "Design for failure.", "hook_id": 1}) == []
    assert gh_events("push", {"ref": "refs/heads/main"}) == []
    item = gh_issue(1, 3, pull=False)
    assert gh_events("issues", {"action": "opened", "issue": item},
                     kinds=["repository", "pull_request"]) == []


@pytest.mark.parametrize("payload", [[], "x", {"action": "opened"},
                                     {"action": "opened", "issue": [1]}])
def test_github_payloads_without_their_item_are_400(payload: Any) -> None:
    with pytest.raises(WebhookRefused) as refused:
        gh_events("issues", payload)
    assert refused.value.status == 400


def test_github_fetch_item_reads_from_base_url_and_404_is_gone() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.url.host}{request.url.path}")
        if request.url.path.endswith("/7"):
            return httpx.Response(404, json={"message": "Not Found"})
        return httpx.Response(200, json={"id": 1, "fresh": True})

    integration = github()
    item = {**gh_issue(1, 3, pull=False), "url": "https://evil.example/steal"}
    assert fetch(integration, "issue", item, handler) == {"id": 1, "fresh": True}
    assert fetch(integration, "issue", {**item, "number": 7}, handler) is None
    note = {"id": 55, "_parent_id": 9, "_parent_number": 3, "_parent_repository": "acme/repo1"}
    assert fetch(integration, "issue_comment", note, handler) == {
        "id": 1, "fresh": True, "_parent_id": 9, "_parent_number": 3,
        "_parent_repository": "acme/repo1"}
    assert seen == ["api.github.com/repos/acme/repo1/issues/3",
                    "api.github.com/repos/acme/repo1/issues/7",
                    "api.github.com/repos/acme/repo1/issues/comments/55"]


def test_cursor_paths() -> None:
    assert github().cursor_path("issue") == "updated_at"
    assert jira().cursor_path("issue") == "fields.updated"
    assert jira().cursor_path("comment") == "updated"
    assert jira(fields=["summary"]).cursor_path("issue") is None  # its items lack fields.updated
    assert jira().cursor_path("project") is None
    assert rest().cursor_path("issue") == "modified"
    assert rest().cursor_path("note") == "updated_at"


# -- Jira events

def jira_events(payload: Any, **kw: Any) -> list[Event]:
    return jira(**kw).events({}, payload)


def test_jira_issue_events_keep_the_configured_fields_only() -> None:
    item = jira_issue(1)
    whole = {**item, "fields": {**item["fields"], "customfield_10010": "x", "labels": []}}
    [created] = jira_events({"webhookEvent": "jira:issue_created", "issue": whole})
    searched = {**item, "fields": {f: item["fields"][f] for f in DEFAULT_FIELDS}}
    assert created == Event("issue", Action.UPSERT, searched)  # as the search gives it
    [updated] = jira_events({"webhookEvent": "jira:issue_updated", "issue": whole})
    assert updated.action == Action.UPSERT and not updated.fetch
    [deleted] = jira_events({"webhookEvent": "jira:issue_deleted", "issue": whole})
    assert deleted == Event("issue", Action.DELETE, whole)


def test_a_jira_issue_lacking_a_configured_field_is_fetched() -> None:
    item = jira_issue(1)
    del item["fields"]["assignee"]
    [event] = jira_events({"webhookEvent": "jira:issue_updated", "issue": item})
    assert event.fetch
    [event] = jira_events({"webhookEvent": "jira:issue_updated", "issue": jira_issue(1)},
                          fields=["*all"])
    assert not event.fetch and event.item == jira_issue(1)


def test_jira_comment_events_carry_their_issue() -> None:
    note = {"id": "10001", "body": "hi", "updated": "2026-11-20T10:00:00.000+0000"}
    item = jira_issue(1)
    expected = {**note, "_parent_key": item["key"], "_parent_id": item["id"]}
    for name, action in [("comment_created", Action.UPSERT), ("comment_updated", Action.UPSERT),
                         ("comment_deleted", Action.DELETE)]:
        assert jira_events({"webhookEvent": name, "comment": note, "issue": item}) == [
            Event("comment", action, expected)]
    with pytest.raises(WebhookRefused):
        jira_events({"webhookEvent": "comment_created", "comment": note})


def test_jira_ignores_other_events_and_kinds_not_listed() -> None:
    assert jira_events({"webhookEvent": "sprint_started", "sprint": {}}) == []
    assert jira_events({"webhookEvent": "comment_created", "comment": {}, "issue": {}},
                       kinds=["project", "issue"]) == []
    with pytest.raises(WebhookRefused):
        jira_events({"webhookEvent": "jira:issue_created"})
    with pytest.raises(WebhookRefused):
        jira_events([1])


def test_jira_fetch_item_asks_for_the_configured_fields() -> None:
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        if "10002" in request.url.path:
            return httpx.Response(404, json={"errorMessages": ["gone"]})
        return httpx.Response(200, json={"id": "20001", "fields": {}})

    integration = jira(fields=["summary", "updated"])
    assert fetch(integration, "issue", {"id": "20001"}, handler) == {"id": "20001",
                                                                     "fields": {}}
    assert seen[0].path == "/rest/api/3/issue/20001"
    assert seen[0].params["fields"] == "summary,updated"
    note = {"id": "10002", "_parent_key": "P-1", "_parent_id": "1"}
    assert fetch(integration, "comment", note, handler) is None
    assert seen[1].path == "/rest/api/3/issue/P-1/comment/10002"
    with pytest.raises(MalformedPage, match="alphanumeric"):  # never a path
        fetch(integration, "issue", {"id": "../x"}, handler)
    assert len(seen) == 2


# -- REST events

def test_rest_events_follow_the_webhook_section() -> None:
    integration = rest({"kinds": {"ticket": "issue"}, "kind_path": "meta.type",
                        "item_path": "data", "action_path": "meta.op",
                        "delete_actions": ["removed"],
                        "fetch": {"issue": "/api/issues/{item.id}"}})
    item = {"id": "a b"}
    assert integration.events({}, {"meta": {"type": "ticket", "op": "changed"},
                                   "data": item}) == [Event("issue", Action.UPSERT, item,
                                                            fetch=True)]
    assert integration.events({}, {"meta": {"type": "ticket", "op": "removed"},
                                   "data": item}) == [Event("issue", Action.DELETE, item)]
    assert integration.events({}, {"meta": {"type": "user"}, "data": item}) == []
    with pytest.raises(WebhookRefused):
        integration.events({}, {"meta": {"type": "ticket"}})
    with pytest.raises(WebhookRefused):
        integration.events({}, {"data": item})  # no kind

    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode())
        return httpx.Response(200, json={"id": "a b", "full": True})

    assert fetch(integration, "issue", item, handler) == {"id": "a b", "full": True}
    assert seen == ["/api/issues/a%20b"]
    with pytest.raises(MalformedPage):  # not "gone": the item cannot say where it is
        fetch(integration, "issue", {"no": "id"}, handler)
    for dots in (".", ".."):  # /api/issues/.. would be /api: another path, with the token
        with pytest.raises(MalformedPage, match="not a path segment"):
            fetch(integration, "issue", {"id": dots}, handler)
    assert seen == ["/api/issues/a%20b"]


def test_rest_kind_from_a_header_and_the_kind_names_themselves() -> None:
    integration = rest({"kind_header": "X-Event"})
    assert integration.events({"x-event": "note"}, {"item": {"id": 1}}) == [
        Event("note", Action.UPSERT, {"id": 1})]
    assert integration.events({"x-event": "other"}, {"item": {"id": 1}}) == []
    body = json.dumps({"kind": "issue", "action": "deleted", "item": {"id": 2}})
    assert rest().events({}, json.loads(body)) == [Event("issue", Action.DELETE, {"id": 2})]


def form(payload: bytes | str) -> bytes:
    """A body as GitHub sends it with content type form: ``payload=`` + the JSON, encoded."""
    return urllib.parse.urlencode({"payload": payload}).encode()


@pytest.mark.parametrize("name", ["issues.opened.json", "issues.deleted.json", "ping.json"])
def test_a_real_github_payload_reads_the_same_as_json_and_as_a_form(name: str) -> None:
    raw = (OCTOKIT / name).read_bytes()
    as_json = decode("application/json", raw)
    assert decode(FORM, form(raw)) == as_json
    assert decode("Application/X-WWW-Form-URLencoded; charset=utf-8", form(raw)) == as_json
    assert decode(None, raw) == as_json  # no Content-Type: JSON, as before


def test_a_form_delivery_is_verified_over_its_raw_body() -> None:
    body = form((OCTOKIT / "issues.opened.json").read_bytes())
    github().verify({"X-Hub-Signature-256": "sha256=" + sign(body)}, body)
    payload = decode(FORM, body)
    [event] = github().events({"X-GitHub-Event": "issues"}, payload)
    assert (event.kind, event.action, event.item["id"]) == ("issue", Action.UPSERT, 444500041)
    inner = urllib.parse.parse_qs(body.decode())["payload"][0].encode()
    with pytest.raises(WebhookRefused):  # signed over the JSON inside: not what was sent
        github().verify({"X-Hub-Signature-256": "sha256=" + sign(inner)}, body)


@pytest.mark.parametrize(("content_type", "body", "why"), [
    ("application/json", b"{not json", "the body is not JSON"),
    ("application/json", b'{"n": NaN}', "the body is not JSON"),
    ("application/json", b'{"n": 1e400}', "the body is not JSON"),
    (FORM, b"", "the form has no payload field"),
    (FORM, b"zen=hello", "the form has no payload field"),
    (FORM, form("{}") + b"&" + form("[]"), "the form has more than one payload field"),
    (FORM, b"payload", "the body is not a form (application/x-www-form-urlencoded)"),
    (FORM, b"payload=%FF%FE", "the body is not a form (application/x-www-form-urlencoded)"),
    (FORM, b"a=1&" * 20 + form("{}"), "the body is not a form (application/x-www-form-urlencoded)"),
    (FORM, form('{"n": Infinity}'), "the form's payload is not JSON"),
    (FORM, form('{"n": -1e400}'), "the form's payload is not JSON"),
    (FORM, form("[" * 100_000), "the form's payload is not JSON"),
    (FORM, b'{"action": "opened"}',  # JSON that says it is a form
     "the body is not a form (application/x-www-form-urlencoded)"),
])
def test_a_body_that_is_not_json_nor_a_form_of_json_is_400_saying_why(
        content_type: str, body: bytes, why: str) -> None:
    with pytest.raises(WebhookRefused) as refused:
        decode(content_type, body)
    assert (refused.value.status, str(refused.value)) == (400, why)
