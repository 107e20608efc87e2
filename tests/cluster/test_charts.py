"""Both charts installed with the real `helm` into the real API server: install (defaults and each `ci/` values
file), the stored objects read back, hooks created in order, upgrade with changed values, uninstall."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.charts.render import CHART, CI_VALUES, OPERATOR_CHART
from tests.cluster.api import JOBS, Api, Refused, eventually
from tests.cluster.conftest import OPERATOR_NAMESPACE, OPERATOR_RELEASE, helm_on
from tests.cluster.control_plane import ControlPlane

RELEASE = "asr"
WARMED = '{"ok": true, "model": "demo", "transcript": "the train"}'


@pytest.fixture(autouse=True)
def apis(third_party_apis: None, operator_identity: Any) -> None:
    """KEDA's, the Prometheus operator's and cert-manager's APIs, and the ParakeetASR CRD, are served."""


@contextlib.contextmanager
def job_controller(api: Api, namespace: str) -> Iterator[list[str]]:
    """Complete every Job that appears in `namespace` (Helm waits for its hook Jobs); the names, in order."""
    done: list[str] = []
    failed: list[BaseException] = []
    stop = threading.Event()

    def run() -> None:
        try:
            while not stop.wait(0.2):
                for job in api.call("GET", JOBS.format(ns=namespace))["items"]:
                    if job["metadata"]["name"] not in done and not job.get("status", {}).get("conditions"):
                        api.finish_job(namespace, job["metadata"]["name"], WARMED)
                        done.append(job["metadata"]["name"])
        except BaseException as exc:  # surfaces in the test, not as a silent Helm timeout
            failed.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield done
    finally:
        stop.set()
        thread.join()
    if failed:
        raise failed[0]


def object_path(api: Api, manifest: dict[str, Any], namespace: str) -> str:
    """Where the API server keeps `manifest`, from its own discovery."""
    group_version = manifest["apiVersion"]
    base = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    found = next(r for r in api.call("GET", base)["resources"]
                 if r["kind"] == manifest["kind"] and "/" not in r["name"])
    scope = f"/namespaces/{namespace}" if found["namespaced"] else ""
    return f"{base}{scope}/{found['name']}/{manifest['metadata']['name']}"


def released(plane: ControlPlane, namespace: str, release: str = RELEASE) -> list[dict[str, Any]]:
    """What Helm recorded as the release's objects (hooks aside)."""
    manifest = helm_on(plane, "get", "manifest", release, "--namespace", namespace)
    assert manifest.returncode == 0, manifest.stderr
    return [doc for doc in yaml.safe_load_all(manifest.stdout) if doc]


def creations(plane: ControlPlane, namespace: str, since: int) -> list[str]:
    """The resources the admin (Helm) created in `namespace`, in order, from the audit log (Helm 4 creates by
    server-side apply: a patch answered 201)."""
    return [e["objectRef"]["resource"] for e in plane.audit()[since:] if e["user"]["username"] == "admin"
            and e["verb"] in ("create", "patch") and e["objectRef"].get("namespace") == namespace
            and e["responseStatus"]["code"] == 201 and not e["objectRef"].get("subresource")]


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda v: v.stem if v else "defaults")
def test_the_service_chart_installs_upgrades_and_uninstalls(control_plane: ControlPlane, admin: Api, namespace: str,
                                                            values: Path | None) -> None:
    files = ["-f", str(values)] if values else []
    since = len(control_plane.audit())
    with job_controller(admin, namespace) as hooks:
        installed = helm_on(control_plane, "install", RELEASE, str(CHART), "--namespace", namespace, *files,
                            "--timeout", "90s")
    assert installed.returncode == 0, installed.stderr
    objects = released(control_plane, namespace)
    for manifest in objects:  # each is stored as rendered, and its namespace is the release's
        stored = admin.call("GET", object_path(admin, manifest, namespace))
        assert stored["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
    deployment = next(m for m in objects if m["kind"] == "Deployment")
    created = creations(control_plane, namespace, since)
    # hooks by weight: the cache claim, then the cache fill (it proves the model), then the fleet
    order = [kind for kind in ("persistentvolumeclaims", "jobs", "deployments") if kind in created]
    assert sorted(order, key=created.index) == order and order[-1] == "deployments", created
    assert ("jobs" in order) is bool(hooks)
    path = object_path(admin, deployment, namespace)
    generation = admin.call("GET", path)["metadata"]["generation"]

    with job_controller(admin, namespace):
        upgraded = helm_on(control_plane, "upgrade", RELEASE, str(CHART), "--namespace", namespace, *files,
                           "--set-string", "settings.PARAKEET_LOG_LEVEL=DEBUG", "--timeout", "90s")
    assert upgraded.returncode == 0, upgraded.stderr
    stored = admin.call("GET", path)
    env = {e["name"]: e.get("value") for e in stored["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PARAKEET_LOG_LEVEL"] == "DEBUG" and stored["metadata"]["generation"] == generation + 1

    uninstalled = helm_on(control_plane, "uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "60s")
    assert uninstalled.returncode == 0, uninstalled.stderr
    left = [(m["kind"], m["metadata"]["name"]) for m in objects if admin.get(object_path(admin, m, namespace))
            and m["metadata"].get("annotations", {}).get("helm.sh/resource-policy") != "keep"]
    assert left == []


def test_the_operator_chart_installed_with_its_defaults_and_upgraded_to_the_cluster_wide_values(
        control_plane: ControlPlane, admin: Api) -> None:
    objects = {(m["kind"], m["metadata"]["name"]) for m in released(control_plane, OPERATOR_NAMESPACE,
                                                                      OPERATOR_RELEASE)}
    assert {("ServiceAccount", OPERATOR_RELEASE), ("ClusterRole", OPERATOR_RELEASE),
            ("ClusterRoleBinding", OPERATOR_RELEASE), ("Deployment", OPERATOR_RELEASE),
            ("CustomResourceDefinition", "parakeetasrs.asr.parakeet.dev")} <= objects
    values = OPERATOR_CHART / "ci" / "cluster-wide-values.yaml"
    upgraded = helm_on(control_plane, "upgrade", OPERATOR_RELEASE, str(OPERATOR_CHART), "--namespace",
                       OPERATOR_NAMESPACE, "-f", str(values))
    assert upgraded.returncode == 0, upgraded.stderr
    deployment = admin.call("GET", f"/apis/apps/v1/namespaces/{OPERATOR_NAMESPACE}/deployments/{OPERATOR_RELEASE}")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["PARAKEET_OPERATOR_RECONCILE_INTERVAL_S"] == "15"
    assert container["image"] == "registry.example.com/parakeet-operator:0.1.0"


def test_the_operator_chart_for_one_namespace_grants_a_role_there_only(control_plane: ControlPlane, admin: Api,
                                                                       namespace: str) -> None:
    watched = admin.namespace(f"{namespace[:50]}-watched")
    values = OPERATOR_CHART / "ci" / "namespaced-values.yaml"  # crds.install: false, beside the cluster's CRD
    installed = helm_on(control_plane, "install", "scoped", str(OPERATOR_CHART), "--namespace", namespace, "-f",
                        str(values), "--set", f"watchNamespace={watched}")
    assert installed.returncode == 0, installed.stderr
    role = admin.call("GET", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{watched}/roles/scoped-parakeet-operator")
    assert {"parakeetasrs", "deployments"} <= {res for rule in role["rules"] for res in rule["resources"]}
    with pytest.raises(Refused):
        admin.call("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles/scoped-parakeet-operator")
    review = admin.create("/apis/authorization.k8s.io/v1/subjectaccessreviews", {
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {
            "user": f"system:serviceaccount:{namespace}:scoped-parakeet-operator",
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"],
            "resourceAttributes": {"namespace": "default", "verb": "create", "group": "apps",
                                   "resource": "deployments"}}})
    assert review["status"]["allowed"] is False  # nothing outside the watched namespace
    uninstalled = helm_on(control_plane, "uninstall", "scoped", "--namespace", namespace, "--wait")
    assert uninstalled.returncode == 0, uninstalled.stderr
    eventually(lambda: admin.get(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{watched}/roles/"
                                 "scoped-parakeet-operator") is None, "the Role removed")
