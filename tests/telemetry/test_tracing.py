"""Spans of a Recognize and of a stream: names, parent/child structure and the caller's trace context."""

from __future__ import annotations

import riva.client
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from parakeet_serve.telemetry import Telemetry
from tests.conftest import SAMPLE_RATE, ServeFactory, pcm16, speechlike

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
CONFIG = riva.client.RecognitionConfig(encoding=riva.client.AudioEncoding.LINEAR_PCM,
                                       sample_rate_hertz=SAMPLE_RATE, language_code="en-US")


def traced(serve: ServeFactory) -> tuple[InMemorySpanExporter, object]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    served = serve(telemetry=Telemetry(tracer=provider.get_tracer("test"), provider=provider))
    return exporter, served


def children(spans: tuple[ReadableSpan, ...], parent: ReadableSpan) -> list[str]:
    return sorted(s.name for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id)


def test_recognize_span_continues_the_callers_trace_with_its_stages(serve: ServeFactory) -> None:
    exporter, served = traced(serve)
    traceparent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    asr = served.asr(metadata_args=[["traceparent", traceparent]])
    asr.offline_recognize(pcm16(speechlike(1.0)), CONFIG)
    spans = exporter.get_finished_spans()
    (rpc,) = [s for s in spans if s.name == "Recognize"]
    assert rpc.kind == SpanKind.SERVER
    assert f"{rpc.context.trace_id:032x}" == CALLER_TRACE
    assert f"{rpc.parent.span_id:016x}" == CALLER_SPAN
    assert children(spans, rpc) == ["audio.decode", "batch.inference", "decode", "queue.wait"]
    stages = {s.name: s for s in spans}
    assert stages["queue.wait"].end_time <= stages["batch.inference"].start_time
    assert stages["batch.inference"].attributes["batch.size"] == 1
    assert rpc.attributes["audio_s"] == 1.0
    assert rpc.start_time <= stages["audio.decode"].start_time and stages["decode"].end_time <= rpc.end_time


def test_a_stream_has_a_span_per_step_that_produced_results(serve: ServeFactory) -> None:
    exporter, served = traced(serve)
    cfg = riva.client.StreamingRecognitionConfig(config=CONFIG, interim_results=True)
    audio = pcm16(speechlike(3.0))
    chunks = [audio[i : i + 3200] for i in range(0, len(audio), 3200)]
    responses = list(served.asr().streaming_response_generator(iter(chunks), cfg))
    results = sum(len(r.results) for r in responses)
    spans = exporter.get_finished_spans()
    (rpc,) = [s for s in spans if s.name == "StreamingRecognize"]
    steps = [s for s in spans if s.name == "stream.step"]
    assert all(s.parent.span_id == rpc.context.span_id for s in steps)
    assert sum(s.attributes["results.count"] for s in steps) == results
    for step in steps:
        assert children(spans, step) == ["batch.inference", "decode", "queue.wait"]
    assert rpc.attributes["audio_s"] > 2.9
