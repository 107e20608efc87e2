"""Metrics, traces and their wiring: what the core reports and how it leaves the process."""

from __future__ import annotations

from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter

from parakeet_serve.telemetry.metrics import Metrics
from parakeet_serve.telemetry.timing import Timing
from parakeet_serve.telemetry.tracing import TRACER_NAME, tracer_provider

__all__ = ["Metrics", "Telemetry", "Timing"]


@dataclass
class Telemetry:
    """One process's metrics and tracer; without an exporter the tracer records nothing."""

    metrics: Metrics = field(default_factory=Metrics)
    tracer: trace.Tracer = field(default_factory=trace.NoOpTracer)
    provider: TracerProvider | None = None

    @classmethod
    def create(cls, exporter: SpanExporter | None = None, service_name: str = "parakeet-serve",
               shared_metrics: bool = False) -> Telemetry:
        """`shared_metrics` in one of several worker processes (`Metrics`)."""
        metrics = Metrics(shared=shared_metrics)
        if exporter is None:
            return cls(metrics=metrics)
        provider = tracer_provider(exporter, service_name)
        return cls(metrics=metrics, tracer=provider.get_tracer(TRACER_NAME), provider=provider)

    def close(self) -> None:
        """Stop the metrics endpoint and flush pending spans."""
        self.metrics.close()
        if self.provider is not None:
            self.provider.shutdown()
