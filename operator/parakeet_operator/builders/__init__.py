"""Pure builders: a `ParakeetASR`'s spec and names in, Kubernetes manifests out (no API calls).

They mirror the service chart's templates (`charts/parakeet-serve`); `tests/operator/test_builders.py`
renders both for the same deployment and holds them together.
"""

from parakeet_operator.builders.common import Names
from parakeet_operator.builders.monitoring import otel_collector_config, service_monitor
from parakeet_operator.builders.network import services
from parakeet_operator.builders.scaling import horizontal_pod_autoscaler, pod_disruption_budget, scaled_object
from parakeet_operator.builders.storage import model_cache_claim
from parakeet_operator.builders.workload import deployment, warmup_job, warmup_key, warmup_selector

__all__ = [
    "Names",
    "deployment",
    "horizontal_pod_autoscaler",
    "model_cache_claim",
    "otel_collector_config",
    "pod_disruption_budget",
    "scaled_object",
    "service_monitor",
    "services",
    "warmup_job",
    "warmup_key",
    "warmup_selector",
]
