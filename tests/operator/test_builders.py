"""The operator's pure builders and plan: the children of representative specs, valid for Kubernetes, and
the same pods as the service chart renders for the same deployment (the two cannot drift apart)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from parakeet_operator import builders
from parakeet_operator.builders import Names
from parakeet_operator.plan import CUSTOM_METRICS, KEDA, PROMETHEUS_OPERATOR, Observed, WarmupState, plan
from parakeet_operator.spec import ParakeetASRSpec
from tests.charts.render import env_of, render

ROOT = Path(__file__).resolve().parents[2]
NAMES = Names("asr-parakeet-serve", "speech")


def example(name: str) -> ParakeetASRSpec:
    return ParakeetASRSpec.model_validate(yaml.safe_load((ROOT / "examples" / name).read_text())["spec"])


DEMO, GPU = example("parakeetasr-cpu-demo.yaml"), example("parakeetasr-gpu-production.yaml")


def test_the_gpu_example_says_what_the_cluster_must_already_have() -> None:
    """Each Secret, class and namespace it names is in its header, with a way to make it."""
    text = (ROOT / "examples" / "parakeetasr-gpu-production.yaml").read_text()
    header = text.split("apiVersion:")[0]
    document = yaml.safe_load(text)
    named = {document["metadata"]["namespace"], *GPU.image.pull_secrets, GPU.tls.secret_name,
             GPU.tls.client_ca_secret_name, GPU.auth.token_secret_name, GPU.priority_class_name,
             GPU.runtime_class_name, GPU.model_cache.storage_class}
    assert all(name and name in header for name in named), sorted(n for n in named if n not in header)
SUCCEEDED = WarmupState("succeeded", result={"ok": True, "model": "demo", "load_seconds": 2.5, "rtf": 0.02,
                                             "transcript": "the train to the airport"})
ALL_APIS = frozenset({KEDA, CUSTOM_METRICS, PROMETHEUS_OPERATOR})


def by_kind(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["kind"]: m for m in manifests}


def condition(p: Any, kind: str) -> dict[str, str]:
    (found,) = [c for c in p.conditions if c["type"] == kind]
    return found


@pytest.mark.parametrize("spec", [DEMO, GPU], ids=["cpu-demo", "gpu-production"])
def test_every_child_is_valid_for_kubernetes(spec: ParakeetASRSpec) -> None:
    p = plan(spec, NAMES, Observed(apis=frozenset(), warmup=SUCCEEDED))
    children = [*p.apply, builders.warmup_job(spec, NAMES), builders.horizontal_pod_autoscaler(spec, NAMES)]
    version = kubernetes_validate.utils.latest_version()
    for child in children:
        if child["apiVersion"].startswith(("keda.sh", "monitoring.coreos.com")):
            continue  # checked against the CRDs' models in the parity test below
        kubernetes_validate.validate(child, version, strict=True)


def test_a_new_resource_gets_its_cache_and_warmup_and_no_fleet_yet() -> None:
    p = plan(GPU, NAMES, Observed(apis=ALL_APIS, warmup=WarmupState("absent")))
    assert [m["kind"] for m in p.apply] == ["PersistentVolumeClaim", "Job"]
    claim, job = p.apply
    assert claim["spec"] == {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "20Gi"}},
                             "storageClassName": "shared-nfs"}
    assert job["metadata"]["name"] == NAMES.warmup_job(builders.warmup_key(GPU, NAMES))
    assert condition(p, "WarmedUp")["reason"] == "Running" and p.status["phase"] == "WarmingUp"


def test_the_warmup_job_proves_the_model_on_the_serving_hardware() -> None:
    job = builders.warmup_job(GPU, NAMES)
    server = builders.deployment(GPU, NAMES, 1)["spec"]["template"]["spec"]
    pod = job["spec"]["template"]["spec"]
    assert job["spec"]["backoffLimit"] == 2 and job["spec"]["activeDeadlineSeconds"] == 2400
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    warmup = pod["containers"][0]
    assert warmup["args"] == ["warmup"] and pod["restartPolicy"] == "Never"
    assert warmup["resources"] == server["containers"][0]["resources"]
    assert {k: pod[k] for k in ("nodeSelector", "tolerations", "runtimeClassName")} == {
        k: server[k] for k in ("nodeSelector", "tolerations", "runtimeClassName")}
    assert pod["nodeSelector"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    env = {e["name"]: e.get("value") for e in warmup["env"]}
    assert env["PARAKEET_MODEL_ID"] == "nvidia/parakeet-tdt-0.6b-v2" and env["PARAKEET_MODEL_REVISION"] == "main"
    expected = builders.warmup_job(GPU.model_copy(update={"warmup": GPU.warmup.model_copy(
        update={"expected_text": "the train", "max_wer": 0.2})}), NAMES)["spec"]["template"]["spec"]["containers"][0]
    assert expected["args"] == ["warmup", "--expected-text", "the train", "--max-wer", "0.2"]


def _with(spec: ParakeetASRSpec, **changes: Any) -> ParakeetASRSpec:
    return ParakeetASRSpec.model_validate({**spec.model_dump(by_alias=True), **changes})


@pytest.mark.parametrize("changes", [
    {"model": {"id": "nvidia/parakeet-tdt-1.1b"}},
    {"tolerations": []},  # what a user edits when the warm-up pod cannot schedule
    {"nodeSelector": {"pool": "h100"}},
    {"resources": {"limits": {"memory": "64Gi"}}},
    {"settings": {"PARAKEET_MICROBATCH_MAX_BATCH": "32"}},
    {"warmup": {"timeoutSeconds": 7200}},
    {"warmup": {"backoffLimit": 0}},
], ids=lambda c: ",".join(c))
def test_whatever_shapes_the_warmup_job_needs_a_new_job(changes: dict[str, Any]) -> None:
    """A Job's pod cannot be changed: a new shape is a new key, a new Job name."""
    assert builders.warmup_key(_with(GPU, **changes), NAMES) != builders.warmup_key(GPU, NAMES)
    assert builders.warmup_key(GPU, NAMES, retry="2026-12-06T23:00") != builders.warmup_key(GPU, NAMES)


@pytest.mark.parametrize("changes", [{"drainSeconds": 60}, {"pod": {"annotations": {"team": "speech"}}},
                                     {"autoscaling": {"mode": "none"}, "replicas": 3},
                                     {"service": {"wyomingPort": 10300}}], ids=lambda c: ",".join(c))
def test_what_only_the_fleet_uses_needs_no_new_warmup(changes: dict[str, Any]) -> None:
    assert builders.warmup_key(_with(GPU, **changes), NAMES) == builders.warmup_key(GPU, NAMES)


def test_until_a_new_warmup_is_proven_the_fleet_is_left_alone_and_older_jobs_go() -> None:
    other_model = _with(GPU, model={"id": "nvidia/parakeet-tdt-1.1b"})
    old_job = NAMES.warmup_job(builders.warmup_key(GPU, NAMES))
    p = plan(other_model, NAMES, Observed(apis=ALL_APIS, warmup=WarmupState("absent", superseded=(old_job,))))
    assert "Deployment" not in by_kind(p.apply) and by_kind(p.apply)["Job"]["metadata"]["name"] != old_job
    assert ("batch/v1", "Job", old_job) in p.delete
    running = plan(other_model, NAMES, Observed(apis=ALL_APIS, warmup=WarmupState("running")))
    assert "Job" not in by_kind(running.apply)  # never patched: Kubernetes refuses any change to its pod


def _selects(selector: dict[str, str], pod_labels: dict[str, str]) -> bool:
    return selector.items() <= pod_labels.items()


def test_the_services_and_the_budget_select_the_servers_pods_and_not_the_warmups() -> None:
    p = plan(GPU, NAMES, Observed(apis=ALL_APIS, warmup=SUCCEEDED))
    server = by_kind(p.apply)["Deployment"]["spec"]["template"]["metadata"]["labels"]
    warmup = builders.warmup_job(GPU, NAMES)["spec"]["template"]["metadata"]["labels"]
    selectors = [m["spec"]["selector"] for m in p.apply if m["kind"] == "Service"]
    selectors.append(by_kind(p.apply)["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"])
    assert len(selectors) == 3
    assert all(_selects(s, server) and not _selects(s, warmup) for s in selectors)


def test_a_proven_warmup_whose_job_is_gone_still_serves() -> None:
    key = builders.warmup_key(GPU, NAMES)
    remembered = {"key": key, "job": NAMES.warmup_job(key), "model": "demo", "load_seconds": 2.5,
                  "transcript": "the train", "device": "cuda", "rtf": 0.01}
    p = plan(GPU, NAMES, Observed(apis=ALL_APIS, warmup=WarmupState("absent", proven=remembered)))
    assert "Job" not in by_kind(p.apply) and "Deployment" in by_kind(p.apply)
    assert p.status["warmup"] == remembered and condition(p, "WarmedUp")["status"] == "True"
    assert by_kind(p.apply)["Deployment"]["metadata"]["annotations"] == {builders.workload.WARMUP_KEY_ANNOTATION: key}
    assert p.status["lastFailure"] is None  # a failure before this proof is cleared


def test_the_wyoming_port_is_off_by_default_and_served_by_the_pods_and_both_services_when_set() -> None:
    for spec in (DEMO, GPU):
        server = builders.deployment(spec, NAMES, 1)["spec"]["template"]["spec"]["containers"][0]
        assert "PARAKEET_WYOMING_PORT" not in env_of(server)
        assert "wyoming" not in {p["name"] for p in server["ports"]}
        assert all("wyoming" not in {p["name"] for p in s["spec"]["ports"]} for s in builders.services(spec, NAMES))
    spec = _with(DEMO, service={"wyomingPort": 10300})
    deployment = builders.deployment(spec, NAMES, 1)
    server = deployment["spec"]["template"]["spec"]["containers"][0]
    assert env_of(server)["PARAKEET_WYOMING_PORT"] == "10300"
    assert {"name": "wyoming", "containerPort": 10300, "protocol": "TCP"} in server["ports"]
    assert server["readinessProbe"]["grpc"] == {"port": spec.service.grpc_port}  # probes stay on gRPC
    services = builders.services(spec, NAMES)
    assert len(services) == 2
    for service in services:
        ports = {p["name"]: p for p in service["spec"]["ports"]}
        assert ports["wyoming"] == {"name": "wyoming", "port": 10300, "targetPort": "wyoming", "protocol": "TCP"}
    for child in (deployment, *services):
        kubernetes_validate.validate(child, kubernetes_validate.utils.latest_version(), strict=True)


def test_a_proven_model_gets_its_fleet_and_the_status_shows_the_warmup() -> None:
    p = plan(DEMO, NAMES, Observed(apis=frozenset(), warmup=SUCCEEDED))
    kinds = by_kind(p.apply)
    assert set(kinds) == {"PersistentVolumeClaim", "Job", "Deployment", "Service", "PodDisruptionBudget"} - {"Job"}
    assert kinds["Deployment"]["spec"]["replicas"] == 1
    assert condition(p, "WarmedUp")["status"] == "True"
    assert p.status["warmup"]["transcript"] == "the train to the airport"
    assert p.status["endpoints"]["grpc"] == "asr-parakeet-serve.speech.svc:50051"
    assert condition(p, "AutoscalerReady")["reason"] == "Fixed"


def test_a_failed_warmup_degrades_and_deploys_nothing() -> None:
    p = plan(GPU, NAMES, Observed(apis=ALL_APIS, warmup=WarmupState("failed", reason="BackoffLimitExceeded: "
                                                                     "the model said 'x' instead of 'y'")))
    assert "Deployment" not in by_kind(p.apply) and "Job" not in by_kind(p.apply)
    degraded = condition(p, "Degraded")
    assert degraded["status"] == "True" and "BackoffLimitExceeded" in degraded["message"]
    assert p.status["phase"] == "Failed" and "instead of" in p.status["lastFailure"]


@pytest.mark.parametrize(
    ("apis", "autoscaler", "removed"),
    [
        (frozenset({KEDA, CUSTOM_METRICS}), "ScaledObject", "HorizontalPodAutoscaler"),
        (frozenset({CUSTOM_METRICS}), "HorizontalPodAutoscaler", None),
        (frozenset(), None, "HorizontalPodAutoscaler"),
    ],
)
def test_auto_autoscaling_picks_keda_then_hpa_then_none(apis: frozenset[str], autoscaler: str | None,
                                                         removed: str | None) -> None:
    p = plan(GPU, NAMES, Observed(apis=apis, warmup=SUCCEEDED))
    kinds = by_kind(p.apply)
    assert "replicas" not in kinds["Deployment"]["spec"] or autoscaler is None
    for kind in ("ScaledObject", "HorizontalPodAutoscaler"):
        assert (kind in kinds) is (kind == autoscaler)
    assert removed is None or removed in [kind for _, kind, _ in p.delete]
    assert condition(p, "AutoscalerReady")["status"] == "True"


def test_a_service_monitor_only_where_the_prometheus_operator_is() -> None:
    assert "ServiceMonitor" in by_kind(plan(GPU, NAMES, Observed(apis=ALL_APIS, warmup=SUCCEEDED)).apply)
    assert "ServiceMonitor" not in by_kind(plan(GPU, NAMES, Observed(apis=frozenset(), warmup=SUCCEEDED)).apply)


# --- parity with the service chart ------------------------------------------------------------------

CHART_VALUES = {  # the chart's values for the deployment GPU describes
    "image": {"repository": "registry.example.com/parakeet-serve", "tag": "0.1.0",
              "pullPolicy": "IfNotPresent"},
    "imagePullSecrets": [{"name": "registry-credentials"}],
    "model": {"id": "nvidia/parakeet-tdt-0.6b-v2", "precision": "bf16", "aliases": ["whisper-1", "gpt-4o-transcribe"]},
    "autoscaling": {"mode": "keda", "minReplicas": 2, "maxReplicas": 16, "targetActiveStreamsPerPod": 64,
                    "targetQueueWaitP95Seconds": 0.15,
                    "keda": {"prometheusServerAddress": "http://prometheus-operated.monitoring.svc:9090",
                             "fallbackReplicas": 2}},
    "gpu": {"count": 1},
    "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
    "resources": {"requests": {"cpu": "4", "memory": "24Gi"}, "limits": {"memory": "48Gi"}},
    "runtimeClassName": "nvidia", "priorityClassName": "speech-critical",
    "modelCache": {"accessMode": "ReadWriteMany", "storageClass": "shared-nfs", "size": "20Gi"},
    "cacheFill": {"enabled": True},
    "settings": {"PARAKEET_MICROBATCH_MAX_BATCH": "64", "PARAKEET_MAX_QUEUE_WAIT_S": "10"},
    "tls": {"enabled": True, "secretName": "parakeet-en-tls", "clientCASecretName": "parakeet-client-ca"},
    "auth": {"existingSecret": "parakeet-token"},
    "tracing": {"otelCollectorSidecar": {"enabled": True, "exporterEndpoint": "otel-collector.observability.svc:4317"}},
    "drainSeconds": 900,
    "service": {"httpPort": 8000, "wyomingPort": 10300},
}
PARITY_SPEC = GPU.model_copy(update={"model": GPU.model.model_copy(update={
                                         "revision": "", "aliases": ["whisper-1", "gpt-4o-transcribe"]}),
                                     "autoscaling": GPU.autoscaling.model_copy(update={"mode": "keda"}),
                                     "service": GPU.service.model_copy(update={"http_port": 8000,
                                                                               "wyoming_port": 10300})})


@pytest.fixture(scope="module")
def both() -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    chart = render(sets=CHART_VALUES, release=NAMES.name)  # a release named like its chart keeps that name
    operator = plan(PARITY_SPEC, NAMES, Observed(apis=ALL_APIS, warmup=SUCCEEDED)).apply
    by_name = {(m["kind"], m["metadata"]["name"].removeprefix(NAMES.name)): m for m in chart}
    return by_name, {(m["kind"], m["metadata"]["name"].removeprefix(NAMES.name)): m for m in operator}


def _pod(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]



def test_the_server_container_equals_the_charts(both: Any) -> None:
    chart, operator = (_pod(side[("Deployment", "")])["containers"][0] for side in both)
    assert env_of(operator) == env_of(chart)
    for key in ("image", "args", "ports", "startupProbe", "readinessProbe", "livenessProbe", "lifecycle",
                "resources", "securityContext", "volumeMounts"):
        assert operator[key] == chart[key], key
    assert chart["startupProbe"]["failureThreshold"] == math.ceil(PARITY_SPEC.startup_budget_seconds / 10)


def test_the_pod_and_rollout_equal_the_charts(both: Any) -> None:
    chart, operator = (side[("Deployment", "")] for side in both)
    assert operator["spec"]["strategy"] == chart["spec"]["strategy"]
    chart_pod, operator_pod = _pod(chart), _pod(operator)
    for key in ("terminationGracePeriodSeconds", "automountServiceAccountToken", "securityContext", "nodeSelector",
                "runtimeClassName", "priorityClassName", "imagePullSecrets", "initContainers"):
        assert operator_pod.get(key) == chart_pod.get(key), key
    assert [v["name"] for v in operator_pod["volumes"]] == [v["name"] for v in chart_pod["volumes"]]


@pytest.mark.parametrize("kind", ["ScaledObject", "PodDisruptionBudget", "Service", "ConfigMap"])
def test_the_other_children_equal_the_charts(both: Any, kind: str) -> None:
    chart, operator = both
    suffix = "-otel-collector" if kind == "ConfigMap" else ""
    chart_child, operator_child = chart[(kind, suffix)], operator[(kind, suffix)]
    if kind == "ConfigMap":
        assert yaml.safe_load(operator_child["data"]["config.yaml"]) == yaml.safe_load(
            chart_child["data"]["config.yaml"])
    else:
        assert operator_child["spec"] == chart_child["spec"]
    assert operator[("Service", "-headless")]["spec"] == chart[("Service", "-headless")]["spec"]
