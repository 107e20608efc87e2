"""One real control plane per test run; the operator chart installed in it once (its CRD, ServiceAccount and
RBAC), and the operator run under kopf's KopfRunner as that ServiceAccount, so the real authorizer decides."""

from __future__ import annotations

import contextlib
import itertools
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf
import pytest
from kopf.testing import KopfRunner

import parakeet_operator.handlers
from tests.charts.render import OPERATOR_CHART, helm
from tests.cluster.api import Api, eventually
from tests.cluster.control_plane import ControlPlane, start

OPERATOR_NAMESPACE, OPERATOR_RELEASE = "parakeet-system", "parakeet-operator"
_names = itertools.count(1)


@dataclass(frozen=True)
class OperatorIdentity:
    username: str  # as the API server (and its audit log) knows it
    kubeconfig: Path


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = start(tmp_path_factory.mktemp("control-plane"))
    yield plane
    plane.stop()


@pytest.fixture(scope="session")
def admin(control_plane: ControlPlane) -> Api:
    return Api(control_plane)


def helm_on(plane: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    return helm(*args, "--kubeconfig", str(plane.kubeconfig()))


# APIs that KEDA, the Prometheus operator and cert-manager install, as CRDs that keep whatever they are given
# (the charts' objects of these kinds are checked against the projects' own schemas in tests/charts).
THIRD_PARTY = [("keda.sh", "v1alpha1", "ScaledObject"), ("monitoring.coreos.com", "v1", "ServiceMonitor"),
               ("monitoring.coreos.com", "v1", "PrometheusRule"), ("cert-manager.io", "v1", "Certificate")]


@pytest.fixture(scope="session")
def third_party_apis(admin: Api) -> None:
    for group, version, kind in THIRD_PARTY:
        plural = f"{kind.lower()}s"
        admin.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", {
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {"group": group, "scope": "Namespaced",
                     "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
                     "versions": [{"name": version, "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                         "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}})
    for group, version, kind in THIRD_PARTY:
        eventually(lambda g=group, v=version: admin.get(f"/apis/{g}/{v}"), f"{kind} served")


@pytest.fixture(scope="session")
def operator_identity(control_plane: ControlPlane, admin: Api, third_party_apis: None) -> OperatorIdentity:
    """The operator chart installed with its defaults (CRD included); a token of its ServiceAccount."""
    installed = helm_on(control_plane, "install", OPERATOR_RELEASE, str(OPERATOR_CHART), "--namespace",
                        OPERATOR_NAMESPACE, "--create-namespace", "--wait-for-jobs=false")
    assert installed.returncode == 0, installed.stderr
    eventually(lambda: _established(admin), "the ParakeetASR CRD to be established")
    account = OPERATOR_RELEASE  # the chart's ServiceAccount is named for the release
    token = admin.create(f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/serviceaccounts/{account}/token", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 7200}})
    return OperatorIdentity(f"system:serviceaccount:{OPERATOR_NAMESPACE}:{account}",
                            control_plane.kubeconfig(token["status"]["token"], "operator"))


def _established(admin: Api) -> bool:
    crd = admin.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/parakeetasrs.asr.parakeet.dev")
    return any(c["type"] == "Established" and c["status"] == "True" for c in crd["status"]["conditions"])


@pytest.fixture
def namespace(admin: Api, request: pytest.FixtureRequest) -> str:
    """A fresh namespace per test (this control plane has no namespace controller to empty a deleted one)."""
    return admin.namespace(f"t{next(_names)}-{request.node.name[:40].lower().replace('_', '-').strip('-')}")


def kopf_settings(events: bool) -> kopf.OperatorSettings:
    """Short timeouts and back-offs, so that a test takes seconds; Events only where a test reads them."""
    settings = kopf.OperatorSettings()
    settings.posting.enabled = events
    settings.watching.connect_timeout = 1
    settings.watching.server_timeout = 5
    settings.watching.client_timeout = 6
    settings.networking.request_timeout = 5
    settings.networking.error_backoffs = [0.1, 0.2, 0.3]
    settings.queueing.idle_timeout = 0.5
    settings.queueing.exit_timeout = 0.5
    settings.background.cancellation_polling = 0.1
    settings.execution.default_backoff = 0.1
    return settings


@contextlib.contextmanager
def running_operator(identity: OperatorIdentity, monkeypatch: pytest.MonkeyPatch, reconcile_interval_s: float = 0.5,
                     events: bool = True) -> Iterator[KopfRunner]:
    """The real operator in KopfRunner's thread, as its chart's ServiceAccount; it must end cleanly."""
    monkeypatch.setenv("KUBECONFIG", str(identity.kubeconfig))
    monkeypatch.setenv("PARAKEET_OPERATOR_RECONCILE_INTERVAL_S", str(reconcile_interval_s))
    monkeypatch.setenv("PARAKEET_OPERATOR_DISCOVERY_INTERVAL_S", "0")
    monkeypatch.setenv("PARAKEET_OPERATOR_RETRY_DELAY_S", "0.3")
    runner = KopfRunner(["run", "--standalone", "--all-namespaces", parakeet_operator.handlers.__file__],
                        registry=kopf.OperatorRegistry(), settings=kopf_settings(events), timeout=30)
    with runner:
        yield runner
    assert runner.exit_code == 0, runner.output
    assert runner.exception is None, runner.output


def writes_by(plane: ControlPlane, username: str, since: int = 0) -> list[dict[str, Any]]:
    """The writes `username` made (from the API server's audit log), after the first `since` audit events."""
    return [e for e in plane.audit()[since:] if e["user"]["username"] == username
            and e["verb"] in ("create", "update", "patch", "delete", "deletecollection")]
