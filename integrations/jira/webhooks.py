"""Jira Cloud webhooks (https://developer.atlassian.com/cloud/jira/platform/webhooks/): an
admin webhook registered with a secret, as upserts and deletes of the source's kinds.

    X-Hub-Signature:                 sha256=<hex HMAC-SHA256 of the raw body> (WebSub's
                                     ``method=signature``; Jira signs only webhooks that were
                                     given a secret)
    X-Atlassian-Webhook-Identifier:  the delivery's id, unchanged across Jira's retries
    body ``webhookEvent``            what happened:

    jira:issue_created, jira:issue_updated   issue    upsert
    jira:issue_deleted                       issue    delete
    comment_created, comment_updated         comment  upsert (with the issue's _parent_key
                                                      and _parent_id, as a resync writes it)
    comment_deleted                          comment  delete
    anything else                            -        no events

An event of a kind the source does not list is ignored. Register the webhook with the JQL
filter of the source's ``jql``: Jira sends events of every issue the filter matches, and a
resync reads those only.

Fields: a resync asks the search for the source's ``fields`` only; a webhook's issue carries
every field. So an issue upsert lands with ``fields`` cut to the configured ones (the same
item, the same row), and without a fetch: it costs no request. Only when the payload lacks a
configured field (Jira leaves out some it did not render) is the event marked ``fetch``: the
worker reads ``GET /rest/api/3/issue/{id}?fields=...`` under the source's rate limit. A
``fields`` list with a special entry (``*all``, ``*navigable``, ``-summary``) keeps the
webhook's fields whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from integrations.errors import MalformedPage, WebhookRefused
from integrations.jira.settings import JiraSettings, Kind
from integrations.paged import PagedIntegration
from integrations.signatures import check_hmac, header, part, text_at
from integrations.webhooks import Action, Event

SIGNATURE = "X-Hub-Signature"
DELIVERY = "X-Atlassian-Webhook-Identifier"
ISSUE = "/rest/api/3/issue/{id}"
COMMENT = "/rest/api/3/issue/{issue}/comment/{id}"
CURSORS: dict[str, str] = {Kind.issue: "fields.updated", Kind.comment: "updated"}

ISSUE_EVENTS = {"jira:issue_created": Action.UPSERT, "jira:issue_updated": Action.UPSERT,
                "jira:issue_deleted": Action.DELETE}
COMMENT_EVENTS = {"comment_created": Action.UPSERT, "comment_updated": Action.UPSERT,
                  "comment_deleted": Action.DELETE}


class JiraWebhooks(PagedIntegration[JiraSettings]):
    """Jira's ``integrations.webhooks.Webhooks``, the base of ``JiraIntegration``."""

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        """Raises WebhookRefused(status=401) unless ``X-Hub-Signature`` signs ``body``."""
        check_hmac(self.settings.webhook_secret, header(headers, SIGNATURE), body,
                   prefix="sha256=")

    def delivery(self, headers: Mapping[str, str], payload: Any) -> str | None:
        return header(headers, DELIVERY) or None

    def _as_searched(self, issue: dict[str, Any]) -> tuple[Any, bool]:
        """The issue as the search gives it (``fields`` cut to the configured ones), and whether
        it lacks one of them (then it is fetched)."""
        wanted = self.settings.fields
        fields = issue.get("fields")
        if any(f.startswith(("*", "-")) for f in wanted):
            return issue, not isinstance(fields, dict)
        if not isinstance(fields, dict):
            return issue, True
        kept = {f: fields[f] for f in wanted if f in fields}
        return {**issue, "fields": kept}, len(kept) < len(wanted)

    def events(self, headers: Mapping[str, str], payload: Any
               ) -> list[Event]:
        if not isinstance(payload, dict):
            raise WebhookRefused(f"the payload is not a JSON object (got {type(payload).__name__})")
        name = text_at(payload, "webhookEvent")
        kinds = set(self.settings.kinds)
        if name in ISSUE_EVENTS and Kind.issue in kinds:
            action, issue = ISSUE_EVENTS[name], part(payload, "issue")
            if action == Action.DELETE:
                return [Event(Kind.issue, action, issue)]
            item, fetch = self._as_searched(issue)
            return [Event(Kind.issue, action, item, fetch=fetch)]
        if name in COMMENT_EVENTS and Kind.comment in kinds:
            comment, issue = part(payload, "comment"), part(payload, "issue")
            item = self.with_parent(Kind.comment, self.parent_ref(Kind.issue, issue),
                                           comment)
            return [Event(Kind.comment, COMMENT_EVENTS[name], item)]
        return []

    async def fetch_item(self, kind: str, client: httpx.AsyncClient,
                         item: Any) -> Any | None:
        ident = self.id_text(item.get("id")) if isinstance(item, dict) else None
        if ident is None or not ident.isalnum():
            raise MalformedPage(f"a {kind} event without an alphanumeric id to fetch it by")
        if kind == Kind.issue:
            return await self.get_item(client, ISSUE.format(id=ident), params={
                "fields": ",".join(self.settings.fields)})
        if kind == Kind.comment:
            issue = self.id_text(item.get("_parent_key") or item.get("_parent_id"))
            if issue is None or not issue.replace("-", "").isalnum():
                raise MalformedPage("a comment event without its issue's key or id to fetch it by")
            got = await self.get_item(client, COMMENT.format(issue=issue, id=ident))
            ref = {"key": item.get("_parent_key"), "id": item.get("_parent_id")}
            return self.with_parent(kind, ref, got) if isinstance(got, dict) else got
        raise MalformedPage(f"{kind} events are not fetched")

    def cursor_path(self, kind: str) -> str | None:
        if kind == Kind.issue and "updated" not in self.settings.fields:
            return None  # its items are cut to the fields: none would carry it
        return CURSORS.get(kind)  # a StrEnum key is found by its text
