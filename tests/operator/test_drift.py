"""The converged check: what the API server's normalisation leaves equal, and what still needs an apply."""

from __future__ import annotations

from typing import Any

import pytest

from parakeet_operator.drift import contains, converged, owned_within

DESIRED = {"metadata": {"name": "asr"}, "spec": {"template": {"spec": {
    "containers": [{"name": "server", "env": [{"name": "PARAKEET_MAX_STREAMS", "value": "1000m"}],
                    "resources": {"limits": {"nvidia.com/gpu": 1, "memory": "4096Mi"}, "requests": {"cpu": "1.5"}}}],
    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "8Gi"}}],
    "tolerations": [{"key": "gpu", "operator": "Exists"}]}}}}


def live(**overrides: Any) -> dict[str, Any]:
    """DESIRED as the API server stores it: quantities in canonical form, defaults added."""
    container = {"name": "server", "env": [{"name": "PARAKEET_MAX_STREAMS", "value": "1000m"}],
                 "resources": {"limits": {"nvidia.com/gpu": "1", "memory": "4Gi"}, "requests": {"cpu": "1500m"}},
                 "terminationMessagePath": "/dev/termination-log", **overrides}
    return {"metadata": {"name": "asr", "resourceVersion": "7"}, "spec": {"template": {"spec": {
        "containers": [container], "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "8Gi"}}],
        "tolerations": [{"key": "gpu", "operator": "Exists"}], "dnsPolicy": "ClusterFirst"}}}}


def test_quantities_the_server_normalised_are_equal() -> None:
    assert contains(live(), DESIRED)


@pytest.mark.parametrize("resources", [
    {"limits": {"nvidia.com/gpu": "2", "memory": "4Gi"}, "requests": {"cpu": "1500m"}},
    {"limits": {"nvidia.com/gpu": "1", "memory": "4G"}, "requests": {"cpu": "1500m"}},  # 4 GB is not 4 GiB
    {"limits": {"nvidia.com/gpu": "1", "memory": "4Gi"}, "requests": {"cpu": "1"}},
])
def test_a_different_quantity_is_drift(resources: dict[str, Any]) -> None:
    assert not contains(live(resources=resources), DESIRED)


def test_only_quantity_fields_compare_as_quantities() -> None:
    """An environment variable is text: "1" is not "1000m" there, though it would be as a CPU request."""
    assert not contains(live(env=[{"name": "PARAKEET_MAX_STREAMS", "value": "1"}]), DESIRED)


def test_a_field_the_operator_applied_and_no_longer_sets_is_not_converged() -> None:
    owned = {"f:metadata": {"f:name": {}}, "f:spec": {"f:template": {"f:spec": {
        "f:containers": {'k:{"name":"server"}': {".": {}, "f:env": {}, "f:resources": {"f:limits": {}}}},
        "f:tolerations": {}, "f:volumes": {'k:{"name":"tmp"}': {".": {}, "f:emptyDir": {"f:sizeLimit": {}}}}}}}}
    assert owned_within(owned, DESIRED)
    without_tolerations = {**DESIRED["spec"]["template"]["spec"]}
    del without_tolerations["tolerations"]
    assert not owned_within(owned, {"metadata": {"name": "asr"}, "spec": {"template": {"spec": without_tolerations}}})
    renamed = {'k:{"name":"cache"}': {".": {}}}
    assert not owned_within({"f:spec": {"f:template": {"f:spec": {"f:volumes": renamed}}}}, DESIRED)


def test_an_object_the_operator_never_applied_is_not_converged() -> None:
    """Created by someone else, or by an operator before server-side apply: one apply takes it over."""
    stored = live()
    stored["metadata"]["managedFields"] = [{"manager": "kubectl", "operation": "Update", "fieldsV1": {}}]
    assert not converged(stored, DESIRED, "parakeet-operator")
    stored["metadata"]["managedFields"].append({"manager": "parakeet-operator", "operation": "Apply",
                                                "fieldsV1": {"f:metadata": {"f:name": {}}}})
    assert converged(stored, DESIRED, "parakeet-operator")
