"""Tracing switched on (``tasks.traces`` imports this only then): the provider, the
exporters behind the scrub (``tasks.traces.scrub``), OpenTelemetry's Celery and httpx
instrumentations, and the names and attributes of Sluice's spans.

A run's trace::

    sluice.run                      root: `sluice run`, a schedule (source, kind, run id)
      apply_async/sluice.resync       every producer slice is enqueued under the root
        sluice.produce slice            the task (partition, pages)
          GET                             httpx: one per request and retry (url.full redacted)
          sluice.produce page             one per page: its batches published (seq, items)
            apply_async/sluice.ingest_batch
              sluice.batch write            the task (seq, written, rejected, deleted)
                apply_async/sluice.children   a parent batch's fan-out, then its batches
                apply_async/sluice.finalize   from the task that ended the run
                  sluice.finalize               (state)

A task's span is the one the Celery instrumentation opens for it (its parent comes in the
message headers), renamed after the stage and given Sluice's attributes from the task's
named arguments and its result, both from a fixed list: never the items, parents or events.
Continuation slices hang from the root rather than from the slice before them, so a long run
is a flat list of slices, not a chain a thousand deep.

The tasks' coroutines run on the process's event loop in another thread
(``tasks.worker.runtime``); ``asyncio.run_coroutine_threadsafe`` copies the caller's context
into the task it creates, so httpx's spans are children of the task's span.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

from celery import signals
from opentelemetry import context, trace
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Link, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tasks import traces
from tasks.traces.scrub import Scrubbed

# Task name -> its span's name.
STAGES = {
    "sluice.resync": "sluice.produce slice",
    "sluice.ingest_batch": "sluice.batch write",
    "sluice.children": "sluice.children fetch",
    "sluice.finalize": "sluice.finalize",
    "sluice.webhook_batch": "sluice.webhook write",
    "sluice.resync_source": "sluice.schedule",
}
ARGUMENTS = ("run_id", "source", "kind", "seq", "partition", "root", "batch_id")
RESULTS = ("state", "pages", "written", "rejected", "deleted", "children", "batches")
FAILED = ("failed", "lost")
PROPAGATOR = TraceContextTextMapPropagator()


class Tracing:
    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("sluice")

    @contextlib.contextmanager
    def run_started(self, source: str, kind: str, *, full: bool) -> Iterator[traces.Started]:
        caller = trace.get_current_span().get_span_context()
        with self.tracer.start_as_current_span(
                "sluice.run", context=context.Context(),
                links=[Link(caller)] if caller.is_valid else None,
                attributes={"sluice.source": source, "sluice.kind": kind,
                            "sluice.full": full}) as span:
            carrier: dict[str, str] = {}
            PROPAGATOR.inject(carrier)
            yield RunSpan(span, carrier.get("traceparent", ""))

    @contextlib.contextmanager
    def within(self, traceparent: str) -> Iterator[None]:
        token = context.attach(PROPAGATOR.extract({"traceparent": traceparent}))
        try:
            yield
        finally:
            context.detach(token)

    def shutdown(self) -> None:
        self.provider.shutdown()


class RunSpan(traces.Started):
    def __init__(self, span: trace.Span, traceparent: str) -> None:
        self.span, self.traceparent = span, traceparent

    def record(self, run: Any) -> None:
        self.span.set_attributes({"sluice.run_id": run.run_id, "sluice.state": str(run.state)})


def exporter(name: str) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # endpoint, headers, timeout: from OTEL_EXPORTER_OTLP_*


def resource(role: str) -> Resource:
    """OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, else service.name "sluice"."""
    found = Resource.create({"sluice.role": role})
    if str(found.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        found = found.merge(Resource({SERVICE_NAME: "sluice"}))
    return found


def setup(role: str, exporters: list[str]) -> Tracing:
    """This process's provider (the global one: the instrumentations use it), its exporters
    each behind the scrub and a batch processor, and the instrumentations."""
    provider = TracerProvider(resource=resource(role))
    for name in exporters:
        provider.add_span_processor(BatchSpanProcessor(Scrubbed(exporter(name))))
    trace.set_tracer_provider(provider)
    instrument(provider)
    return Tracing(provider)


def instrument(provider: TracerProvider) -> None:
    """The Celery and httpx instrumentations, with Sluice's handlers around Celery's: ours
    run after its ``task_prerun`` (the task's span is open) and before its ``task_postrun``
    (the span is not closed yet): Celery calls receivers in the order they connected."""
    signals.task_postrun.connect(_finished, weak=False)
    CeleryInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
    signals.task_prerun.connect(_started, weak=False)
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)


def arguments(task: Any, args: Any, kwargs: Any) -> dict[str, str | int]:
    """The task's named arguments that a span may carry (``ARGUMENTS``)."""
    try:
        bound = inspect.signature(task.run).bind_partial(*(args or ()), **(kwargs or {}))
    except (TypeError, ValueError):
        return {}
    return {f"sluice.{k}": v for k, v in bound.arguments.items()
            if k in ARGUMENTS and isinstance(v, str | int)}


def _started(task: Any = None, args: Any = None, kwargs: Any = None, **_: Any) -> None:
    span = trace.get_current_span()
    if task is None or not span.is_recording():
        return
    span.update_name(STAGES.get(task.name, task.name))
    span.set_attributes(arguments(task, args, kwargs))


def _finished(task: Any = None, retval: Any = None, **_: Any) -> None:
    span = trace.get_current_span()
    if task is None or not span.is_recording() or not isinstance(retval, dict):
        return
    span.set_attributes({f"sluice.{k}": v for k, v in retval.items()
                         if k in RESULTS and isinstance(v, str | int)})
    dead = retval.get("dead_lettered")
    if isinstance(dead, str):  # "Type: message (at ...)": the type only
        span.set_attribute("error.type", dead.split(":", 1)[0])
        span.set_status(StatusCode.ERROR)
    elif retval.get("state") in FAILED:
        span.set_status(StatusCode.ERROR)
