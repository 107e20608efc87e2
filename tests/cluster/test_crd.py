"""The ParakeetASR CRD, as the operator chart installs it, judged by the real API server: a structural schema whose
CEL rules compile within the cost budget, the operator's defaults, the examples admitted with nothing pruned,
bad specs refused by the server itself with the rules' messages, and the printer columns kubectl shows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from parakeet_operator.spec import CEL_RULES, ParakeetASRSpec
from tests.cluster.api import ASRS, Api, Refused
from tests.cluster.conftest import OperatorIdentity

ROOT = Path(__file__).resolve().parents[2]
CRD = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/parakeetasrs.asr.parakeet.dev"
EXAMPLES = sorted((ROOT / "examples").glob("parakeetasr-*.yaml"))


@pytest.fixture(autouse=True)
def crd(operator_identity: OperatorIdentity) -> None:
    """Installed with the operator chart."""


def admit(api: Api, namespace: str, spec: dict[str, Any], name: str = "asr") -> dict[str, Any]:
    """Create a ParakeetASR; unknown fields are refused rather than silently pruned."""
    return api.create(ASRS.format(ns=namespace), {"apiVersion": "asr.parakeet.dev/v1alpha1", "kind": "ParakeetASR",
                                                  "metadata": {"name": name}, "spec": spec},
                      fieldValidation="Strict")


def test_the_crd_is_structural_and_established(admin: Api) -> None:
    conditions = {c["type"]: c for c in admin.call("GET", CRD)["status"]["conditions"]}
    assert conditions["Established"]["status"] == "True"
    assert conditions["NamesAccepted"]["status"] == "True"
    assert "NonStructuralSchema" not in conditions  # an apiextensions.k8s.io/v1 CRD would be refused outright


def _without_empty(value: Any) -> Any:
    """The server defaults scalars and objects, not empty lists and maps."""
    if isinstance(value, dict):
        return {k: _without_empty(v) for k, v in value.items() if v not in ({}, [], None)}
    return value


def test_the_servers_defaults_are_the_operators(admin: Api, namespace: str) -> None:
    stored = admit(admin, namespace, {"model": {"id": "demo"}})["spec"]
    assert stored == _without_empty(ParakeetASRSpec.model_validate({"model": {"id": "demo"}}).model_dump(
        by_alias=True))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_the_examples_are_admitted_as_written(admin: Api, namespace: str, example: Path) -> None:
    written = yaml.safe_load(example.read_text())
    stored = admit(admin, namespace, written["spec"], written["metadata"]["name"])["spec"]
    for field in ("resources", "tolerations", "affinity", "nodeSelector", "settings"):
        assert stored.get(field, {}) == written["spec"].get(field, stored.get(field, {})), field


@pytest.mark.parametrize(("spec", "message"), [
    ({"replicas": 2, "autoscaling": {"mode": "hpa"}}, CEL_RULES[0].message),
    ({"rollout": {"maxSurge": 0, "maxUnavailable": 0}}, CEL_RULES[1].message),
    ({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}, CEL_RULES[2].message),
    ({"settings": {"LOG_LEVEL": "DEBUG"}}, "settings keys are PARAKEET_* variables"),
    ({"gpu": {"count": -1}}, "spec.gpu.count: Invalid value: -1: spec.gpu.count in body should be greater than or "
                             "equal to 0"),
    ({"autoscaling": {"mode": "always"}}, 'spec.autoscaling.mode: Unsupported value: "always"'),
    ({"modelCache": {"sizee": "10Gi"}}, 'unknown field "spec.modelCache.sizee"'),
], ids=["replicas-with-autoscaling", "rollout-stuck", "min-above-max", "settings-key", "negative-gpus",
        "unknown-mode", "misspelt-field"])
def test_a_bad_spec_is_refused_by_the_api_server_with_one_clear_message(admin: Api, namespace: str,
                                                                       spec: dict[str, Any], message: str) -> None:
    with pytest.raises(Refused) as refused:
        admit(admin, namespace, {"model": {"id": "demo"}, **spec})
    # 422 from validation, 400 from strict decoding of an unknown field
    assert refused.value.status in (400, 422) and message in refused.value.message, refused.value.message


@pytest.mark.parametrize(("edit", "message"), [
    ({"size": "5Gi"}, "modelCache.size cannot shrink"),
    ({"storageClass": "fast-ssd"}, "modelCache.storageClass cannot change once the claim is made"),
    ({"accessMode": "ReadWriteMany"}, "modelCache.accessMode cannot change once the claim is made"),
    ({"size": "lots"}, "modelCache.size is not a quantity"),
], ids=["shrink", "class", "access-mode", "not-a-quantity"])
def test_an_edit_the_claim_cannot_take_is_refused_when_it_is_made(admin: Api, namespace: str, edit: dict[str, Any],
                                                                  message: str) -> None:
    """Kubernetes fixes a claim's class and access mode and only grows it: an edit it would refuse the operator
    later is refused here, with the way out."""
    admit(admin, namespace, {"model": {"id": "demo"}, "modelCache": {"size": "10Gi", "storageClass": "standard"}})
    with pytest.raises(Refused) as refused:
        admin.merge(f"{ASRS.format(ns=namespace)}/asr", {"spec": {"modelCache": edit}})
    assert refused.value.status == 422 and message in refused.value.message, refused.value.message
    admin.merge(f"{ASRS.format(ns=namespace)}/asr", {"spec": {"modelCache": {"size": "20Gi"}}})  # growing is fine
    if edit.get("size") != "lots":  # naming another claim, the made one's limits no longer apply
        admin.merge(f"{ASRS.format(ns=namespace)}/asr", {"spec": {"modelCache": {"existingClaim": "shared", **edit}}})


def test_kubectl_get_shows_model_ready_phase_and_endpoint(admin: Api, namespace: str) -> None:
    admit(admin, namespace, {"model": {"id": "demo"}})
    table = admin.client.get(ASRS.format(ns=namespace),
                             headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}).json()
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Model", "Ready", "Phase", "Endpoint", "Age"]
    assert table["rows"][0]["cells"][:2] == ["asr", "demo"]
