"""What leaves the process in a span: the exporter every span passes through on its way out.

Sluice's own spans carry names, ids and counts only. What the instrumentations record is
scrubbed here, in the export thread, off the tasks' path:

- every string (span, event and link attributes) is redacted with this process's secrets
  (``integrations.secrets``: the ``${ENV}`` values of sluice.toml, raw or URL-encoded), so a
  query key in httpx's ``url.full`` reads ``api_key=***``;
- free text about an error (``exception.message``, ``exception.stacktrace``, Celery's
  ``celery.retry.reason``, a status description) is dropped: it may quote an item's value
  (a target refusing it) or a URL. The exception's type stays; the run record, the dead
  letters and the worker log hold the message, redacted;
- credential headers that ``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*`` may have captured
  (Authorization, cookies) are dropped: an OAuth access token is no configured secret.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Link, Status
from opentelemetry.util.types import Attributes

from integrations import secrets

FREE_TEXT = frozenset({"exception.message", "exception.stacktrace", "celery.retry.reason"})
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy_authorization", "cookie",
                                "set_cookie"})


def dropped(key: str) -> bool:
    if key in FREE_TEXT:
        return True
    if key.startswith(("http.request.header.", "http.response.header.")):
        return key.rsplit(".", 1)[-1] in CREDENTIAL_HEADERS
    return False


def attributes(attrs: Attributes | Mapping[str, Any]) -> dict[str, Any]:
    """A copy without what may not leave, and every string redacted."""
    redactor = secrets.installed()
    out: dict[str, Any] = {}
    for key, value in (attrs or {}).items():
        if dropped(key):
            continue
        if isinstance(value, str):
            value = redactor.text(value)
        elif isinstance(value, tuple | list):
            value = tuple(redactor.text(v) if isinstance(v, str) else v for v in value)
        out[key] = value
    return out


def span(s: ReadableSpan) -> ReadableSpan:
    return ReadableSpan(
        name=s.name, context=s.context, parent=s.parent, resource=s.resource,
        attributes=attributes(s.attributes),
        events=[Event(e.name, attributes(e.attributes), e.timestamp) for e in s.events],
        links=[Link(link.context, attributes(link.attributes)) for link in s.links],
        kind=s.kind, status=Status(s.status.status_code), start_time=s.start_time,
        end_time=s.end_time, instrumentation_scope=s.instrumentation_scope)


class Scrubbed(SpanExporter):
    """``exporter`` behind the scrub."""

    def __init__(self, exporter: SpanExporter) -> None:
        self.exporter = exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.exporter.export([span(s) for s in spans])

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)
