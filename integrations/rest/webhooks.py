"""Webhooks of a REST source, as its ``webhook`` section describes them
(``integrations.rest.settings.WebhookSettings``): a configurable HMAC header, and where the
kind, the action and the item are in the body.

    [sources.tracker.webhook]
    signature_header = "X-Signature"      # sha256=<hex HMAC of the raw body>
    delivery_header = "X-Delivery-Id"
    kind_path = "kind"                    # {"kind": "ticket", "action": "deleted", "item": {...}}
    kinds = { ticket = "issue" }          # event kind -> the source's kind
    delete_actions = ["deleted"]
    fetch = { issue = "/api/issues/{item.id}" }   # events carry only the id: fetch the item

One delivery is one event. A kind in ``fetch`` has its events marked ``fetch``; a worker then
GETs that path (each ``{item.<dot path>}`` filled from the event's item, quoted as a path
segment) under the source's rate limit; a delete is never fetched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from integrations.errors import MalformedPage, WebhookRefused
from integrations.jsonpath import dig
from integrations.paged import PagedIntegration
from integrations.parents import ITEM_FIELD, fill
from integrations.rest.settings import RestSettings
from integrations.signatures import check_hmac, header
from integrations.webhooks import Action, Event


class RestWebhooks(PagedIntegration[RestSettings]):
    """A REST source's ``integrations.webhooks.Webhooks``, the base of ``RestIntegration``."""

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        """Raises WebhookRefused(status=401) unless ``signature_header`` signs ``body``."""
        hook = self.settings.webhook
        check_hmac(self.settings.webhook_secret, header(headers, hook.signature_header),
                   body, prefix=hook.signature_prefix, algorithm=hook.algorithm,
                   encoding=hook.encoding)

    def delivery(self, headers: Mapping[str, str], payload: Any) -> str | None:
        name = self.settings.webhook.delivery_header
        return header(headers, name) or None if name else None

    def events(self, headers: Mapping[str, str], payload: Any
               ) -> list[Event]:
        hook = self.settings.webhook
        if not isinstance(payload, dict):
            raise WebhookRefused(f"the payload is not a JSON object (got {type(payload).__name__})")
        value = (header(headers, hook.kind_header) if hook.kind_header is not None
                 else dig(payload, hook.kind_path))
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            where = f"header {hook.kind_header}" if hook.kind_header else f"{hook.kind_path!r}"
            raise WebhookRefused(f"the event names no kind at {where}")
        kind = hook.kinds.get(str(value)) if hook.kinds else str(value)
        if kind is None or kind not in self.settings.kinds:
            return []  # an event of a kind this source does not sync
        item = dig(payload, hook.item_path)
        if not isinstance(item, dict):
            raise WebhookRefused(f"the payload has no item object at {hook.item_path!r}")
        action = dig(payload, hook.action_path)
        if isinstance(action, str) and action in hook.delete_actions:
            return [Event(kind, Action.DELETE, item)]
        return [Event(kind, Action.UPSERT, item, fetch=kind in hook.fetch)]

    async def fetch_item(self, kind: str, client: httpx.AsyncClient,
                         item: Any) -> Any | None:
        """The item at the kind's ``fetch`` path; None when the API answers 404 or 410 (gone).
        Raises MalformedPage when the kind has no ``fetch`` path or the item lacks a value the
        path needs (NoParentValue)."""
        template = self.settings.webhook.fetch.get(kind)
        if template is None:
            raise MalformedPage(f"{kind} events are not fetched (webhook.fetch has no {kind})")
        ref = {path: dig(item, path) for path in ITEM_FIELD.findall(template)}
        path = fill(template, ref, quoted=True, field=ITEM_FIELD)
        return await self.get_item(client, path)

    def cursor_path(self, kind: str) -> str | None:
        spec = self.settings.kinds[kind]
        return spec.incremental.cursor_path if spec.incremental else spec.cursor_path
