"""The real operator against a real API server, as its chart's ServiceAccount (the real RBAC authorizer): warm-up
before the fleet, the edits a cluster user makes first, a converged resource left alone, several namespaces,
deletion. The tests play the Job and Deployment controllers this control plane lacks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from parakeet_operator.spec import WARMUP_RETRY_ANNOTATION
from tests.cluster.api import ASRS, DEPLOYMENTS, JOBS, Api, eventually
from tests.cluster.conftest import OperatorIdentity, running_operator, writes_by
from tests.cluster.control_plane import ControlPlane

INTERVAL_S = 0.5  # the operator's reconcile interval in these tests
# A GPU fleet autoscaled by an HPA: the API server stores the GPU count 1 as "1", 4096Mi as "4Gi", 0.15 as "150m".
SPEC: dict[str, Any] = {
    "model": {"id": "demo"}, "gpu": {"count": 1}, "modelCache": {"size": "1Gi"},
    "autoscaling": {"mode": "hpa", "minReplicas": 1, "maxReplicas": 3, "targetQueueWaitP95Seconds": 0.15},
    "resources": {"requests": {"cpu": "1.5", "memory": "4096Mi"}, "limits": {"memory": "8Gi"}},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
}
WARMED = ('{"ok": true, "model": "demo", "device": "cuda", "load_seconds": 3.5, "rtf": 0.01, '
          '"transcript": "the train to the airport", "error": null}')


class Cluster:
    """One test's namespace, seen and driven as the admin (and the missing controllers)."""

    def __init__(self, api: Api, namespace: str) -> None:
        self.api, self.ns = api, namespace

    def create(self, spec: dict[str, Any], name: str = "asr") -> dict[str, Any]:
        return self.api.create(ASRS.format(ns=self.ns), {
            "apiVersion": "asr.parakeet.dev/v1alpha1", "kind": "ParakeetASR",
            "metadata": {"name": name, "namespace": self.ns}, "spec": spec})

    def edit(self, patch: dict[str, Any], name: str = "asr") -> None:
        self.api.merge(f"{ASRS.format(ns=self.ns)}/{name}", patch)

    def resource(self, name: str = "asr") -> dict[str, Any]:
        return self.api.call("GET", f"{ASRS.format(ns=self.ns)}/{name}")

    def condition(self, kind: str, name: str = "asr") -> dict[str, Any]:
        return next(c for c in self.resource(name)["status"]["conditions"] if c["type"] == kind)

    def jobs(self) -> dict[str, dict[str, Any]]:
        """The warm-up Jobs the server holds. One deleted without Background propagation would stay, held by
        the orphan finalizer that only the garbage collector (absent here) removes, as it holds the pod on a
        real cluster."""
        return {j["metadata"]["name"]: j for j in self.api.call("GET", JOBS.format(ns=self.ns))["items"]}

    def one_job(self, other_than: str = "") -> str:
        """The name of the only warm-up Job, once there is exactly one and it is not `other_than`."""
        return eventually(lambda: len(jobs := self.jobs()) == 1 and (name := next(iter(jobs))) != other_than
                          and name, f"one warm-up Job other than {other_than!r}")

    def events(self, name: str = "asr") -> list[tuple[str, str, str]]:
        """What `kubectl describe` shows of the resource: (type, reason, message), oldest first."""
        found = self.api.call("GET", f"/api/v1/namespaces/{self.ns}/events")["items"]
        return [(e["type"], e["reason"], e["message"]) for e in sorted(found, key=lambda e: e["metadata"]["name"])
                if e["involvedObject"]["kind"] == "ParakeetASR" and e["involvedObject"]["name"] == name]

    def deployment(self, name: str = "asr") -> dict[str, Any] | None:
        return self.api.get(f"{DEPLOYMENTS.format(ns=self.ns)}/{name}")

    def pod_spec(self, name: str = "asr") -> dict[str, Any]:
        return self.deployment(name)["spec"]["template"]["spec"]

    def warm_up(self, spec: dict[str, Any], name: str = "asr") -> str:
        """Create the resource, let its warm-up succeed and its fleet roll out; the Job's name."""
        self.create(spec, name)
        job = self.one_job()
        self.api.finish_job(self.ns, job, WARMED)
        eventually(lambda: self.deployment(name), "the Deployment")
        self.api.roll_out(self.ns, name)
        eventually(lambda: self.resource(name)["status"]["phase"] == "Ready", "phase Ready")
        return job


@pytest.fixture
def cluster(admin: Api, namespace: str) -> Iterator[Cluster]:
    yield Cluster(admin, namespace)
    # gone while the operator still runs (it releases its finalizer), so later tests' operators have less to do
    for item in admin.call("GET", ASRS.format(ns=namespace))["items"]:
        admin.delete(f"{ASRS.format(ns=namespace)}/{item['metadata']['name']}")
    eventually(lambda: not admin.call("GET", ASRS.format(ns=namespace))["items"], "the resources deleted")


@pytest.fixture
def operator(operator_identity: OperatorIdentity, control_plane: ControlPlane,
             monkeypatch: pytest.MonkeyPatch) -> Any:
    since = len(control_plane.audit())
    with running_operator(operator_identity, monkeypatch, INTERVAL_S):
        yield
    refused = [(e["verb"], e["requestURI"], e["responseStatus"]) for e in control_plane.audit()[since:]
               if e["user"]["username"] == operator_identity.username and e["responseStatus"]["code"] >= 400
               and e["responseStatus"]["code"] not in (404, 429)  # a child not there yet; a CRD's storage starting
               and "context canceled" not in e["responseStatus"].get("message", "")]  # kopf stopped mid-call
    assert refused == [], "the API server refused the operator's calls"


def quiet_writes(plane: ControlPlane, identity: OperatorIdentity, namespace: str,
                 periods: int = 6) -> list[tuple[str, str]]:
    """The operator's writes in `namespace` while nothing changes there, over several reconcile periods."""
    since = len(plane.audit())
    time.sleep(periods * INTERVAL_S)
    return [(e["verb"], e["requestURI"]) for e in writes_by(plane, identity.username, since)
            if e["objectRef"].get("namespace") == namespace]


@pytest.mark.usefixtures("operator")
def test_a_resource_is_warmed_up_then_served_and_once_converged_costs_no_writes(
        cluster: Cluster, control_plane: ControlPlane, operator_identity: OperatorIdentity) -> None:
    created = cluster.create(SPEC)
    job = cluster.one_job()
    eventually(lambda: cluster.condition("WarmedUp")["reason"] == "Running", "WarmedUp Running")
    assert cluster.deployment() is None  # no fleet before the model is proven

    cluster.api.finish_job(cluster.ns, job, WARMED)
    eventually(lambda: cluster.deployment(), "the Deployment")
    cluster.api.roll_out(cluster.ns, "asr")
    eventually(lambda: cluster.resource()["status"]["phase"] == "Ready", "phase Ready")
    hpa = cluster.api.call("GET", f"/apis/autoscaling/v2/namespaces/{cluster.ns}/horizontalpodautoscalers/asr")
    resources = cluster.pod_spec()["containers"][0]["resources"]
    # what the API server made of the operator's values: the drift check must read them as equal
    assert resources == {"requests": {"cpu": "1500m", "memory": "4Gi"},
                         "limits": {"memory": "8Gi", "nvidia.com/gpu": "1"}}
    assert hpa["spec"]["metrics"][1]["pods"]["target"]["averageValue"] == "150m"
    owner = cluster.deployment()["metadata"]["ownerReferences"][0]
    assert (owner["uid"], owner["controller"], owner["blockOwnerDeletion"]) == (created["metadata"]["uid"], True, True)
    status = cluster.resource()["status"]
    assert status["warmup"]["transcript"] == "the train to the airport" and "lastFailure" not in status

    assert quiet_writes(control_plane, operator_identity, cluster.ns) == []


@pytest.mark.usefixtures("operator")
def test_an_edit_to_the_warmup_pod_while_it_runs_replaces_its_job(cluster: Cluster) -> None:
    cluster.create({**SPEC, "tolerations": []})
    first = cluster.one_job()
    toleration = {"key": "gpu-pool", "operator": "Equal", "value": "h100", "effect": "NoSchedule"}
    cluster.edit({"spec": {"tolerations": [toleration], "warmup": {"timeoutSeconds": 600}}})  # it cannot schedule

    second = cluster.one_job(other_than=first)  # the first is deleted, not patched (a Job's pod is immutable)
    job = cluster.jobs()[second]
    assert job["spec"]["template"]["spec"]["tolerations"] == [toleration]
    assert job["spec"]["activeDeadlineSeconds"] == 600
    eventually(lambda: cluster.condition("WarmedUp")["observedGeneration"] == 2, "the edit observed")
    assert cluster.deployment() is None
    cluster.api.finish_job(cluster.ns, second, WARMED)
    eventually(lambda: cluster.deployment(), "the Deployment")
    assert cluster.pod_spec()["tolerations"] == [toleration]


@pytest.mark.usefixtures("operator")
def test_the_fleet_is_untouched_until_a_changed_warmup_succeeds(cluster: Cluster) -> None:
    first = cluster.warm_up(SPEC)
    served = cluster.pod_spec()
    cluster.edit({"spec": {"nodeSelector": {"pool": "h100"}}})
    second = cluster.one_job(other_than=first)
    assert cluster.jobs()[second]["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "h100"}
    time.sleep(4 * INTERVAL_S)
    assert cluster.pod_spec() == served and cluster.condition("Available")["status"] == "True"
    cluster.api.finish_job(cluster.ns, second, WARMED)
    eventually(lambda: cluster.pod_spec().get("nodeSelector") == {"pool": "h100"}, "the rollout to the new pods")
    # The proof is recorded just after the rollout; an edit back to the first spec before that may reuse the
    # first spec's proof, which is right, but not what this test follows.
    eventually(lambda: second.endswith(cluster.resource()["status"]["warmup"]["key"]), "the new proof recorded")

    # a field taken out of the spec goes from the fleet too (after its own warm-up)
    cluster.edit({"spec": {"nodeSelector": None}})
    third = cluster.one_job(other_than=second)
    cluster.api.finish_job(cluster.ns, third, WARMED)
    eventually(lambda: "nodeSelector" not in cluster.pod_spec(), "the node selector removed")


@pytest.mark.usefixtures("operator")
def test_a_failed_warmup_runs_again_after_an_edit_or_a_retry_annotation_and_its_failure_clears(
        cluster: Cluster) -> None:
    cluster.create(SPEC)
    first = cluster.one_job()
    cluster.api.finish_job(cluster.ns, first, "model not loaded in time", succeeded=False, reason="DeadlineExceeded")
    eventually(lambda: "DeadlineExceeded" in cluster.resource()["status"]["lastFailure"], "lastFailure")
    degraded = cluster.condition("Degraded")
    assert degraded["status"] == "True"
    warnings = eventually(lambda: [e for e in cluster.events() if e[0] == "Warning"], "a Warning Event")
    time.sleep(3 * INTERVAL_S)  # later reconciles say nothing new
    assert [e for e in cluster.events() if e[0] == "Warning"] == warnings == [
        ("Warning", "Failed", degraded["message"])]
    assert ("Normal", "Created", f"created Job {first}") in cluster.events()

    cluster.edit({"spec": {"warmup": {"timeoutSeconds": 7200}}})
    second = cluster.one_job(other_than=first)
    assert cluster.jobs()[second]["spec"]["activeDeadlineSeconds"] == 7200
    eventually(lambda: (c := cluster.condition("WarmedUp"))["reason"] == "Running" and c["observedGeneration"] == 2,
               "the new warm-up running for generation 2")
    cluster.api.finish_job(cluster.ns, second, "no GPU memory", succeeded=False)
    eventually(lambda: "no GPU memory" in cluster.resource()["status"]["lastFailure"], "the second failure")

    cluster.edit({"metadata": {"annotations": {WARMUP_RETRY_ANNOTATION: "1"}}})  # retry without an edit
    third = cluster.one_job(other_than=second)
    cluster.api.finish_job(cluster.ns, third, WARMED)
    eventually(lambda: cluster.deployment(), "the Deployment")
    eventually(lambda: "lastFailure" not in cluster.resource()["status"], "lastFailure cleared")
    assert cluster.condition("Degraded")["status"] == "False"


@pytest.mark.usefixtures("operator")
def test_a_proven_warmup_is_remembered_when_its_job_is_removed(cluster: Cluster) -> None:
    spec = {**SPEC, "autoscaling": {"mode": "none"}, "replicas": 1}
    job = cluster.warm_up(spec)
    cluster.api.delete(f"{JOBS.format(ns=cluster.ns)}/{job}")  # as its ttlSecondsAfterFinished would
    time.sleep(4 * INTERVAL_S)
    assert cluster.jobs() == {}
    assert cluster.condition("WarmedUp")["status"] == "True" and cluster.resource()["status"]["phase"] == "Ready"
    cluster.edit({"spec": {"replicas": 2}})  # the fleet is still updated
    eventually(lambda: cluster.deployment()["spec"]["replicas"] == 2, "two replicas")
    assert cluster.jobs() == {}


@pytest.mark.usefixtures("operator")
def test_server_settings_given_twice_are_applied_once_with_the_users_value(cluster: Cluster) -> None:
    cluster.warm_up({**SPEC, "pod": {"env": [{"name": "PARAKEET_LOG_LEVEL", "value": "DEBUG"}]}})
    env = [e for e in cluster.pod_spec()["containers"][0]["env"] if e["name"] == "PARAKEET_LOG_LEVEL"]
    assert env == [{"name": "PARAKEET_LOG_LEVEL", "value": "DEBUG"}]


@pytest.mark.usefixtures("operator")
def test_resources_in_two_namespaces_are_reconciled_apart(admin: Api, cluster: Cluster, namespace: str) -> None:
    other = Cluster(admin, admin.namespace(f"{namespace[:50]}-b"))
    cluster.warm_up(SPEC)
    other.create({**SPEC, "model": {"id": "nvidia/parakeet-tdt-0.6b-v2"}})
    job = other.one_job()
    time.sleep(2 * INTERVAL_S)
    assert other.deployment() is None  # its own warm-up, not the first namespace's, gates its fleet
    other.api.finish_job(other.ns, job, WARMED.replace('"demo"', '"nvidia/parakeet-tdt-0.6b-v2"'))
    eventually(lambda: other.deployment(), "the second Deployment")
    env = {e["name"]: e.get("value") for e in other.pod_spec()["containers"][0]["env"]}
    assert env["PARAKEET_MODEL_ID"] == "nvidia/parakeet-tdt-0.6b-v2"


@pytest.mark.usefixtures("operator")
def test_a_deleted_resource_goes_and_leaves_children_the_garbage_collector_would_take(
        cluster: Cluster, control_plane: ControlPlane, operator_identity: OperatorIdentity) -> None:
    cluster.warm_up(SPEC)
    created = cluster.resource()
    cluster.api.delete(f"{ASRS.format(ns=cluster.ns)}/asr")
    eventually(lambda: cluster.api.get(f"{ASRS.format(ns=cluster.ns)}/asr") is None, "the finalizer released")
    assert [w for w in quiet_writes(control_plane, operator_identity, cluster.ns, 4) if "/events" not in w[1]] == []
    owners = [ref["uid"] for ref in cluster.deployment()["metadata"]["ownerReferences"]]
    assert owners == [created["metadata"]["uid"]]
    claim = cluster.api.call("GET", f"/api/v1/namespaces/{cluster.ns}/persistentvolumeclaims/asr-model-cache")
    assert "ownerReferences" not in claim["metadata"]  # retainOnDelete: the models stay
