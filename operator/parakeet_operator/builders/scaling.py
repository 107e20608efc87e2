"""Autoscalers (KEDA or HPA) and the PodDisruptionBudget."""

from __future__ import annotations

from typing import Any

from parakeet_operator.builders.common import Names, metadata, selector_labels
from parakeet_operator.spec import ParakeetASRSpec


def _behavior(spec: ParakeetASRSpec) -> dict[str, Any]:
    """Out quickly; in slowly and one pod per drain, so scale-in does not cut live streams."""
    return {
        "scaleUp": {"stabilizationWindowSeconds": 0, "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}]},
        "scaleDown": {"stabilizationWindowSeconds": spec.autoscaling.scale_down_stabilization_seconds,
                      "policies": [{"type": "Pods", "value": 1, "periodSeconds": max(60, spec.drain_seconds)}]},
    }


def _target(names: Names) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": names.name}


def scaled_object(spec: ParakeetASRSpec, names: Names) -> dict[str, Any]:
    scaling = spec.autoscaling
    selector = f'namespace="{names.namespace}",pod=~"{names.pod_regex}"'
    streams = f"sum(parakeet_active_streams{{{selector}}}) or vector(0)"
    # The fleet's p95 times the ready pods, so that KEDA's division by replicas gives the p95 back (an
    # AverageValue metric, the kind KEDA's fallback works with); NaN without traffic counts as 0.
    queue_wait = (f"(histogram_quantile(0.95, sum by (le) (rate(parakeet_queue_wait_seconds_bucket{{{selector}}}[2m])))"
                  f" > 0) * scalar(count(parakeet_ready{{{selector}}} == 1)) or vector(0)")

    def trigger(name: str, query: str, threshold: float) -> dict[str, Any]:
        return {"type": "prometheus", "name": name, "metricType": "AverageValue", "metadata": {
            "serverAddress": scaling.prometheus_server_address, "query": query, "threshold": f"{threshold:g}"}}

    return {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": metadata(names),
        "spec": {
            "scaleTargetRef": {"name": names.name},
            "pollingInterval": 30,
            "minReplicaCount": scaling.min_replicas,
            "maxReplicaCount": scaling.max_replicas,
            "fallback": {"failureThreshold": 3, "replicas": scaling.min_replicas},
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": _behavior(spec)}},
            "triggers": [trigger("active-streams", streams, scaling.target_active_streams_per_pod),
                         trigger("queue-wait-p95", queue_wait, scaling.target_queue_wait_p95_seconds)],
        },
    }


def horizontal_pod_autoscaler(spec: ParakeetASRSpec, names: Names) -> dict[str, Any]:
    scaling = spec.autoscaling

    def pods_metric(name: str, target: float) -> dict[str, Any]:
        return {"type": "Pods", "pods": {"metric": {"name": name},
                                         "target": {"type": "AverageValue", "averageValue": f"{target:g}"}}}

    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": metadata(names),
        "spec": {
            "scaleTargetRef": _target(names),
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "behavior": _behavior(spec),
            "metrics": [pods_metric("parakeet_active_streams", scaling.target_active_streams_per_pod),
                        pods_metric("parakeet_queue_wait_p95_seconds", scaling.target_queue_wait_p95_seconds)],
        },
    }


def pod_disruption_budget(spec: ParakeetASRSpec, names: Names) -> dict[str, Any]:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": metadata(names),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(names)}}}
