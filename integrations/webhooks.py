"""Webhook events: what an integration makes of one delivery from its API.

``sluice serve`` (``tasks/serve/``) takes a delivery, asks the source's integration to check
its signature and to turn its JSON into events, and enqueues the events for the workers; the
workers write them through the batch path (``tasks/webhook.py``). Nothing here talks to
Redis, Celery or the target: integrations stay on their side of the line.

Receiving webhooks is a capability: an integration that has it implements ``Webhooks``
beside the ``Integration`` protocol, and ``webhooks_of`` finds it (None: the integration takes
no events, and ``sluice serve`` refuses its deliveries):

    hooks = webhooks_of(integration)
    hooks.verify(headers, body)             # raises WebhookRefused (401) unless signed right
    decode(content_type, body)              # -> the JSON payload (a form's ``payload``), or 400
    hooks.delivery(headers, payload)        # -> the delivery's id (applied once), or None
    hooks.events(headers, payload)          # -> [Event(kind, action, item, fetch)]
    hooks.cursor_path(kind)                 # -> the dot path that orders an item's versions
    await hooks.fetch_item(kind, client, item)  # -> the full item (``fetch`` events)
"""

from __future__ import annotations

import hashlib
import hmac
import urllib.parse
from collections.abc import Mapping as HeaderMap
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

import httpx

from integrations import jsontext
from integrations.errors import WebhookRefused

FORM = "application/x-www-form-urlencoded"
FORM_FIELDS = 16  # GitHub sends one (``payload``); a form of thousands is not a delivery


class Action(StrEnum):
    UPSERT = "upsert"
    DELETE = "delete"


@dataclass(frozen=True)
class Event:
    """One change an API told us about: ``item`` as the API gives it in the event (for a
    delete, at least what its identifier is read from); ``fetch``: the event carries too
    little, and a worker fetches the full item (``fetch_item``) under the source's rate limit
    before it is written."""

    kind: str
    action: Action
    item: Any
    fetch: bool = False

    def as_json(self, delivery: str | None) -> dict[str, Any]:
        """The event as it travels in a ``sluice.webhook_batch`` message."""
        return {"delivery": delivery, "action": str(self.action), "item": self.item,
                "fetch": self.fetch}


@runtime_checkable
class Webhooks(Protocol):
    """What an integration that receives webhooks adds (``sluice serve`` calls the first
    three; workers the last two)."""

    def verify(self, headers: HeaderMap[str, str], body: bytes) -> None:
        """Accept a delivery only when it is signed with the source's ``webhook_secret``
        (compared in constant time). Raises WebhookRefused(status=401)."""
        ...

    def delivery(self, headers: HeaderMap[str, str], payload: Any) -> str | None:
        """The delivery's id, the same on every redelivery of one event (applied once), or
        None when the API sends none."""
        ...

    def events(self, headers: HeaderMap[str, str], payload: Any) -> list[Event]:
        """The upserts and deletes a verified delivery carries, of the source's kinds only
        (an event of another kind, or a ping: []). Items have the shape a resync writes.
        Raises WebhookRefused(status=400) for a payload that lacks what its event needs."""
        ...

    def cursor_path(self, kind: str) -> str | None:
        """Dot path to what orders an item's versions (``updated_at``): an event older than
        what the target holds does not overwrite it. None: every event is applied."""
        ...

    async def fetch_item(self, kind: str, client: httpx.AsyncClient, item: Any) -> Any | None:
        """The full item of a ``fetch`` event, as a resync writes it, through ``client`` (the
        source's rate limit and retries). None when the API says it is gone (404).
        Raises TransientHTTPError, PermanentHTTPError or MalformedPage."""
        ...


def webhooks_of(integration: object) -> Webhooks | None:
    """The integration's webhooks, or None when it receives none."""
    return integration if isinstance(integration, Webhooks) else None


def hmac_digest(secret: str, body: bytes, algorithm: str = "sha256") -> bytes:
    """HMAC of the raw body with the source's webhook secret."""
    return hmac.new(secret.encode(), body, getattr(hashlib, algorithm)).digest()


def same(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a signature computed here with the one a delivery gave."""
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


def decode(content_type: str | None, body: bytes) -> Any:
    """A verified delivery's payload: its body as JSON (``loads``), or, when ``content_type`` is
    a form (``application/x-www-form-urlencoded``: what GitHub sends for a hook created
    through its API unless asked for JSON), the JSON in its one ``payload`` field. The
    signature is checked before, over the raw body, form or not (GitHub signs the bytes it
    sends). Raises WebhookRefused(400) saying why: not JSON, not a form, no ``payload``."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == FORM:
        text, what = form_payload(body), "the form's payload"
    else:
        text, what = body, "the body"
    try:
        return loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise WebhookRefused(f"{what} is not JSON") from None


def form_payload(body: bytes) -> bytes:
    """The ``payload`` field of a form body, as UTF-8 bytes (no larger than the body, so the
    body's size limit bounds it). Raises WebhookRefused(400): a body that is not a form
    (not UTF-8, a field without ``=``, an escape that is not UTF-8, too many fields), or a
    form without exactly one ``payload``."""
    try:
        fields = urllib.parse.parse_qs(body.decode(), keep_blank_values=True,
                                       strict_parsing=True, max_num_fields=FORM_FIELDS,
                                       errors="strict")
    except ValueError:  # UnicodeDecodeError is one
        raise WebhookRefused(f"the body is not a form ({FORM})") from None
    payloads = fields.get("payload", [])
    if len(payloads) != 1:
        raise WebhookRefused("the form has no payload field" if not payloads
                             else "the form has more than one payload field")
    return payloads[0].encode()


def loads(body: bytes) -> Any:
    """A delivery's body as JSON, strictly: ``NaN``, ``Infinity`` and numbers past a double
    (``1e400``) raise ValueError, as they are not JSON (Python's json takes them, and
    PostgreSQL's jsonb then refuses the whole batch holding them)."""
    return jsontext.loads(body, strict=True)
