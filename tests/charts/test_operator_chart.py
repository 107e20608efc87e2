"""The operator chart, rendered by a real `helm`: lint, Kubernetes schemas, the CRD it installs, RBAC in
both watch scopes, settings the operator knows. (Its rules against the calls the operator really makes:
tests/operator/test_operator.py, every run.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from parakeet_operator.settings import OperatorSettings
from tests.charts.render import NAMESPACE, OPERATOR_CHART, helm, load_yaml, render
from tests.charts.test_service_chart import schema_leaves

CI_VALUES = sorted((OPERATOR_CHART / "ci").glob("*-values.yaml"))
IDS = ["defaults", *(p.name.removesuffix("-values.yaml") for p in CI_VALUES)]


def operator_render(values: Path | None = None, **sets: Any) -> list[dict[str, Any]]:
    return render(values, sets=sets, chart=OPERATOR_CHART)


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=IDS)
def test_the_chart_lints_and_every_object_is_valid(values: Path | None) -> None:
    lint = helm("lint", "--strict", str(OPERATOR_CHART), *(["-f", str(values)] if values else []))
    assert lint.returncode == 0, lint.stdout + lint.stderr
    version = kubernetes_validate.utils.latest_version()
    for doc in operator_render(values):
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_crd_is_the_generated_one_kept_on_uninstall() -> None:
    crd = one(operator_render(), "CustomResourceDefinition")
    generated = yaml.safe_load((OPERATOR_CHART / "files" / "crd.yaml").read_text())
    assert crd["spec"] == generated["spec"]
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert "CustomResourceDefinition" not in {d["kind"] for d in operator_render(crds={"install": False})}
    assert not (OPERATOR_CHART / "crds").exists()  # Helm never upgrades what lies there


def test_a_watched_namespace_gets_a_role_with_the_cluster_roles_rules() -> None:
    cluster = operator_render()
    scoped = operator_render(watchNamespace="speech")
    role = one(scoped, "Role")
    assert role["metadata"]["namespace"] == "speech"
    cluster_role = next(d for d in cluster if d["kind"] == "ClusterRole" and "discovery" not in d["metadata"]["name"])
    assert role["rules"] == cluster_role["rules"]
    discovery = next(d for d in scoped if d["kind"] == "ClusterRole")
    assert discovery["rules"] == [{"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
                                   "verbs": ["get", "list", "watch"]}]
    env = {e["name"]: e["value"] for e in one(scoped, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PARAKEET_OPERATOR_NAMESPACE"] == "speech"


def test_the_rbac_never_reads_secrets_or_deletes_the_fleet() -> None:
    rules = [r for d in operator_render() if d["kind"] == "ClusterRole" for r in d["rules"]]
    assert not [r for r in rules if "secrets" in r["resources"]]
    deletable = {res for r in rules if "delete" in r["verbs"] for res in r["resources"]}
    assert deletable == {"scaledobjects", "horizontalpodautoscalers", "jobs"}  # jobs: superseded warm-ups
    assert not [r for r in rules if "*" in r["verbs"] or "*" in r["resources"]]


def test_the_operator_gets_only_settings_it_knows_and_valid_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    container = one(operator_render(), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    known = {f"PARAKEET_OPERATOR_{name.upper()}" for name in OperatorSettings.model_fields}
    for variable in container["env"]:
        assert variable["name"] in known
        monkeypatch.setenv(variable["name"], variable["value"])
    settings = OperatorSettings()
    assert settings.liveness_port == container["ports"][0]["containerPort"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_invalid_values_are_refused_naming_the_value() -> None:
    for sets, named in [({"replicas": 2}, "/replicas"), ({"watchNamespace": "Not_A_Namespace"}, "/watchNamespace"),
                        ({"logLevel": "LOUD"}, "/logLevel")]:
        result = helm("template", "op", str(OPERATOR_CHART), "--namespace", NAMESPACE,
                      *[arg for key, value in sets.items() for arg in ("--set-json", f"{key}={json.dumps(value)}")])
        assert result.returncode != 0 and named in result.stderr, result.stderr


def test_every_value_has_a_default_and_a_line_in_the_chart_readme() -> None:
    defaults = load_yaml(OPERATOR_CHART / "values.yaml")
    readme = (OPERATOR_CHART / "README.md").read_text()
    for leaf in schema_leaves(json.loads((OPERATOR_CHART / "values.schema.json").read_text())):
        node: Any = defaults
        for key in leaf.split("."):
            assert isinstance(node, dict) and key in node, f"{leaf} has no default"
            node = node[key]
        assert f"| `{leaf}` |" in readme, f"{leaf} is not in the chart README"
