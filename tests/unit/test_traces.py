"""Traces, one piece at a time, with OpenTelemetry's in-memory exporter (the whole run over
real workers is tests/integration/test_traces.py)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from integrations import secrets
from tasks import traces
from tasks.traces import sdk
from tasks.traces.scrub import Scrubbed
from tasks.worker.runtime import Runtime

SECRET = "qk-5512-query-secret"


@pytest.fixture
def memory() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Scrubbed(exporter)))
    before = secrets.installed()
    secrets.install(secrets.Redactor([SECRET]))
    yield provider, exporter
    secrets.install(before)
    provider.shutdown()


@pytest.mark.parametrize(("env", "exporters"), [
    ({}, []),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ["otlp"]),
    ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, []),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, []),
])
def test_traces_are_on_only_when_the_otel_environment_asks(
        env: dict[str, str], exporters: list[str]) -> None:
    assert traces.wanted(env) == exporters
    assert traces.problem(env) is None


@pytest.mark.parametrize(("env", "named"), [
    ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER=zipkin"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
     "OTEL_EXPORTER_OTLP_PROTOCOL=grpc"),
])
def test_traces_asked_for_in_a_way_sluice_cannot_export_are_refused_naming_the_variable(
        env: dict[str, str], named: str) -> None:
    assert named in (traces.problem(env) or "")


def test_with_traces_off_no_tracer_instrumentation_or_exporter_is_imported() -> None:
    # (redis-py 8 imports opentelemetry's metrics SDK on its own when it is installed.)
    code = ("import sys, tasks.app, tasks.resync, tasks.ingest, tasks.schedule, tasks.finalize;"
            "from tasks import traces; traces.setup('worker');"
            "print(sorted(m for m in sys.modules if m.startswith(('tasks.traces.',"
            "'opentelemetry.sdk.trace', 'opentelemetry.instrumentation',"
            "'opentelemetry.exporter'))))")
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True)
    assert out.stdout.strip() == "[]"


def test_a_span_leaves_without_secrets_credential_headers_or_error_text(
        memory: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = memory
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT, attributes={
            "url.full": f"https://api.example.com/items?page=2&api_key={SECRET}",
            "http.request.header.authorization": ("Bearer at-31337",),
            "http.request.header.accept": ("application/json",),
            "celery.retry.reason": "Retry in 2s: TargetRejected('value \"item 7\"')"}) as span:
        span.record_exception(ValueError(f"item 7 at {SECRET}"))
        span.set_status(StatusCode.ERROR, "item 7 refused")
    (out,) = exporter.get_finished_spans()
    attrs = dict(out.attributes or {})
    assert attrs["url.full"] == "https://api.example.com/items?page=2&api_key=***"
    assert attrs["http.request.header.accept"] == ("application/json",)
    assert "http.request.header.authorization" not in attrs
    assert "celery.retry.reason" not in attrs
    (event,) = out.events
    assert dict(event.attributes or {}) == {"exception.type": "ValueError",
                                            "exception.escaped": "False"}
    assert out.status.status_code == StatusCode.ERROR and not out.status.description


def test_a_task_span_takes_its_stage_name_named_arguments_and_counts_never_items(
        memory: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = memory

    def run(run_id: str, source: str, kind: str, seq: int, items: str,
            run_seq: int | None = None) -> None: ...

    task = SimpleNamespace(name="sluice.ingest_batch", run=run)
    with provider.get_tracer("test").start_as_current_span("run/sluice.ingest_batch"):
        sdk._started(task=task, args=("r1", "api", "item", 3, '[{"title": "item 7"}]'),
                     kwargs={"run_seq": 9})
        sdk._finished(task=task, retval={"run_id": "r1", "seq": 3, "written": 0,
                                         "dead_lettered": "TargetRejected: 'item 7' (at x)"})
    (out,) = exporter.get_finished_spans()
    assert out.name == "sluice.batch write"
    assert dict(out.attributes or {}) == {
        "sluice.run_id": "r1", "sluice.source": "api", "sluice.kind": "item", "sluice.seq": 3,
        "sluice.written": 0, "error.type": "TargetRejected"}
    assert out.status.status_code == StatusCode.ERROR


def test_a_coroutine_run_on_the_process_loop_is_a_child_of_the_task_span(
        memory: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = memory
    tracer = provider.get_tracer("test")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    rt: Any = SimpleNamespace(loop=loop)

    async def request() -> None:
        with tracer.start_as_current_span("GET"):
            await asyncio.sleep(0)

    try:
        with tracer.start_as_current_span("task"):
            Runtime.run(rt, request())
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["GET"].parent is not None
    assert spans["GET"].parent.span_id == spans["task"].context.span_id


def test_each_run_started_is_the_root_of_a_trace_of_its_own_linked_to_its_starter(
        memory: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = memory
    tracing = sdk.Tracing(provider)
    parents = []
    with tracing.tracer.start_as_current_span("sluice.schedule"):
        for kind in ("a", "b"):
            with tracing.run_started("api", kind, full=False) as started:
                started.record(SimpleNamespace(run_id=f"run-{kind}", state="running"))
                parents.append(started.traceparent)
    with tracing.within(parents[0]), tracing.tracer.start_as_current_span("later"):
        pass
    spans = exporter.get_finished_spans()
    runs = [s for s in spans if s.name == "sluice.run"]
    (schedule,) = [s for s in spans if s.name == "sluice.schedule"]
    (later,) = [s for s in spans if s.name == "later"]
    assert [r.parent for r in runs] == [None, None]
    assert len({r.context.trace_id for r in runs} | {schedule.context.trace_id}) == 3
    assert all(r.links[0].context.span_id == schedule.context.span_id for r in runs)
    assert later.context.trace_id == runs[0].context.trace_id
    assert later.parent is not None and later.parent.span_id == runs[0].context.span_id
    assert runs[0].attributes == {"sluice.source": "api", "sluice.kind": "a",
                                  "sluice.full": False, "sluice.run_id": "run-a",
                                  "sluice.state": "running"}
