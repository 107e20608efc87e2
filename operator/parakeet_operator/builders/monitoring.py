"""The ServiceMonitor (for the Prometheus operator)."""

from __future__ import annotations

from typing import Any

from parakeet_operator.builders.common import Names, metadata, selector_labels
from parakeet_operator.builders.network import HEADLESS_LABEL


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
