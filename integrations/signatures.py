"""What every integration's webhook side shares: headers read whatever their case, an HMAC
signature checked in constant time, and the parts of a payload that must be there.

    header(headers, "X-Hub-Signature-256")         # -> the value, or None
    check_hmac(secret, given, body, prefix="sha256=")   # raises WebhookRefused (401)
    part(payload, "issue")                         # -> payload["issue"], a JSON object, or 400
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, Literal

from integrations.errors import WebhookRefused
from integrations.webhooks import hmac_digest, same


def header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header ``name`` (HTTP header names are case-insensitive; Starlette gives
    them in lower case, a test may not)."""
    if name in headers:
        return headers[name]
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)


def check_hmac(secret: str | None, given: str | None, body: bytes, *, prefix: str = "",
               algorithm: str = "sha256", encoding: Literal["hex", "base64"] = "hex") -> None:
    """Accept ``given`` only when it is ``prefix`` + the HMAC of ``body`` under ``secret``.

    Raises WebhookRefused(status=401) for a source without a secret, a missing signature or a
    wrong one; the message never holds the signature nor the secret."""
    if not secret:
        raise WebhookRefused("the source has no webhook_secret", status=401)
    if not given:
        raise WebhookRefused("the delivery carries no signature", status=401)
    digest = hmac_digest(secret, body, algorithm)
    text = digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()
    # Hex is compared in lower case (some senders write it upper); base64 is case-sensitive.
    if encoding == "hex":
        given = given[:len(prefix)] + given[len(prefix):].lower()
    if not same(prefix + text, given):
        raise WebhookRefused("the delivery's signature is wrong", status=401)


def part(payload: Any, key: str) -> dict[str, Any]:
    """``payload[key]``, which must be a JSON object. Raises WebhookRefused(status=400)."""
    if not isinstance(payload, dict):
        raise WebhookRefused(f"the payload is not a JSON object (got {type(payload).__name__})")
    value = payload.get(key)
    if not isinstance(value, dict):
        raise WebhookRefused(f"the payload has no {key!r} object")
    return value


def text_at(payload: Any, key: str) -> str | None:
    """``payload[key]`` when it is a string (an event's ``action``), else None."""
    value = payload.get(key) if isinstance(payload, dict) else None
    return value if isinstance(value, str) else None
