"""The ServiceMonitor (for the Prometheus operator) and the trace collector sidecar's configuration."""

from __future__ import annotations

from typing import Any

import yaml

from parakeet_operator.builders.common import Names, metadata, selector_labels
from parakeet_operator.builders.network import HEADLESS_LABEL
from parakeet_operator.spec import ParakeetASRSpec


def service_monitor(names: Names) -> dict[str, Any]:
    # The headless Service selects the same pods: scrape through the regular one only.
    return {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": metadata(names),
        "spec": {
            "selector": {"matchLabels": selector_labels(names),
                         "matchExpressions": [{"key": HEADLESS_LABEL, "operator": "DoesNotExist"}]},
            "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s"}],
        },
    }


def otel_collector_config(spec: ParakeetASRSpec, names: Names) -> dict[str, Any]:
    """OTLP in on localhost, batched, OTLP out to the cluster's collector."""
    config = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:4317"}}}},
        "processors": {"batch": {}, "memory_limiter": {"check_interval": "1s", "limit_percentage": 80,
                                                       "spike_limit_percentage": 20}},
        "exporters": {"otlp": {"endpoint": spec.observability.otel_collector_sidecar.exporter_endpoint,
                               "tls": {"insecure": True}}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": ["memory_limiter", "batch"],
                                             "exporters": ["otlp"]}}},
    }
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(names, f"{names.name}-otel-collector"),
            "data": {"config.yaml": yaml.safe_dump(config, sort_keys=False)}}
