"""GitHub webhooks (https://docs.github.com/en/webhooks): what an organisation's (or a
repository's) webhook delivers, as upserts and deletes of the source's kinds.

    X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body under the webhook's secret>
    X-GitHub-Delivery:   a GUID, the same when a delivery is redelivered (applied once)
    X-GitHub-Event:      the event; the body's ``action`` says what happened

    issues         issue          deleted, transferred (it left the repository): delete;
                                  every other action (opened, edited, closed, labeled, ...):
                                  upsert. An issue with ``pull_request`` is not an issue here.
    pull_request   pull_request   every action upserts (GitHub never deletes a pull request;
                                  closed is a state)
    issue_comment  issue_comment  deleted: delete; created, edited: upsert. Comments on pull
                                  requests are skipped (a resync reads issues' comments only)
    repository     repository     deleted, and transferred out of the organisation: delete;
                                  every other action: upsert
    ping, others   -              no events

An event of a kind the source does not list is ignored. Items land as a resync writes them: a
comment with ``_parent_id``, ``_parent_number`` and ``_parent_repository`` of its issue
(``with_parent``). GitHub's payloads carry the whole item, so no event asks for a fetch;
``fetch_item`` reads one again from ``base_url`` (never from a URL the payload gives, so the
token stays on its origin), and says None for an item GitHub answers 404 for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from integrations.errors import MalformedPage, WebhookRefused
from integrations.github.names import repository_of
from integrations.github.settings import GithubSettings, Kind
from integrations.paged import PagedIntegration
from integrations.signatures import check_hmac, header, part, text_at
from integrations.webhooks import Action, Event

SIGNATURE = "X-Hub-Signature-256"
DELIVERY = "X-GitHub-Delivery"
EVENT = "X-GitHub-Event"
CURSOR = "updated_at"  # every kind's items carry it


def path_of(kind: str, item: Any) -> str | None:
    """The API path of one item under ``base_url`` (None: the item lacks what it needs)."""
    if not isinstance(item, dict):
        return None
    if kind == Kind.repository:
        name = item.get("full_name")
        return f"/repos/{name}" if isinstance(name, str) and name.count("/") == 1 else None
    if kind == Kind.issue_comment:
        repo, ident = item.get("_parent_repository"), item.get("id")
        return (f"/repos/{repo}/issues/comments/{ident}"
                if isinstance(repo, str) and isinstance(ident, int) else None)
    repo, number = repository_of(item), item.get("number")
    if repo is None and kind == Kind.pull_request:  # a pull request names its base repository
        base = item.get("base")
        full = base.get("repo", {}).get("full_name") if isinstance(base, dict) else None
        repo = full if isinstance(full, str) and full.count("/") == 1 else None
    if repo is None or not isinstance(number, int):
        return None
    return f"/repos/{repo}/{'issues' if kind == Kind.issue else 'pulls'}/{number}"


class GithubWebhooks(PagedIntegration[GithubSettings]):
    """GitHub's ``integrations.webhooks.Webhooks``, the base of ``GithubIntegration``."""

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        """Raises WebhookRefused(status=401) unless ``X-Hub-Signature-256`` signs ``body``."""
        check_hmac(self.settings.webhook_secret, header(headers, SIGNATURE), body,
                   prefix="sha256=")

    def delivery(self, headers: Mapping[str, str], payload: Any) -> str | None:
        return header(headers, DELIVERY) or None

    def events(self, headers: Mapping[str, str], payload: Any
               ) -> list[Event]:
        """The events of one delivery (see the module's table). Raises WebhookRefused(400)."""
        name = header(headers, EVENT)
        kinds = set(self.settings.kinds)
        if not isinstance(payload, dict):
            raise WebhookRefused(f"the payload is not a JSON object (got {type(payload).__name__})")
        action = text_at(payload, "action")
        if name == "issues" and Kind.issue in kinds:
            issue = part(payload, "issue")
            if "pull_request" in issue:  # as the resync drops them from the issues list
                return []
            deleted = action in ("deleted", "transferred")
            return [Event(Kind.issue, Action.DELETE if deleted else Action.UPSERT, issue)]
        if name == "pull_request" and Kind.pull_request in kinds:
            return [Event(Kind.pull_request, Action.UPSERT, part(payload, "pull_request"))]
        if name == "issue_comment" and Kind.issue_comment in kinds:
            comment, issue = part(payload, "comment"), part(payload, "issue")
            if "pull_request" in issue:  # a comment on a pull request: not read by a resync
                return []
            item = self.with_parent(Kind.issue_comment,
                                           self.parent_ref(Kind.issue, issue), comment)
            return [Event(Kind.issue_comment,
                          Action.DELETE if action == "deleted" else Action.UPSERT, item)]
        if name == "repository" and Kind.repository in kinds:
            repository = part(payload, "repository")
            owner = repository.get("owner")
            login = owner.get("login") if isinstance(owner, dict) else None
            gone = action == "deleted" or (
                action == "transferred" and isinstance(login, str)
                and login.lower() != self.settings.org.lower())
            return [Event(Kind.repository, Action.DELETE if gone else Action.UPSERT, repository)]
        return []  # ping, an event of a kind not listed, or one Sluice does not read

    async def fetch_item(self, kind: str, client: httpx.AsyncClient,
                         item: Any) -> Any | None:
        path = path_of(kind, item)
        if path is None:
            raise MalformedPage(f"a {kind} event whose item names no API path to fetch it by")
        got = await self.get_item(client, path)
        if kind == Kind.issue_comment and isinstance(got, dict) and isinstance(item, dict):
            ref = {"id": item.get("_parent_id"), "number": item.get("_parent_number"),
                   "repository": item.get("_parent_repository")}
            return self.with_parent(kind, ref, got)
        if kind == Kind.issue and isinstance(got, dict) and "pull_request" in got:
            return None  # not an issue here
        return got

    def cursor_path(self, kind: str) -> str | None:
        return CURSOR
