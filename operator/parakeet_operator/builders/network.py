"""The Service and its headless twin (pod addresses in DNS, for clients that balance each call)."""

from __future__ import annotations

from typing import Any

from parakeet_operator.builders.common import Names, metadata, selector_labels
from parakeet_operator.spec import ParakeetASRSpec

HEADLESS_LABEL = "parakeet.dev/headless"


def services(spec: ParakeetASRSpec, names: Names) -> list[dict[str, Any]]:
    ports = [
        {"name": "grpc", "port": spec.service.grpc_port, "targetPort": "grpc", "protocol": "TCP",
         "appProtocol": "grpc"},
        {"name": "metrics", "port": spec.service.metrics_port, "targetPort": "metrics", "protocol": "TCP",
         "appProtocol": "http"},
    ]
    if spec.service.http_port:
        ports.append({"name": "http", "port": spec.service.http_port, "targetPort": "http", "protocol": "TCP",
                      "appProtocol": "http"})
    if spec.service.wyoming_port:  # no IANA service name to give as appProtocol: plain TCP
        ports.append({"name": "wyoming", "port": spec.service.wyoming_port, "targetPort": "wyoming",
                      "protocol": "TCP"})
    regular = {"apiVersion": "v1", "kind": "Service", "metadata": metadata(names),
               "spec": {"type": "ClusterIP", "selector": selector_labels(names), "ports": ports}}
    if not spec.service.headless:
        return [regular]
    meta = metadata(names, names.headless)
    meta["labels"][HEADLESS_LABEL] = "true"
    headless = {"apiVersion": "v1", "kind": "Service", "metadata": meta,
                "spec": {"clusterIP": "None", "selector": selector_labels(names), "ports": ports}}
    return [regular, headless]
