"""The service chart, rendered by a real `helm`: lint, Kubernetes schemas, and the behaviour each value
promises (rollouts without a spare GPU, probes that wait for the model, drain, cache, TLS, autoscaling,
observability, the `helm test` Pod)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.cert_manager.v1 import Certificate
from cloudcoil.models.keda.v1alpha1 import ScaledObject
from cloudcoil.models.prometheus_operator.v1 import PrometheusRule, ServiceMonitor

from parakeet_serve.settings import Settings, env_name, load_settings
from tests.charts.render import (
    CHART,
    CI_VALUES,
    FULLNAME,
    NAMESPACE,
    PROMETHEUS_OPERATOR,
    ROOT,
    env_of,
    helm,
    kinds,
    load_yaml,
    one,
    render,
    render_error,
    server_container,
)

DEFAULTS = load_yaml(CHART / "values.yaml")
CRD_MODELS = {"ScaledObject": ScaledObject, "ServiceMonitor": ServiceMonitor, "PrometheusRule": PrometheusRule,
              "Certificate": Certificate}
CI = {path.name.removesuffix("-values.yaml"): path for path in CI_VALUES}
MODEL_SETTINGS = ("PARAKEET_MODEL_ID", "PARAKEET_DECODER", "PARAKEET_DEVICE", "PARAKEET_PRECISION",
                  "PARAKEET_LANGUAGE_CODE", "HF_HOME")


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Every pod spec the chart renders: the Deployment's, the Job's and the test Pod's."""
    specs = [(d["kind"], d["spec"]) for d in docs if d["kind"] == "Pod"]
    specs += [(d["kind"], d["spec"]["template"]["spec"]) for d in docs if d["kind"] in ("Deployment", "Job")]
    return specs


def test_the_ci_values_files_cover_the_deployments_users_run() -> None:
    assert set(CI) >= {"cpu-demo", "gpu-production", "keda", "hpa", "observability"}


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=["defaults", *CI])
def test_chart_lints_strictly(values: Path | None) -> None:
    result = helm("lint", "--strict", str(CHART), *(["-f", str(values)] if values else []))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=["defaults", *CI])
def test_every_rendered_object_validates_against_its_schema(values: Path | None) -> None:
    """Kubernetes' own kinds against the current Kubernetes' schemas (strict: no unknown fields); the
    Prometheus operator's, KEDA's and cert-manager's kinds against models generated from their published
    CRD schemas, where an object that does not survive a round trip unchanged has unknown fields."""
    docs = render(values, api_versions=PROMETHEUS_OPERATOR)
    version = kubernetes_validate.utils.latest_version()
    for doc in docs:
        if doc["kind"] in CRD_MODELS:
            model = CRD_MODELS[doc["kind"]].model_validate(doc)
            assert model.model_dump(by_alias=True, exclude_unset=True, mode="json") == doc, doc["kind"]
        else:
            kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize(
    ("sets", "named"),
    [
        ({"rollout": {"maxSurge": 0, "maxUnavailable": 0}}, "/rollout"),
        ({"rollout": {"maxSurge": "0%", "maxUnavailable": 0}}, "/rollout"),
        ({"replicas": -1}, "/replicas"),
        ({"autoscaling": {"mode": "vpa"}}, "/autoscaling/mode"),
        ({"gpu": {"count": 1.5}}, "/gpu/count"),
        ({"gpu": {"count": "one"}}, "/gpu/count"),
        ({"autoscaling": {"minReplicas": 0}}, "/autoscaling/minReplicas"),
        ({"modelCache": {"accessMode": "ReadOnlyMany"}}, "/modelCache/accessMode"),
        ({"settings": {"MODEL_ID": "x"}}, "invalid propertyName 'MODEL_ID'"),
        ({"tls": {"enabled": True}}, "tls.secretName"),
        ({"tls": {"enabled": True, "certManager": {"enabled": True}}}, "tls.certManager.issuerRef.name"),
        ({"cacheFill": {"enabled": True}, "modelCache": {"enabled": False}}, "modelCache.enabled"),
        ({"autoscaling": {"mode": "keda", "minReplicas": 5, "maxReplicas": 2}}, "autoscaling.minReplicas"),
        ({"service": {"wyomingPort": 70000}}, "/service/wyomingPort"),
    ],
)
def test_invalid_values_fail_with_a_message_naming_the_value(sets: dict[str, Any], named: str) -> None:
    assert named in render_error(sets)


def test_a_rollout_never_needs_a_spare_gpu() -> None:
    docs = render()
    rolling = one(docs, "Deployment")["spec"]["strategy"]["rollingUpdate"]
    assert rolling == {"maxSurge": 0, "maxUnavailable": 1}
    limits = server_container(docs)["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 1


@pytest.mark.parametrize(("budget", "period"), [(1800, 10), (95, 10), (300, 7)])
def test_the_startup_probe_allows_the_whole_budget_and_liveness_waits_for_it(budget: int, period: int) -> None:
    server = server_container(render(sets={"startupBudgetSeconds": budget, "probes": {"periodSeconds": period}}))
    startup = server["startupProbe"]
    assert startup["periodSeconds"] == period
    assert startup["failureThreshold"] == math.ceil(budget / period)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):  # native gRPC health, on the gRPC port
        assert server[probe]["grpc"] == {"port": DEFAULTS["service"]["grpcPort"]}


def test_termination_lets_endpoints_update_then_drains_streams_for_drain_seconds() -> None:
    docs = render(sets={"drainSeconds": 1200, "preStopSeconds": 15})
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    server = pod["containers"][0]
    assert server["lifecycle"]["preStop"] == {"sleep": {"seconds": 15}}
    env = env_of(server)
    assert env["PARAKEET_SHUTDOWN_GRACE_S"] == "1200"
    assert pod["terminationGracePeriodSeconds"] > 15 + 1200  # the finals still go out after the drain
    assert env["PARAKEET_MAX_CONNECTION_AGE_S"] == str(DEFAULTS["maxConnectionAgeSeconds"])


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=["defaults", *CI])
def test_every_pod_runs_restricted_without_a_service_account_token(values: Path | None) -> None:
    for kind, spec in pod_specs(render(values)):
        assert spec["automountServiceAccountToken"] is False, kind
        assert spec["securityContext"]["runAsNonRoot"] is True, kind
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, kind
        for container in spec["containers"] + spec.get("initContainers", []):
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, (kind, container["name"])
            assert security["allowPrivilegeEscalation"] is False, (kind, container["name"])
            assert security["capabilities"] == {"drop": ["ALL"]}, (kind, container["name"])
        mounts = {m["mountPath"] for m in spec["containers"][0].get("volumeMounts", [])}
        assert "/tmp" in mounts, kind  # the only writable place besides the model cache


def test_the_cpu_demo_runs_the_demo_model_without_a_gpu_or_a_cache() -> None:
    docs = render(CI["cpu-demo"])
    server = server_container(docs)
    env = env_of(server)
    assert env["PARAKEET_MODEL_ID"] == "demo" and env["PARAKEET_DEVICE"] == "cpu"
    assert env["HF_HOME"] == "/tmp/huggingface"  # without a cache volume, only /tmp is writable
    assert not any("gpu" in key for key in server["resources"]["limits"])
    assert "PersistentVolumeClaim" not in kinds(docs)
    assert "tolerations" not in one(docs, "Deployment")["spec"]["template"]["spec"]


def test_the_model_cache_claim_is_kept_or_an_existing_one_is_used() -> None:
    docs = render()
    claim = one(docs, "PersistentVolumeClaim", f"{FULLNAME}-model-cache")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert "annotations" not in one(render(sets={"modelCache": {"keep": False}}), "PersistentVolumeClaim",
                                    f"{FULLNAME}-model-cache")["metadata"]
    existing = render(CI["hpa"])
    assert "PersistentVolumeClaim" not in kinds(existing)
    volumes = one(existing, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "model-cache", "persistentVolumeClaim": {"claimName": "models-shared"}} in volumes
    assert env_of(server_container(existing))["HF_HOME"] == "/models/huggingface"


def test_the_cache_fill_hook_warms_the_same_model_into_the_claim_before_the_rollout() -> None:
    docs = render(CI["gpu-production"])
    job = one(docs, "Job", f"{FULLNAME}-cache-fill")
    claim = one(docs, "PersistentVolumeClaim", f"{FULLNAME}-model-cache")
    job_hook, claim_hook = job["metadata"]["annotations"], claim["metadata"]["annotations"]
    assert job_hook["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert claim_hook["helm.sh/hook"] == "pre-install"
    assert int(claim_hook["helm.sh/hook-weight"]) < int(job_hook["helm.sh/hook-weight"])  # the claim exists first
    assert claim_hook["helm.sh/resource-policy"] == "keep"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    # the Service and the budget select the server's pods, not this one (it serves nothing)
    pod_labels = job["spec"]["template"]["metadata"]["labels"].items()
    server_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"].items()
    for selector in (one(docs, "Service")["spec"]["selector"],
                     one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= server_labels and not selector.items() <= pod_labels

    warmup, server = job["spec"]["template"]["spec"]["containers"][0], server_container(docs)
    assert warmup["args"] == ["warmup"]
    assert warmup["image"] == server["image"]
    job_env, server_env = env_of(warmup), env_of(server)
    assert {k: job_env.get(k) for k in MODEL_SETTINGS} == {k: server_env.get(k) for k in MODEL_SETTINGS}
    assert job_env["PARAKEET_HUB_OFFLINE"] == "false" and server_env["PARAKEET_HUB_OFFLINE"] == "true"
    assert warmup["resources"] == server["resources"]  # the model is proven on the hardware it serves on
    job_claims = [v for v in job["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert job_claims == [{"name": "model-cache", "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}}]
    assert job["spec"]["template"]["spec"]["runtimeClassName"] == "nvidia"


def test_tls_moves_probes_to_the_plaintext_health_port_and_mounts_the_rotating_secret() -> None:
    docs = render(CI["gpu-production"])
    server = server_container(docs)
    env = env_of(server)
    health_port = DEFAULTS["tls"]["healthPort"]
    assert env["PARAKEET_GRPC_TLS"] == "true" and env["PARAKEET_HEALTH_PORT"] == str(health_port)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["grpc"] == {"port": health_port}
    assert env["PARAKEET_GRPC_CLIENT_CA"] == "/etc/parakeet/client-ca/ca.crt"
    assert env["PARAKEET_AUTH_TOKEN"] == {"secretKeyRef": {"name": "parakeet-token", "key": "token"}}
    certificate = one(docs, "Certificate")
    volumes = {v["name"]: v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == certificate["spec"]["secretName"]
    assert f"{FULLNAME}.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    mounts = {m["name"]: m for m in server["volumeMounts"]}
    assert "subPath" not in mounts["tls"]  # a subPath mount would never see the rotated files


def test_services_carry_grpc_with_its_app_protocol_and_a_headless_twin_for_streams() -> None:
    docs = render()
    regular, headless = one(docs, "Service"), one(docs, "Service", f"{FULLNAME}-headless")
    assert headless["spec"]["clusterIP"] == "None"
    for service in (regular, headless):
        ports = {p["name"]: p for p in service["spec"]["ports"]}
        assert ports["grpc"]["appProtocol"] == "grpc" and ports["grpc"]["port"] == 50051
        assert ports["metrics"]["port"] == 9400
    assert "Service" not in {d["kind"] for d in render(sets={"service": {"headless": False}})
                             if d["metadata"]["name"].endswith("-headless")}


def test_prometheus_operator_objects_exist_only_where_its_api_is_served() -> None:
    assert not kinds(render()) & {"ServiceMonitor", "PrometheusRule"}
    docs = render(api_versions=PROMETHEUS_OPERATOR)
    monitor = one(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    headless = one(docs, "Service", f"{FULLNAME}-headless")["metadata"]["labels"]
    excluded = monitor["spec"]["selector"]["matchExpressions"][0]
    assert excluded["operator"] == "DoesNotExist" and excluded["key"] in headless  # each pod is scraped once
    rules = one(docs, "PrometheusRule")["spec"]
    assert rules == load_yaml(ROOT / "dashboards" / "prometheus-rules.yaml")


def test_dashboards_are_configmaps_for_grafanas_sidecar() -> None:
    maps = [d for d in render(CI["observability"]) if d["kind"] == "ConfigMap" and "dashboard" in d["metadata"]["name"]]
    sources = {p.name: json.loads(p.read_text()) for p in (ROOT / "dashboards").glob("*.json")}
    assert len(maps) == len(sources) == 2
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((name, text),) = config_map["data"].items()
        assert json.loads(text) == sources[name]


@pytest.mark.parametrize("name", ["prometheus-rules.yaml", "parakeet-overview.json", "parakeet-slo.json"])
def test_the_charts_copies_of_rules_and_dashboards_equal_dashboards(name: str) -> None:
    """Helm reads only files inside a chart; dashboards/ stays the source. To update the copies:
    cp dashboards/*.json dashboards/prometheus-rules.yaml charts/parakeet-serve/files/"""
    assert (CHART / "files" / name).read_bytes() == (ROOT / "dashboards" / name).read_bytes()


def test_keda_scales_on_streams_and_queue_wait_never_to_zero_and_slowly_in() -> None:
    docs = render(CI["keda"])
    assert "replicas" not in one(docs, "Deployment")["spec"]  # the autoscaler owns it
    spec = one(docs, "ScaledObject")["spec"]
    assert spec["scaleTargetRef"]["name"] == FULLNAME
    assert spec["minReplicaCount"] == 2 and spec["maxReplicaCount"] == 12
    assert spec["fallback"]["replicas"] >= 1
    scale_down = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    assert scale_down["stabilizationWindowSeconds"] == DEFAULTS["autoscaling"]["scaleDownStabilizationSeconds"]
    assert scale_down["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": DEFAULTS["drainSeconds"]}]
    triggers = {t["name"]: t for t in spec["triggers"]}
    assert triggers["active-streams"]["metadata"]["threshold"] == "48"
    assert triggers["queue-wait-p95"]["metadata"]["threshold"] == "0.15"
    for trigger in triggers.values():
        assert trigger["metricType"] == "AverageValue"  # the metric type KEDA's fallback works with
        assert f'namespace="{NAMESPACE}"' in trigger["metadata"]["query"]
        assert f'pod=~"{FULLNAME}-[a-z0-9]+-[a-z0-9]+"' in trigger["metadata"]["query"]


def test_hpa_scales_on_pods_metrics_and_slowly_in() -> None:
    docs = render(CI["hpa"])
    spec = one(docs, "HorizontalPodAutoscaler")["spec"]
    assert spec["minReplicas"] == 1 and spec["maxReplicas"] == 4
    assert {m["pods"]["metric"]["name"] for m in spec["metrics"]} == {"parakeet_active_streams",
                                                                      "parakeet_queue_wait_p95_seconds"}
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 1200
    assert "replicas" not in one(docs, "Deployment")["spec"]
    assert one(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == "50%"


def test_the_otel_collector_is_a_native_sidecar_the_server_sends_to() -> None:
    docs = render(CI["observability"])
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    (sidecar,) = pod["initContainers"]
    assert sidecar["restartPolicy"] == "Always"  # started before the server, stopped after its drain
    assert env_of(pod["containers"][0])["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4317"
    config = one(docs, "ConfigMap", f"{FULLNAME}-otel-collector")["data"]["config.yaml"]
    collector = yaml.safe_load(config)
    assert collector["exporters"]["otlp"]["endpoint"] == "otel-collector.observability.svc:4317"
    assert collector["service"]["pipelines"]["traces"]["receivers"] == ["otlp"]


def test_helm_test_checks_health_and_transcribes_the_sample_through_the_service() -> None:
    plain = one(render(), "Pod", f"{FULLNAME}-test-transcribe")
    assert plain["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert plain["spec"]["containers"][0]["args"] == ["transcribe", "--check", "--server", f"{FULLNAME}:50051"]
    secured = one(render(CI["gpu-production"]), "Pod", f"{FULLNAME}-test-transcribe")["spec"]["containers"][0]
    args = secured["args"]
    assert args[args.index("--ca") + 1] == "/etc/parakeet/tls/ca.crt"
    assert args[args.index("--cert") + 1] == "/etc/parakeet/client/tls.crt"
    assert args[args.index("--token") + 1] == "$(PARAKEET_TEST_TOKEN)"


def schema_leaves(schema: dict[str, Any], path: str = "") -> list[str]:
    """Dotted paths of the values the schema describes (objects it closes are walked into)."""
    if schema.get("additionalProperties") is False and "properties" in schema:
        return [leaf for key, sub in schema["properties"].items() if key != "global"
                for leaf in schema_leaves(sub, f"{path}.{key}".lstrip("."))]
    return [path]


def test_every_value_has_a_default_and_a_line_in_the_chart_readme() -> None:
    leaves = schema_leaves(json.loads((CHART / "values.schema.json").read_text()))
    readme = (CHART / "README.md").read_text()
    assert len(leaves) > 80
    for leaf in leaves:
        node: Any = DEFAULTS
        for key in leaf.split("."):
            assert isinstance(node, dict) and key in node, f"{leaf} has no default in values.yaml"
            node = node[key]
        assert f"| `{leaf}` |" in readme, f"{leaf} is not in the chart README"


SETTING_NAMES = {env_name(field) for field in Settings.model_fields} | {"PORT", "HF_HOME"}


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=["defaults", *CI])
def test_the_chart_sets_only_real_settings_and_valid_values(values: Path | None,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The chart and the settings object cannot drift apart: each variable the server or the warm-up Job
    gets names a setting, and together they pass the settings' own validation (TLS files aside)."""
    docs = render(values)
    containers = [server_container(docs)] + [
        d["spec"]["template"]["spec"]["containers"][0] for d in docs if d["kind"] == "Job"]
    for container in containers:
        env = env_of(container)
        assert set(env) <= SETTING_NAMES, set(env) - SETTING_NAMES
        for name, value in env.items():
            if isinstance(value, str) and name not in {"HF_HOME", "PARAKEET_GRPC_TLS", "PARAKEET_GRPC_CLIENT_CA"}:
                monkeypatch.setenv(name, value)
        load_settings()


def test_the_http_api_is_off_by_default_and_served_on_its_port_when_set() -> None:
    assert "PARAKEET_HTTP_PORT" not in env_of(server_container(render()))
    docs = render(sets={"service": {"httpPort": 8000}})
    assert env_of(server_container(docs))["PARAKEET_HTTP_PORT"] == "8000"
    ports = {p["name"]: p for p in one(docs, "Service")["spec"]["ports"]}
    assert ports["http"] == {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP",
                             "appProtocol": "http"}


def test_the_wyoming_port_is_off_by_default_and_served_on_its_port_when_set() -> None:
    """Home Assistant reaches the pods through both Services, and a NetworkPolicy admits it as it admits gRPC."""
    defaults = render(sets={"networkPolicy": {"enabled": True}})
    assert "PARAKEET_WYOMING_PORT" not in env_of(server_container(defaults))
    assert "wyoming" not in {p["name"] for p in server_container(defaults)["ports"]}
    assert "wyoming" not in {p["name"] for p in one(defaults, "Service")["spec"]["ports"]}
    assert "wyoming" not in json.dumps(one(defaults, "NetworkPolicy")["spec"])
    grpc_from = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "home-assistant"}}}]
    docs = render(sets={"service": {"wyomingPort": 10300}, "networkPolicy": {"enabled": True, "grpcFrom": grpc_from}})
    server = server_container(docs)
    assert env_of(server)["PARAKEET_WYOMING_PORT"] == "10300"
    assert {"name": "wyoming", "containerPort": 10300, "protocol": "TCP"} in server["ports"]
    for service in (one(docs, "Service"), one(docs, "Service", f"{FULLNAME}-headless")):
        ports = {p["name"]: p for p in service["spec"]["ports"]}
        assert ports["wyoming"] == {"name": "wyoming", "port": 10300, "targetPort": "wyoming", "protocol": "TCP"}
    rules = one(docs, "NetworkPolicy")["spec"]["ingress"]
    assert {"ports": [{"port": "wyoming", "protocol": "TCP"}], "from": grpc_from} in rules
    assert server["readinessProbe"] == server_container(defaults)["readinessProbe"]  # probes stay on gRPC
    for doc in docs:
        if doc["kind"] in ("Deployment", "Service", "NetworkPolicy"):
            kubernetes_validate.validate(doc, kubernetes_validate.utils.latest_version(), strict=True)
