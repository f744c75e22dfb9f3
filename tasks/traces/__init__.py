"""Traces: a run is one trace, from where it is started to its finalize, across processes
and machines (``pip install 'sluice[otel]'``).

On only when the ``otel`` extra is installed and the standard OpenTelemetry environment asks
for it: ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), or
``OTEL_TRACES_EXPORTER=otlp|console``; ``OTEL_SDK_DISABLED=true`` or
``OTEL_TRACES_EXPORTER=none`` turn it off. Off, this module imports nothing of OpenTelemetry
and every function here is a no-op; on, ``tasks.traces.sdk`` does the work.

The shape of a run's trace (``tasks.traces.sdk`` draws it): the root span ``sluice.run`` is
started where the run is created (``sluice run``, a schedule) and its W3C ``traceparent`` is
kept on the run record in Redis (it is no secret), so every producer slice, including a
continuation or a partition enqueued minutes later on another machine, is enqueued under it.
Batches, children and finalize follow from the task that enqueued them, through the trace
context that OpenTelemetry's Celery instrumentation puts in the message headers.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from tasks.runs.progress import Run

EXPORTERS = ("otlp", "console")  # what OTEL_TRACES_EXPORTER may name here


def wanted(env: Mapping[str, str]) -> list[str]:
    """The exporters the environment asks for (empty: traces are off)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",")
             if n.strip()]
    if names:
        return [] if names == ["none"] else names
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return ["otlp"]
    return []


def problem(env: Mapping[str, str]) -> str | None:
    """Why traces asked for by ``env`` cannot be exported (None: fine, or off). A worker or a
    command with such an environment refuses to start rather than drop the traces silently."""
    names = wanted(env)
    if not names:
        return None
    unknown = [n for n in names if n not in EXPORTERS]
    if unknown:
        return (f"OTEL_TRACES_EXPORTER={env.get('OTEL_TRACES_EXPORTER')}: Sluice exports traces "
                f"by {' or '.join(EXPORTERS)} (or none), not {', '.join(unknown)}")
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    if "otlp" in names and protocol != "http/protobuf":
        return (f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: Sluice exports OTLP over "
                "http/protobuf only (a collector takes both)")
    if importlib.util.find_spec("opentelemetry.sdk") is None:
        return ("traces are asked for (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_TRACES_EXPORTER) "
                "but the otel extra is not installed: pip install 'sluice[otel]', or set "
                "OTEL_SDK_DISABLED=true")
    return None


class TracingOn(Protocol):
    """What this module calls of ``tasks.traces.sdk.Tracing``, which it imports only when
    traces are on (and which imports this module for ``Started``)."""

    tracer: Tracer

    def run_started(self, source: str, kind: str, *, full: bool
                    ) -> contextlib.AbstractContextManager[Started]: ...

    def within(self, traceparent: str) -> contextlib.AbstractContextManager[None]: ...

    def shutdown(self) -> None: ...


_tracing: TracingOn | None = None
_pid: int | None = None


def setup(role: str) -> None:
    """Start tracing in this process when the environment asks for it (once per process: a
    forked child sets up its own, with its own export thread). ``role``: worker, cli.
    Raises ConfigError when they are asked for but cannot be exported (``problem``)."""
    global _tracing, _pid
    names = wanted(os.environ)
    if not names or (_tracing is not None and _pid == os.getpid()):
        return
    if why := problem(os.environ):
        from integrations.errors import ConfigError

        raise ConfigError(why)
    from tasks.traces import sdk

    _tracing, _pid = sdk.setup(role, names), os.getpid()


def shutdown() -> None:
    """Export what is left and stop (a worker process ending; atexit does it for the CLI)."""
    global _tracing
    if _tracing is not None and _pid == os.getpid():
        _tracing.shutdown()
    _tracing = None


def active() -> TracingOn | None:
    return _tracing if _pid == os.getpid() else None


class Started:
    """A run's root span while the run is created: its ``traceparent`` goes on the record."""

    traceparent = ""

    def record(self, run: Run) -> None:
        """What the run became (its id, running or skipped)."""


@contextlib.contextmanager
def run_started(source: str, kind: str, *, full: bool) -> Iterator[Started]:
    """The run's root span ``sluice.run``, the start of a new trace (a schedule's task that
    starts several runs gives each its own trace, linked to the task)."""
    tracing = active()
    if tracing is None:
        yield Started()
        return
    with tracing.run_started(source, kind, full=full) as started:
        yield started


def within(traceparent: str) -> contextlib.AbstractContextManager[Any]:
    """Send tasks as part of the run whose root is ``traceparent`` (the run record's), from
    wherever: a continuation slice, ``sluice failed retry``."""
    tracing = active()
    if tracing is None or not traceparent:
        return contextlib.nullcontext()
    return tracing.within(traceparent)


def span(name: str, attributes: Mapping[str, str | int | bool]
         ) -> contextlib.AbstractContextManager[Any]:
    """A span of this process's current trace (``attributes``: counts and names, never an
    item, a URL or a header)."""
    tracing = active()
    if tracing is None:
        return contextlib.nullcontext()
    return tracing.tracer.start_as_current_span(name, attributes=attributes)
