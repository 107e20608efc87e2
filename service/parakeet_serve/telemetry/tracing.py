"""OpenTelemetry traces: one span per RPC, with children for audio decoding, queue wait, batch
inference and decoding. Off (a no-op tracer) unless an OTLP endpoint is configured.

Batches run on the inference thread for many requests at once, so their spans are written after
the fact from each item's `Timing`, under the span of the request that owns the item.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from parakeet_serve.telemetry.timing import Timing

TRACER_NAME = "parakeet_serve"
_PROPAGATOR = TraceContextTextMapPropagator()


def tracer_provider(exporter: SpanExporter, service_name: str) -> TracerProvider:
    """A provider that batches spans to `exporter`."""
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def otlp_exporter(endpoint: str, protocol: Literal["grpc", "http/protobuf"]) -> SpanExporter:
    """The OTLP exporter for `endpoint` (a collector's base URL, e.g. http://collector:4317)."""
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter(endpoint=endpoint)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")


def incoming_context(metadata: Iterable[tuple[str, str | bytes]] | None) -> Context:
    """The caller's trace context from W3C `traceparent`/`tracestate` metadata (empty when absent)."""
    carrier = {key: value for key, value in metadata or () if isinstance(value, str)}
    return _PROPAGATOR.extract(carrier)


def record_span(
    tracer: trace.Tracer, name: str, start_ns: int, end_ns: int, context: Context | None = None, **attributes: Any
) -> trace.Span:
    """A span that already happened, under `context` (default: the current span)."""
    span = tracer.start_span(name, context=context, start_time=start_ns, attributes=attributes or None)
    span.end(end_time=end_ns)
    return span


def record_work(tracer: trace.Tracer, timing: Timing, context: Context | None = None) -> None:
    """`queue.wait` and `batch.inference` spans of one item, under `context` (default: the current span)."""
    if timing.finished_ns == 0:
        return  # the item never ran (dropped or failed before its batch)
    record_span(tracer, "queue.wait", timing.enqueued_ns, timing.started_ns, context)
    record_span(tracer, "batch.inference", timing.started_ns, timing.finished_ns, context,
                **{"batch.size": timing.batch_size, "batch.kind": timing.kind})
