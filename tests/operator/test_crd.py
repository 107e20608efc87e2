"""The `ParakeetASR` CRD: generated from the spec models, checked in current, valid for Kubernetes, and its
schema and CEL rules accept the examples and refuse bad specs as the operator's own validation does."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from parakeet_operator.crd import crd, crd_yaml
from parakeet_operator.spec import CEL_RULES, ParakeetASRSpec

ROOT = Path(__file__).resolve().parents[2]
CHECKED_IN = ROOT / "charts" / "parakeet-operator" / "files" / "crd.yaml"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
SCHEMA = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def with_defaults(schema: dict[str, Any], value: Any) -> Any:
    """`value` with the schema's defaults filled in, as the API server stores it."""
    if not isinstance(value, dict) or "properties" not in schema:
        return value
    out = dict(value)
    for key, sub in schema["properties"].items():
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if key in out:
            out[key] = with_defaults(sub, out[key])
    return out


def admitted(spec: dict[str, Any]) -> list[str]:
    """What the API server would say of `spec`: schema errors, then failed CEL rules (none: admitted)."""
    # OpenAPI 3.0 schemas are JSON Schema draft 4 (boolean exclusiveMinimum) with extensions.
    errors = [e.message for e in jsonschema.Draft4Validator(SCHEMA["properties"]["spec"]).iter_errors(spec)]
    if errors:
        return errors
    stored = with_defaults(SCHEMA["properties"]["spec"], spec)
    env = celpy.Environment()
    failed = []
    for rule in SCHEMA["properties"]["spec"]["x-kubernetes-validations"]:
        if not env.program(env.compile(rule["rule"])).evaluate({"self": celpy.json_to_cel(stored)}):
            failed.append(rule["message"])
    settings_rule = SCHEMA["properties"]["spec"]["properties"]["settings"]["x-kubernetes-validations"][0]
    if not env.program(env.compile(settings_rule["rule"])).evaluate(
            {"self": celpy.json_to_cel(stored.get("settings", {}))}):
        failed.append(settings_rule["message"])
    return failed


def test_the_checked_in_crd_is_current() -> None:
    """Regenerate with: python -m parakeet_operator.crd > charts/parakeet-operator/files/crd.yaml"""
    assert CHECKED_IN.read_text() == crd_yaml()


def test_the_crd_is_a_valid_kubernetes_object_with_status_scale_and_printer_columns() -> None:
    document = crd()
    kubernetes_validate.validate(document, kubernetes_validate.utils.latest_version(), strict=True)
    version = document["spec"]["versions"][0]
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Model", "Ready", "Phase", "Endpoint", "Age"]
    assert SCHEMA["properties"]["status"]["x-kubernetes-preserve-unknown-fields"] is True


def test_the_schema_is_structural() -> None:
    """Kubernetes refuses $ref, anyOf-with-null, titles and `additionalProperties: false` beside properties."""
    text = yaml.safe_dump(SCHEMA)
    for forbidden in ("$ref", "anyOf", "title:", "additionalProperties: false"):
        assert forbidden not in text

    def described(node: dict[str, Any], path: str) -> None:
        for key, sub in node.get("properties", {}).items():
            assert sub.get("description"), f"{path}.{key} has no description"
            described(sub, f"{path}.{key}")

    described(SCHEMA["properties"]["spec"], "spec")


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_the_examples_are_admitted_and_valid_for_the_operator(example: Path) -> None:
    document = yaml.safe_load(example.read_text())
    assert document["apiVersion"] == "asr.parakeet.dev/v1alpha1" and document["kind"] == "ParakeetASR"
    assert admitted(document["spec"]) == []
    ParakeetASRSpec.model_validate(document["spec"])


BAD_SPECS = [
    ({"replicas": 2, "autoscaling": {"mode": "keda"}}, "replicas is set while autoscaling.mode is not none"),
    ({"rollout": {"maxSurge": 0, "maxUnavailable": 0}}, "both 0"),
    ({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}, "minReplicas is above"),
    ({"settings": {"MODEL_ID": "x"}}, "PARAKEET_"),
    ({"gpu": {"count": 1.5}}, "integer"),
    ({"gpu": {"count": -1}}, "minimum"),
    ({"autoscaling": {"mode": "vpa"}}, "vpa"),
    ({"model": {"id": ""}}, "non-empty"),
    ({"modelCache": {"accessMode": "ReadOnlyMany"}}, "ReadOnlyMany"),
]


@pytest.mark.parametrize(("spec", "said"), BAD_SPECS, ids=[s for _, s in BAD_SPECS])
def test_bad_specs_are_refused_by_the_api_server_and_by_the_operator(spec: dict[str, Any], said: str) -> None:
    assert any(said in message for message in admitted(spec)), admitted(spec)
    with pytest.raises(ValidationError):
        ParakeetASRSpec.model_validate(spec)


@pytest.mark.parametrize("rule", CEL_RULES, ids=lambda r: r.message[:40])
def test_each_cel_rule_and_its_python_twin_agree(rule: Any) -> None:
    specs = [{}, {"replicas": 3}, {"autoscaling": {"mode": "hpa"}}, {"replicas": 1, "autoscaling": {"mode": "hpa"}},
             {"rollout": {"maxSurge": 1, "maxUnavailable": 0}}, {"rollout": {"maxSurge": 0, "maxUnavailable": 0}},
             {"autoscaling": {"mode": "keda", "minReplicas": 3, "maxReplicas": 3}},
             {"autoscaling": {"minReplicas": 4, "maxReplicas": 3}}]
    env = celpy.Environment()
    program = env.program(env.compile(rule.rule))
    for spec in specs:
        cel_ok = bool(program.evaluate({"self": celpy.json_to_cel(with_defaults(SCHEMA["properties"]["spec"], spec))}))
        python_ok = not rule.violated(ParakeetASRSpec.model_construct(**_constructed(spec)))
        assert cel_ok == python_ok, spec


def _constructed(spec: dict[str, Any]) -> dict[str, Any]:
    """Unvalidated models for the Python predicates (which must judge specs validation would refuse)."""
    from parakeet_operator.spec import Autoscaling, Rollout

    def part(model: Any, key: str) -> Any:
        return model.model_construct(**{**model().model_dump(), **_snake(spec.get(key, {}))})

    return {"replicas": spec.get("replicas"), "autoscaling": part(Autoscaling, "autoscaling"),
            "rollout": part(Rollout, "rollout")}


def _snake(values: dict[str, Any]) -> dict[str, Any]:
    return {"".join(f"_{c.lower()}" if c.isupper() else c for c in key): value for key, value in values.items()}

